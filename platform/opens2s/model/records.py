"""Training records (OpenS2S JSONL) -> model tensors, and batching.

A record is ``{"id": ..., "messages": [{"role", "content": [{"text", "audio", "speech_units",
"spk_emb"}]}]}``. :func:`parse_record` checks the schema and parses units; :class:`RecordEncoder`
lays the record out in Qwen chat markup (labels on assistant text and its closing marker, token
type 1 on ``<|im_tts_start|>text<|im_tts_end|>`` spans), loads audio and computes log-mel features;
:func:`collate` pads a list of encoded samples into one batch for ``OpenS2SModel.forward``.

Every problem raises a :class:`RecordError` subclass naming the record, the field and the reason,
so the data path can count and skip bad records by reason.
"""

from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from opens2s import storage
from opens2s.audio.features import log_mel
from opens2s.audio.io import AudioError, load_audio
from opens2s.config.model import ModelSection
from opens2s.model.configuration import OpenS2SConfig
from opens2s.model.modeling import IGNORE_INDEX
from opens2s.model.tokenizer import (
    AUDIO_END,
    AUDIO_START,
    AUDIO_TOKEN,
    IM_END,
    IM_START,
    THINK_OFF,
    TTS_END,
    TTS_START,
)

SAMPLE_RATE = 16000
ROLES = ("system", "user", "assistant")
_UNIT = re.compile(r"<\|audio_(\d+)\|>")
_UNITS = re.compile(r"(?:<\|audio_\d+\|>)*")


class RecordError(ValueError):
    """A record that cannot be used: ``record_id``, the ``field`` at fault and the ``reason``."""

    def __init__(self, record_id: str, field: str, reason: str) -> None:
        super().__init__(f"record {record_id!r}: {field}: {reason}")
        self.record_id = record_id
        self.field = field
        self.reason = reason


class SchemaError(RecordError):
    """The record does not have the OpenS2S shape (messages, roles, content items)."""


class MissingAudioError(RecordError):
    """An audio (or speaker-embedding) file the record names does not exist or cannot be read."""


class PathOutsideCorpusError(RecordError):
    """An audio or speaker-embedding path outside the corpus root (absolute, ``../``, another
    bucket) that ``model.record_roots`` does not allow."""


class AudioTooShortError(RecordError):
    """User audio shorter than the minimum (default 0.5 s)."""


class BadUnitsError(RecordError):
    """``speech_units`` is not a run of ``<|audio_N|>`` tokens with N in the unit vocabulary."""


class TooLongError(RecordError):
    """Text longer than the model's maximum, or audio longer than the maximum duration."""


@dataclass(frozen=True)
class ContentItem:
    """One content item; ``speech_units`` is parsed (None when the item has none)."""

    text: str
    audio: str
    speech_units: tuple[int, ...] | None
    spk_emb: str | tuple[float, ...] | None


@dataclass(frozen=True)
class Message:
    role: str
    content: tuple[ContentItem, ...]


@dataclass(frozen=True)
class Record:
    """A parsed training record."""

    id: str
    messages: tuple[Message, ...]


def parse_units(text: str, *, record_id: str = "?", field: str = "speech_units") -> list[int]:
    """``"<|audio_12|><|audio_7|>"`` -> ``[12, 7]``; anything else raises :class:`BadUnitsError`."""
    compact = "".join(str(text).split())
    if not _UNITS.fullmatch(compact):
        bad = _UNIT.sub("", compact)[:40]
        raise BadUnitsError(
            record_id, field, f"expected only <|audio_N|> tokens, found {bad!r} among them"
        )
    return [int(n) for n in _UNIT.findall(compact)]


