"""Import a local copy of the released OpenS2S dataset's JSONL into a corpus, beside generated data.

The released layout (CASIA-LM/OpenS2S README "Data Preparation", ``src/instruction_dataset.py``
and ``src/utils.py`` @359565c): one JSON object per line with one key, ``messages``; each message
has ``role`` and a ``content`` list of items ``{"text", "audio", "speech_units", "spk_emb"}``. A
user item names an audio file (an absolute path, a path relative to where the training ran, or
``path:start:frames`` for a slice of a longer file); an assistant item carries the spoken text and
its ``speech_units`` (``<|audio_N|>`` GLM-4-Voice tokens) and may name a ``.npy`` speaker
embedding. Upstream drops a record whose audio is shorter than 8,000 samples at 16 kHz.

Each good line becomes a record of this corpus (the same format): its audio is copied under
``audio/<id>/`` and its speaker embedding under ``spk/``, with paths made relative to the corpus
root; the records land in new shards after the corpus' existing ones, with manifest rows
(``writer`` = ``opens2s-release``, emotion unknown) and a merged summary. Ids hash the file name,
line number and line, so importing the same file again adds nothing. A bad line is
quarantined with its file, line number and reason; nothing stops the import.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opens2s import storage
from opens2s.data import output, summary

WRITER = "opens2s-release"
STAGE = "import"
SAMPLE_RATE = 16000
MIN_SAMPLES = 8000  # upstream's keep rule: at least 0.5 s at 16 kHz
GLM4VOICE_UNITS = 16384


@dataclass
class ImportReport:
    """What an import did: records written, lines refused (with reasons), shards added."""

    records: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)
    shards: list[int] = field(default_factory=list)
    already_imported: int = 0
    """Lines whose record or refusal the corpus already holds (an import run again)."""


class _Refused(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")


def _read_audio(ref: str, base: Path) -> np.ndarray:
    """The 16 kHz mono wave an audio item names (``path`` or upstream's ``path:start:frames``)."""
    import soundfile as sf

    from opens2s.audio.io import resample

    parts = ref.rsplit(":", 2)
    start, frames = 0, -1
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        ref, start, frames = parts[0], int(parts[1]), int(parts[2])
    path = Path(ref) if Path(ref).is_absolute() else base / ref
    if not path.is_file():
        raise _Refused("missing_audio", f"{ref} (looked at {path})")
    try:
        wave, sr = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile's errors: unreadable or not audio
        raise _Refused("bad_audio", f"{ref}: {e}") from e
    wave = resample(wave.mean(axis=1), sr, SAMPLE_RATE)
    if wave.size < MIN_SAMPLES:
        raise _Refused(
            "too_short", f"{ref} lasts {wave.size / SAMPLE_RATE:.2f} s (upstream keeps >= 0.5 s)"
        )
    if not np.isfinite(wave).all():
        raise _Refused("bad_audio", f"{ref} holds NaN/inf samples")
    return wave


def _import_line(
    line: str, rid: str, base: Path, root: str, unit_vocab_size: int, fmt: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One released line -> (record with corpus-relative paths, manifest row). Writes its files."""
    from opens2s.model.records import RecordError, parse_record

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _Refused("json", f"{e.msg} at char {e.pos}") from e
    if not isinstance(obj, dict) or "messages" not in obj:
        raise _Refused("schema", "a line must be an object with a 'messages' list")
    try:
        parse_record({"messages": obj["messages"]}, record_id=rid, unit_vocab_size=unit_vocab_size)
    except RecordError as e:
        raise _Refused("schema", str(e)) from e
    files: dict[str, bytes] = {}
    messages, user_s, texts, n_units = [], 0.0, [], 0
    for i, msg in enumerate(obj["messages"]):
        content = msg["content"]
        if isinstance(content, str):
            content = [{"text": content}]
        items = []
        for j, item in enumerate(content):
            item = {k: item.get(k) or "" for k in ("text", "audio", "speech_units", "spk_emb")}
            if item["audio"]:
                wave = _read_audio(item["audio"], base)
                rel = f"{output.AUDIO_DIR}/{rid}/{i:02d}_{j:02d}_{msg['role']}.{fmt}"
                files[rel] = output.encode_audio(wave, SAMPLE_RATE, fmt)
                item["audio"] = rel
                user_s += wave.size / SAMPLE_RATE
            if item["spk_emb"] and isinstance(item["spk_emb"], str):
                ref = item["spk_emb"]
                path = Path(ref) if Path(ref).is_absolute() else base / ref
                try:
                    emb = np.load(path)
                except (OSError, ValueError) as e:
                    raise _Refused("missing_spk_emb", f"{ref}: {e}") from e
                rel = f"spk/{rid}_{i:02d}_{j:02d}.npy"
                buf = io.BytesIO()
                np.save(buf, np.asarray(emb, dtype=np.float32))
                files[rel] = buf.getvalue()
                item["spk_emb"] = rel
            if item["speech_units"]:
                n_units += item["speech_units"].count("<|audio_")
            if item["text"]:
                texts.append(item["text"])
            items.append(item)
        messages.append({"role": msg["role"], "content": items})
    for rel, data in files.items():
        storage.write_bytes(storage.join(root, *rel.split("/")), data)
    row = {
        "id": rid,
        "emotion": "",
        "writer": WRITER,
        "turns": len(messages),
        "user_seconds": round(user_s, 3),
        "assistant_seconds": 0.0,
        "seconds": round(user_s, 3),
        "units": n_units,
        "audio": json.dumps([p for p in files if p.startswith(output.AUDIO_DIR)]),
        "texts": json.dumps(texts),
        "stage_seconds": "{}",
    }
    return {"id": rid, "messages": messages}, row


def import_released(
    sources: list[str | Path],
    root: str,
    *,
    audio_root: str | Path | None = None,
    shard_size: int = 100,
    unit_vocab_size: int = GLM4VOICE_UNITS,
    audio_format: str = "flac",
) -> ImportReport:
    """Import released-layout JSONL files into the corpus at ``root`` (see module docstring).

    Relative audio and embedding paths resolve against ``audio_root`` (default: each file's
    folder). ``unit_vocab_size`` bounds the units (16,384 for GLM-4-Voice): train on imported
    records only with the unit tokenizer that made them (``audio.unit_tokenizer: glm4voice``).
    """
    report = ImportReport()
    done = output.completed_shards(root)
    first = max(done, default=-1) + 1
    seen = set(output.read_manifest_parts(root, done).column("id").to_pylist())
    seen |= {q["id"] for q in output.read_quarantine_parts(root, done)}
    records: list[dict] = []
    rows: list[dict] = []
    refused: list[dict] = []

    def commit() -> None:
        shard = first + len(report.shards)
        for r in rows:
            r["shard"] = shard
        for q in refused:
            q["shard"] = shard
        output.commit_shard(root, shard, list(records), list(rows), list(refused))
        report.shards.append(shard)
        report.records += len(records)
        report.refused += list(refused)
        records.clear()
        rows.clear()
        refused.clear()

    for f_no, src in enumerate(sources):
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such released-dataset JSONL file")
        base = Path(audio_root) if audio_root is not None else src.parent
        with src.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                digest = hashlib.sha1(f"{src.name}:{n}:{line}".encode()).hexdigest()[:8]
                rid = f"r{f_no:03d}{n:07d}-{digest}"
                if rid in seen:
                    report.already_imported += 1
                    continue
                try:
                    record, row = _import_line(line, rid, base, root, unit_vocab_size, audio_format)
                    records.append(record)
                    rows.append(row)
                except _Refused as e:
                    refused.append(
                        {
                            "id": rid,
                            "stage": STAGE,
                            "reason": f"{e} ({src.name} line {n})",
                            "emotion": "",
                            "writer": WRITER,
                            "attempts": 1,
                            "stage_seconds": {},
                        }
                    )
                if len(records) + len(refused) >= shard_size:
                    commit()
    if records or refused:
        commit()
    manifest, quarantine = output.merge_parts(root)
    summary.write_summary(root, summary.summarize(root, manifest, quarantine))
    return report
