"""Speech emotion recognition (SER) from a local checkpoint: what emotion a rendering sounds like.

The slot loads a transformers audio-classification directory (``config.json`` with ``id2label``,
``model.safetensors`` or ``pytorch_model.bin``, ``preprocessor_config.json``): the format of the
public SER checkpoints fine-tuned from wav2vec 2.0 / HuBERT / WavLM (e.g. the SUPERB emotion
recognition models, 4 IEMOCAP classes ``neu hap ang sad``). Loading is strict: a missing,
unexpected or mis-shaped weight is an error naming it, never a silently random layer. Nothing is
downloaded (``local_files_only``).

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


class EmotionRecognizer:
    """A transformers audio-classification checkpoint from a local directory (CPU or GPU)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

        path = Path(path)
        name = f"SER model {path}"
        if not path.is_dir():
            raise AudioError(name, "directory does not exist (data.filters.ser_model_path)")
        if not (path / "config.json").is_file():
            raise AudioError(name, "no config.json: not a transformers model directory")
        if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
            raise AudioError(name, "no weights (model.safetensors or pytorch_model.bin)")
        if not (path / "preprocessor_config.json").is_file():
            raise AudioError(name, "no preprocessor_config.json (the feature extractor)")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        if not id2label or all(v.startswith("LABEL_") for v in id2label.values()):
            raise AudioError(name, "config.json has no id2label names: cannot tell emotions")
        if not any(corpus_emotion(v) for v in id2label.values()):
            raise AudioError(
                name, f"none of its labels {sorted(id2label.values())} names a corpus emotion"
            )
        model, info = AutoModelForAudioClassification.from_pretrained(
            path, local_files_only=True, output_loading_info=True
        )
        problems = [
            f"{kind}: {', '.join(sorted(str(x) for x in info.get(kind) or ())[:10])}"
            for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
            if info.get(kind)
        ]
        if problems:
            raise AudioError(name, f"weights do not match its config ({'; '.join(problems)})")
        self.extractor = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        self.sample_rate = int(getattr(self.extractor, "sampling_rate", 16000))
        self.model = model.to(device).eval()
        self.device = device
        self.id2label = id2label
        self._torch = torch
        self._lock = threading.Lock()

    def recognize(self, wave: np.ndarray, sr: int) -> Recognition:
        """The most probable label of one utterance (any rate, mono float)."""
        arr = resample(mono_wave(wave, "SER input", finite=True), sr, self.sample_rate)
        feats = self.extractor(arr, sampling_rate=self.sample_rate, return_tensors="pt")
        feats = {k: v.to(self.device) for k, v in feats.items()}
        with self._lock, self._torch.no_grad():
            logits = self.model(**feats).logits[0].float()
        probs = self._torch.softmax(logits, dim=-1).cpu().numpy()
        k = int(np.argmax(probs))
        label = self.id2label[k]
        return Recognition(label, corpus_emotion(label), round(float(probs[k]), 4))