def parse_record(
    obj: dict[str, Any], *, record_id: str | None = None, unit_vocab_size: int | None = None
) -> Record:
    """Check an OpenS2S record dict and parse its units (ids must be < ``unit_vocab_size``)."""
    if record_id is None:
        record_id = obj.get("id", "?") if isinstance(obj, dict) else "?"
    rid = str(record_id)
    if not isinstance(obj, dict):
        raise SchemaError(rid, "record", f"expected a JSON object, got {type(obj).__name__}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SchemaError(rid, "messages", "expected a non-empty list of {role, content} objects")
    parsed: list[Message] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise SchemaError(rid, where, f"expected an object, got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ROLES:
            raise SchemaError(rid, f"{where}.role", f"{role!r} is not one of {list(ROLES)}")
        content = msg.get("content")
        if isinstance(content, str):
            content = [{"text": content}]
        if not isinstance(content, list) or not content:
            raise SchemaError(rid, f"{where}.content", "expected a non-empty list of items")
        items = []
        for j, item in enumerate(content):
            field = f"{where}.content[{j}]"
            if not isinstance(item, dict):
                raise SchemaError(rid, field, f"expected an object, got {type(item).__name__}")
            text, audio = item.get("text") or "", item.get("audio") or ""
            if not isinstance(text, str) or not isinstance(audio, str):
                raise SchemaError(rid, field, "text and audio must be strings")
            units_text = item.get("speech_units") or ""
            units = None
            if units_text:
                if role != "assistant":
                    raise SchemaError(
                        rid, f"{field}.speech_units", f"only assistant items have units, not {role}"
                    )
                units = parse_units(units_text, record_id=rid, field=f"{field}.speech_units")
                if not units:
                    raise BadUnitsError(rid, f"{field}.speech_units", "no <|audio_N|> units")
                if unit_vocab_size is not None and max(units) >= unit_vocab_size:
                    raise BadUnitsError(
                        rid,
                        f"{field}.speech_units",
                        f"unit {max(units)} is outside the vocabulary 0..{unit_vocab_size - 1}",
                    )
            spk = item.get("spk_emb") or None
            if spk is not None and not isinstance(spk, str):
                if not isinstance(spk, list) or not all(isinstance(x, int | float) for x in spk):
                    raise SchemaError(
                        rid, f"{field}.spk_emb", "expected a .npy path or a list of numbers"
                    )
                spk = tuple(float(x) for x in spk)
            if not text and not audio and units is None:
                raise SchemaError(rid, field, "item has neither text nor audio")
            items.append(ContentItem(text, audio, tuple(units) if units else None, spk))
        parsed.append(Message(role, tuple(items)))
    if not any(m.role == "assistant" for m in parsed):
        raise SchemaError(rid, "messages", "no assistant turn: nothing to learn from")
    return Record(rid, tuple(parsed))


def _normalized(uri: str) -> str:
    """``uri`` with ``.``/``..`` segments resolved (local paths: absolute, symlinks followed)."""
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        key = posixpath.normpath("/" + key).lstrip("/") if key else ""
        return f"s3://{bucket}/{key}".rstrip("/")
    return str(Path(uri).resolve())


def _is_under(uri: str, root: str) -> bool:
    if storage.is_s3(uri) != storage.is_s3(root):
        return False
    if storage.is_s3(uri):
        return uri == root or uri.startswith(root.rstrip("/") + "/")
    return Path(uri).is_relative_to(root)


class RecordEncoder:
    """Turns a :class:`Record` into model inputs (numpy arrays; runs inside a Ray Data map)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        config: OpenS2SConfig,
        audio_root: str | Path,
        section: ModelSection | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.audio_root = str(audio_root)
        self.section = section or ModelSection()
        self.n_mels = config.audio_encoder_config.num_mel_bins

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _read(self, rel: str, record_id: str, field: str) -> bytes | str:
        """The bytes (S3) or local path of a file a record names, confined to the corpus root
        and ``model.record_roots``: a record must not make a worker read any file it can."""
        s3 = storage.is_s3(self.audio_root) or storage.is_s3(rel)
        uri = rel if storage.is_s3(rel) or (not s3 and Path(rel).is_absolute()) else None
        uri = uri or storage.join(self.audio_root, rel)
        uri = _normalized(uri)
        roots = [self.audio_root, *self.section.record_roots]
        if not any(_is_under(uri, _normalized(root)) for root in roots):
            raise PathOutsideCorpusError(
                record_id,
                field,
                f"{rel!r} resolves to {uri}, outside the corpus root {self.audio_root}; name "
                "files relative to the corpus root, or allow their location in "
                "model.record_roots",
            )
        return storage.read_bytes(uri) if storage.is_s3(uri) else uri

    def load_wave(self, rel: str, record_id: str, field: str) -> np.ndarray:
        """Read one audio item at 16 kHz, checking it exists and its duration is in range."""
        limit = self.section.max_audio_seconds
        try:
            # The header decides a too-long file before a sample is decoded.
            wave = load_audio(self._read(rel, record_id, field), SAMPLE_RATE, max_seconds=limit)
        except AudioError as e:
            if e.problem.startswith("too long"):
                raise TooLongError(record_id, field, f"{rel}: {e.problem}") from e
            raise MissingAudioError(record_id, field, f"{rel}: {e}") from e
        except (FileNotFoundError, OSError) as e:
            raise MissingAudioError(record_id, field, f"{rel}: {e}") from e
        seconds = wave.size / SAMPLE_RATE
        if seconds < self.section.min_audio_seconds:
            raise AudioTooShortError(
                record_id,
                field,
                f"{rel} lasts {seconds:.2f} s, need at least {self.section.min_audio_seconds} s",
            )
        if seconds > self.section.max_audio_seconds:
            raise TooLongError(
                record_id,
                field,
                f"{rel} lasts {seconds:.1f} s, at most {self.section.max_audio_seconds} s allowed",
            )
        return wave

    def speaker_embedding(self, spk: str | tuple[float, ...] | None, rid: str, field: str):
        """The item's speaker embedding as float32 ``[spk_emb_dim]`` (zeros when absent)."""
        dim = self.config.spk_emb_dim
        if spk is None:
            return np.zeros(dim, dtype=np.float32)
        if isinstance(spk, str):
            try:
                data = self._read(spk, rid, field)
                arr = np.load(io.BytesIO(data) if isinstance(data, bytes) else data)
            except RecordError:
                raise
            except (OSError, ValueError) as e:
                raise MissingAudioError(rid, field, f"speaker embedding {spk}: {e}") from e
        else:
            arr = np.asarray(spk)
        arr = np.asarray(arr, dtype=np.float32).reshape(-1)
        if arr.size != dim:
            raise SchemaError(
                rid, field, f"speaker embedding has {arr.size} values, expected {dim}"
            )
        return arr

    def encode(self, record: Record) -> dict[str, np.ndarray]:
        """Record -> ``input_ids, labels, token_types, attention_mask, speech_values, speech_mask,
        speech_units, speech_units_mask, spk_embs`` (numpy; see :func:`collate`)."""
        rid = record.id
        ids: list[int] = []
        labels: list[int] = []
        types: list[int] = []

        def add(text: str, *, learn: bool = False, tts: bool = False) -> None:
            piece = self._ids(text)
            ids.extend(piece)
            labels.extend(piece if learn else [IGNORE_INDEX] * len(piece))
            types.extend([1 if tts else 0] * len(piece))

        waves, units, spks = [], [], []
        messages = list(record.messages)
        if messages[0].role != "system":
            add(f"{IM_START}system\n{self.section.system_prompt}{IM_END}\n")
        for i, msg in enumerate(messages):
            assistant = msg.role == "assistant"
            add(f"{IM_START}{msg.role}\n" + (THINK_OFF if assistant else ""))
            for j, item in enumerate(msg.content):
                field = f"messages[{i}].content[{j}]"
                if item.audio and not assistant:
                    waves.append(self.load_wave(item.audio, rid, f"{field}.audio"))
                    add(AUDIO_START + AUDIO_TOKEN + AUDIO_END)
                if assistant and item.speech_units is not None:
                    add(TTS_START + item.text + TTS_END, learn=True, tts=True)
                    # Unit N is TTS id units_bias + N; the eos ends it (as upstream trains).
                    bias = self.config.units_bias
                    units.append(
                        [*(bias + u for u in item.speech_units), self.config.tts_eos_token_id]
                    )
                    spks.append(self.speaker_embedding(item.spk_emb, rid, f"{field}.spk_emb"))
                elif item.text:
                    add(item.text, learn=assistant)
            add(IM_END, learn=assistant)
            add("\n")
        if len(ids) > self.section.max_text_tokens:
            raise TooLongError(
                rid,
                "messages",
                f"{len(ids)} text tokens, at most {self.section.max_text_tokens} allowed",
            )

        window = self.config.audio_window_frames
        feats = [log_mel(w, SAMPLE_RATE, self.n_mels, window) for w in waves]
        frames = max([f.shape[1] for f, _ in feats], default=window)
        speech_values = np.zeros((len(feats), self.n_mels, frames), dtype=np.float32)
        speech_mask = np.zeros((len(feats), frames), dtype=np.int64)
        for k, (f, valid) in enumerate(feats):
            speech_values[k, :, : f.shape[1]] = f
            speech_mask[k, :valid] = 1
        n_units = max((len(u) for u in units), default=1)
        speech_units = np.zeros((len(units), n_units), dtype=np.int64)
        speech_units_mask = np.zeros((len(units), n_units), dtype=np.int64)
        for k, u in enumerate(units):
            speech_units[k, : len(u)] = u
            speech_units_mask[k, : len(u)] = 1
        return {
            "input_ids": np.asarray(ids, dtype=np.int64),
            "labels": np.asarray(labels, dtype=np.int64),
            "token_types": np.asarray(types, dtype=np.int64),
            "attention_mask": np.ones(len(ids), dtype=np.int64),
            "speech_values": speech_values,
            "speech_mask": speech_mask,
            "speech_units": speech_units,
            "speech_units_mask": speech_units_mask,
            "spk_embs": np.stack(spks).astype(np.float32)
            if spks
            else np.zeros((0, self.config.spk_emb_dim), dtype=np.float32),
        }


def _pad_cat(arrays: list[np.ndarray], value: float | int) -> torch.Tensor:
    """Concatenate along dim 0 after right-padding the last dim to the longest."""
    width = max(a.shape[-1] for a in arrays)
    out = [
        np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])], constant_values=value)
        for a in arrays
    ]
    return torch.from_numpy(np.concatenate(out, axis=0))


def to_device(value: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """A batch value on ``device``: floating tensors in the weights' ``dtype``, integer tensors
    as they are, anything else untouched."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Pad encoded samples into one batch: token tensors ``B x L`` (right-padded), audio,
    unit and speaker rows of all samples concatenated in order (placeholders / spans are
    matched row-major)."""
    if not samples:
        raise ValueError("collate: got no samples, expected at least one encoded record")
    pads = {"input_ids": 0, "labels": IGNORE_INDEX, "token_types": 0, "attention_mask": 0}
    batch = {k: _pad_cat([s[k][None] for s in samples], v) for k, v in pads.items()}
    batch["speech_values"] = _pad_cat([s["speech_values"] for s in samples], 0.0)
    batch["speech_mask"] = _pad_cat([s["speech_mask"] for s in samples], 0)
    batch["speech_units"] = _pad_cat([s["speech_units"] for s in samples], 0)
    batch["speech_units_mask"] = _pad_cat([s["speech_units_mask"] for s in samples], 0)
    batch["spk_embs"] = torch.from_numpy(np.concatenate([s["spk_embs"] for s in samples]))
    return batch
