"""The released OpenS2S model directory, read and written: one layout for released and exported
models, so one loader serves both and an export is a valid released-style directory.

```
<dir>/config.json                OpenS2SConfig ("omnispeech": three nested HF configs + adapter)
<dir>/model.safetensors          or model-0000i-of-0000n.safetensors + model.safetensors.index.json
<dir>/tokenizer.json, tokenizer_config.json   the text tokenizer with OpenS2S's special tokens
                                 and its chat template (Qwen3's in the release)
<dir>/generation_config.json     text generation settings (eos ids)
<dir>/tts/                       the TTS LM's tokenizer: unit N is the added token <|audio_N|>,
                                 its id is units_bias + N; eos_token ends speech (appended to
                                 every unit sequence in training) + generation_config.json
<dir>/audio/preprocessor_config.json   WhisperFeatureExtractor (128 mels, 30 s chunks)
```

Where each fact comes from: docs/model.md ("The released directory layout"). Loading is strict:
a missing or unexpected tensor is a ``ValueError`` that names it; nothing is initialised silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from opens2s.model.configuration import OpenS2SConfig
from opens2s.model.modeling import LEGACY_WEIGHT_NAMES, OpenS2SModel
from opens2s.model.tokenizer import AUDIO_TOKEN, IM_END, PAD_TOKEN, load_tokenizer

TTS_DIR = "tts"
AUDIO_DIR = "audio"
GENERATION_CONFIG = "generation_config.json"
FEATURE_EXTRACTOR_CONFIG = "preprocessor_config.json"
UNIT_TOKEN = "<|audio_{}|>"
# The TTS tokenizer an export writes names its end-of-speech and pad tokens as Qwen's do.
TTS_EOS_TOKEN = IM_END
TTS_PAD_TOKEN = PAD_TOKEN
MAX_SHARD_SIZE = "5GB"
_UNIT_RE = re.compile(r"^<\|audio_(\d+)\|>$")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class UnitVocabulary:
    """Where the speech units sit among the TTS LM's ids: unit N is id ``bias + N`` for
    ``N < size``; ``eos_id`` ends each training sequence; generating any of ``stop_ids`` ends
    speech; ``pad_id`` pads unit batches."""

    bias: int
    size: int
    eos_id: int
    stop_ids: tuple[int, ...]
    pad_id: int

    @classmethod
    def from_config(cls, config: OpenS2SConfig) -> UnitVocabulary:
        """The vocabulary a config describes (ours default to units 0..N-1, end of speech N)."""
        stops = tuple(config.unit_stop_ids)
        eos = config.tts_eos_token_id
        pad = config.tts_pad_id if config.tts_pad_id is not None else eos + 1
        if pad >= config.tts_lm_config.vocab_size:
            pad = eos
        return cls(config.units_bias, config.unit_vocab_size, eos, stops, pad)

    @classmethod
    def from_tts_dir(cls, path: str | Path) -> UnitVocabulary:
        """Read a ``tts/`` folder: the ids of ``<|audio_N|>`` (contiguous from ``<|audio_0|>``),
        the tokenizer's eos and the eos ids of its ``generation_config.json``."""
        from transformers import AutoTokenizer

        path = Path(path)
        if (
            not (path / "tokenizer.json").is_file()
            and not (path / "tokenizer_config.json").is_file()
        ):
            raise FileNotFoundError(
                f"{path} has no tokenizer.json / tokenizer_config.json: a released model's tts/ "
                "folder holds the TTS LM tokenizer (<|audio_N|> tokens) and generation_config.json"
            )
        tok = AutoTokenizer.from_pretrained(str(path))
        units: dict[int, int] = {}
        for token, tid in tok.get_vocab().items():
            m = _UNIT_RE.match(token)
            if m:
                units[int(m.group(1))] = tid
        if 0 not in units:
            raise ValueError(f"tokenizer at {path} has no <|audio_0|> token: not a TTS tokenizer")
        bias, size = units[0], len(units)
        wrong = [n for n in range(size) if units.get(n) != bias + n]
        if wrong:
            n = wrong[0]
            raise ValueError(
                f"tokenizer at {path}: <|audio_{n}|> has id {units.get(n)}, expected "
                f"{bias + n} (units must be contiguous ids from <|audio_0|> = {bias})"
            )
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer at {path} has no eos_token: nothing would end speech")
        eos = int(tok.eos_token_id)
        gen = _read_json(path / GENERATION_CONFIG) if (path / GENERATION_CONFIG).is_file() else {}
        stops = [eos, *_ids(gen.get("eos_token_id"))]
        pad = gen.get("pad_token_id", tok.pad_token_id)
        return cls(bias, size, eos, tuple(dict.fromkeys(stops)), int(eos if pad is None else pad))

    def config_fields(self) -> dict[str, Any]:
        """This vocabulary as OpenS2SConfig fields (what the rest of the code reads)."""
        return {
            "units_bias": self.bias,
            "unit_vocab_size": self.size,
            "tts_eos_id": self.eos_id,
            "tts_stop_ids": [i for i in self.stop_ids if i != self.eos_id] or None,
            "tts_pad_id": self.pad_id,
        }

    def token_ids(self, units: list[int] | tuple[int, ...]) -> list[int]:
        """TTS LM ids of unit numbers N (``<|audio_N|>``)."""
        return [self.bias + int(u) for u in units]

    def write_tts_dir(self, path: str | Path, tts_vocab_size: int) -> None:
        """Write a ``tts/`` folder with these ids: a word-level tokenizer whose added tokens
        ``<|audio_N|>`` sit at ``bias + N`` and whose eos / pad are this vocabulary's, plus a
        ``generation_config.json`` with the stop ids (what the released folder's users read)."""
        from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

        vocab = {UNIT_TOKEN.format(n): self.bias + n for n in range(self.size)}
        names = {self.eos_id: TTS_EOS_TOKEN}
        names.setdefault(self.pad_id, TTS_PAD_TOKEN)
        for extra in self.stop_ids:
            names.setdefault(extra, f"<|tts_stop_{extra}|>")
        for tid, name in names.items():
            if not 0 <= tid < tts_vocab_size or self.bias <= tid < self.bias + self.size:
                raise ValueError(f"TTS special id {tid} ({name}) collides with the unit ids")
            vocab.setdefault(name, tid)
        eos_name = next(k for k, v in vocab.items() if v == self.eos_id)
        pad_name = next(k for k, v in vocab.items() if v == self.pad_id)
        core = Tokenizer(models.WordLevel(vocab, unk_token=pad_name))
        core.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\|audio_\d+\|>"), behavior="isolated")
        core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in vocab])
        tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos_name, pad_token=pad_name)
        path = Path(path)
        tok.save_pretrained(str(path))
        GenerationConfig(
            eos_token_id=list(self.stop_ids) if len(self.stop_ids) > 1 else self.eos_id,
            pad_token_id=self.pad_id,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
        ).save_pretrained(str(path))


