"""Speech emotion recognition (SER) from a local checkpoint: what emotion a rendering sounds like.

One loader serves the corpus filters (``data.filters.ser_model_path``) and the eval
(``eval.ser_model_path``). It takes a directory in either of two formats, told apart by its files:

- **transformers** audio classification: ``config.json`` with ``id2label``, ``model.safetensors``
  or ``pytorch_model.bin``, ``preprocessor_config.json``. The format of the public SER
  checkpoints fine-tuned from wav2vec 2.0 / HuBERT / WavLM (e.g. the SUPERB emotion recognition
  models, 4 IEMOCAP classes ``neu hap ang sad``).
- **FunASR emotion2vec**: ``config.yaml`` with ``model: Emotion2vec``, ``model.pt``,
  ``tokens.txt`` (emotion2vec_plus_base/large, emotion2vec_base_finetuned; labels such as
  ``生气/angry``); the network is ``opens2s.audio.emotion2vec``.

Loading is strict in both: a missing, unexpected or mis-shaped weight is an error naming it, never
a silently random layer. Nothing is downloaded (``local_files_only``).

Labels map to the corpus emotions (``tts.EMOTIONS``) by name, by IEMOCAP's 3-letter codes and by
emotion2vec's bilingual ``中文/english`` style; a label that maps to none (``other``, ``fru``,
``<unk>``) leaves the verdict open.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opens2s.audio.io import AudioError, mono_wave, resample

_LABELS = {
    "neutral": "neutral",
    "neu": "neutral",
    "calm": "neutral",
    "happy": "happy",
    "hap": "happy",
    "happiness": "happy",
    "joy": "happy",
    "exc": "happy",
    "excited": "happy",
    "sad": "sad",
    "sadness": "sad",
    "angry": "angry",
    "ang": "angry",
    "anger": "angry",
    "fearful": "fearful",
    "fea": "fearful",
    "fear": "fearful",
    "surprised": "surprised",
    "sur": "surprised",
    "surprise": "surprised",
    "disgusted": "disgusted",
    "dis": "disgusted",
    "disgust": "disgusted",
}


def corpus_emotion(label: str) -> str | None:
    """The corpus emotion a model label names (``"ang"``, ``"生气/angry"``), or None."""
    key = str(label).strip().lower()
    if "/" in key:  # emotion2vec: "生气/angry"
        key = key.rsplit("/", 1)[1]
    return _LABELS.get(key)


@dataclass(frozen=True)
class Recognition:
    """The recognised emotion of one utterance."""

    label: str
    """The model's own label."""
    emotion: str | None
    """That label as a corpus emotion (None: the label names none of them)."""
    probability: float


class SERFileMissing(AudioError, FileNotFoundError):
    """An SER directory without a file its format needs (or no such directory)."""


FORMATS = (
    "a transformers audio-classification directory (config.json with id2label, "
    "model.safetensors or pytorch_model.bin, preprocessor_config.json) or a FunASR emotion2vec "
    "directory (config.yaml with model: Emotion2vec, model.pt, tokens.txt)"
)


def _check_labels(name: str, labels: list[str]) -> None:
    if not any(corpus_emotion(v) for v in labels):
        raise AudioError(name, f"none of its labels {sorted(labels)} names a corpus emotion")


class EmotionRecognizer:
    """An SER checkpoint from a local directory in either format (CPU or GPU).

    ``setting`` names the config key the path came from, for error messages."""

    def __init__(
        self, path: str | Path, device: str = "cpu", setting: str = "data.filters.ser_model_path"
    ) -> None:
        path = Path(path)
        name = f"SER model ({setting}) {path}"
        if not path.is_dir():
            raise SERFileMissing(name, f"directory does not exist (expected {FORMATS})")
        self.device = device
        self._lock = threading.Lock()
        if (path / "config.yaml").is_file():
            self.format = "emotion2vec"
            self._load_emotion2vec(path, name)
        elif (path / "config.json").is_file():
            self.format = "transformers"
            self._load_transformers(path, name)
        else:
            raise SERFileMissing(name, f"neither config.yaml nor config.json: expected {FORMATS}")

    def _load_emotion2vec(self, path: Path, name: str) -> None:
        from opens2s.audio.emotion2vec import SAMPLE_RATE, load_emotion2vec

        for file, what in (("model.pt", "the weights"), ("tokens.txt", "the labels")):
            if not (path / file).is_file():
                raise SERFileMissing(
                    name,
                    f"no {file} ({what}): a FunASR emotion2vec directory needs config.yaml "
                    "(model: Emotion2vec), model.pt and tokens.txt",
                )
        self.model = load_emotion2vec(path, self.device, source=name)
        _check_labels(name, self.model.labels)
        self.id2label = dict(enumerate(self.model.labels))
        self.sample_rate = SAMPLE_RATE

    def _load_transformers(self, path: Path, name: str) -> None:
        import torch
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

        needs = "a transformers directory needs config.json, weights and preprocessor_config.json"
        if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
            raise SERFileMissing(
                name, f"no weights (model.safetensors or pytorch_model.bin): {needs}"
            )
        if not (path / "preprocessor_config.json").is_file():
            raise SERFileMissing(
                name, f"no preprocessor_config.json (the feature extractor): {needs}"
            )
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        if not id2label or all(v.startswith("LABEL_") for v in id2label.values()):
            raise AudioError(name, "config.json has no id2label names: cannot tell emotions")
        _check_labels(name, list(id2label.values()))
        try:
            model, info = AutoModelForAudioClassification.from_pretrained(
                path, local_files_only=True, output_loading_info=True, dtype=torch.float32
            )
        except (OSError, RuntimeError, ValueError) as e:  # mis-shaped weights, unreadable files
            raise AudioError(
                name,
                "weights do not match its config or cannot be read: "
                f"{str(e).splitlines()[0][:300]}",
            ) from e
        problems = [
            f"{kind}: {', '.join(sorted(str(x) for x in info.get(kind) or ())[:10])}"
            for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
            if info.get(kind)
        ]
        if problems:
            raise AudioError(name, f"weights do not match its config ({'; '.join(problems)})")
        self.extractor = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        self.sample_rate = int(getattr(self.extractor, "sampling_rate", 16000))
        self.model = model.to(self.device).eval()
        self.id2label = id2label

    def probabilities(self, wave: np.ndarray, sr: int) -> tuple[np.ndarray, list[str]]:
        """Every label's probability for one utterance (any rate, mono float)."""
        import torch

        arr = resample(mono_wave(wave, "SER input", finite=True), sr, self.sample_rate)
        with self._lock, torch.no_grad():
            if self.format == "emotion2vec":
                return self.model.recognize(arr)
            feats = self.extractor(arr, sampling_rate=self.sample_rate, return_tensors="pt")
            logits = self.model(**{k: v.to(self.device) for k, v in feats.items()}).logits[0]
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return probs, [self.id2label[i] for i in range(len(probs))]

    def recognize(self, wave: np.ndarray, sr: int) -> Recognition:
        """The most probable label of one utterance (any rate, mono float)."""
        probs, labels = self.probabilities(wave, sr)
        k = int(np.argmax(probs))
        return Recognition(labels[k], corpus_emotion(labels[k]), round(float(probs[k]), 4))