def read_config_and_tokenizer(path: str | Path) -> tuple[OpenS2SConfig, PreTrainedTokenizerFast]:
    """The config of a model directory with the unit ids of its ``tts/`` folder and the audio
    placeholder id of its tokenizer applied, and that tokenizer (no weights are read)."""
    path = Path(path)
    config_dict = _read_json(path / "config.json")
    if (path / TTS_DIR).is_dir():
        # The tts/ folder, not config.json, says where the units are (a released config.json
        # has none of these fields): set them before the config checks them.
        vocab = UnitVocabulary.from_tts_dir(path / TTS_DIR)
        config_dict.update(vocab.config_fields())
    try:
        config = OpenS2SConfig.from_dict(config_dict)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path / 'config.json'}: not a valid OpenS2S config ({e})") from e
    tokenizer = load_tokenizer(path)
    config.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    return config, tokenizer


def load_model_dir(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[OpenS2SModel, PreTrainedTokenizerFast]:
    """Load a released or exported model directory strictly (see the module docstring)."""
    path = Path(path)
    _check_files(path)
    config, tokenizer = read_config_and_tokenizer(path)
    _check_feature_extractor(path, config)
    model, info = OpenS2SModel.from_pretrained(
        str(path),
        config=config,
        dtype=dtype or torch.float32,
        key_mapping=LEGACY_WEIGHT_NAMES,
        output_loading_info=True,
    )
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys")}
    problems["mismatched_keys"] = sorted(str(m) for m in info.get("mismatched_keys") or [])
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        listed = "; ".join(
            f"{k.replace('_', ' ')}: {', '.join(v[:20])}" for k, v in problems.items()
        )
        raise ValueError(
            f"{path} does not match the OpenS2S architecture of its config.json ({listed}); "
            "expected the released tensor names (docs/model.md)"
        )
    if (path / GENERATION_CONFIG).is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    return model.to(device).eval(), tokenizer


def save_model_dir(
    model: OpenS2SModel,
    tokenizer: PreTrainedTokenizerBase,
    out: str | Path,
    *,
    max_shard_size: str | int = MAX_SHARD_SIZE,
    window_seconds: float | None = None,
) -> Path:
    """Write ``model`` + ``tokenizer`` in the released layout (sharded safetensors when the
    weights exceed ``max_shard_size``); returns the directory."""
    from transformers import WhisperFeatureExtractor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    tokenizer.save_pretrained(str(out))
    vocab = tokenizer.get_vocab()
    eos = [vocab[t] for t in (IM_END, PAD_TOKEN) if t in vocab]
    text_gen = getattr(model, "generation_config", None)
    if text_gen is None or text_gen.eos_token_id is None:
        text_gen = GenerationConfig(eos_token_id=eos, pad_token_id=vocab.get(PAD_TOKEN))
    text_gen.save_pretrained(str(out))
    UnitVocabulary.from_config(config).write_tts_dir(out / TTS_DIR, config.tts_lm_config.vocab_size)
    seconds = window_seconds or config.audio_window_frames / 100
    WhisperFeatureExtractor(
        feature_size=config.audio_encoder_config.num_mel_bins,
        sampling_rate=16000,
        hop_length=160,
        chunk_length=int(seconds) if float(seconds).is_integer() else seconds,
        n_fft=400,
        return_attention_mask=True,
    ).save_pretrained(str(out / AUDIO_DIR))
    return out


def _check_files(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(
            f"model directory {path} does not exist (expected config.json, safetensors weights "
            "and tokenizer files: a released OpenS2S directory or an export)"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a model directory: no config.json (expected a released OpenS2S "
            "directory or one exported by `opens2s train`)"
        )
    if not any((path / f).is_file() for f in _WEIGHT_FILES) and not list(
        path.glob("model-*.safetensors")
    ):
        raise FileNotFoundError(
            f"{path} holds no weights: expected model.safetensors or safetensors shards with "
            "model.safetensors.index.json"
        )
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{path} has no tokenizer.json: the text tokenizer (with OpenS2S's special tokens) "
            "must sit beside config.json"
        )


def _check_feature_extractor(path: Path, config: OpenS2SConfig) -> None:
    """The ``audio/`` folder's extractor must compute what our log-mel computes."""
    file = path / AUDIO_DIR / FEATURE_EXTRACTOR_CONFIG
    if not file.is_file():
        return  # exports of earlier versions have none: the model config alone decides
    fe = _read_json(file)
    want = {
        "feature_size": config.audio_encoder_config.num_mel_bins,
        "sampling_rate": 16000,
        "hop_length": 160,
        "n_fft": 400,
    }
    if "chunk_length" in fe:
        want["chunk_length"] = config.audio_window_frames // 100  # seconds per encoder window
    wrong = {k: (fe.get(k), v) for k, v in want.items() if fe.get(k) != v}
    if wrong:
        listed = ", ".join(f"{k}={got!r} (expected {exp!r})" for k, (got, exp) in wrong.items())
        raise ValueError(f"{file}: {listed}; our log-mel features are Whisper's at these values")


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from e
