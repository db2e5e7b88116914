"""Stage 7, output: audio files, OpenS2S records, manifest and quarantine parts, one shard at a time.

Layout under the corpus root (local path or s3://)::

    shards/shard-00000.jsonl        OpenS2S records of the shard's kept dialogues (training)
    held_out/shard-00000.jsonl      records of its held-out dialogues (eval only, never trained on)
    audio/<id>/<turn>_<role>.flac   rendered turns (user audio is what the records point to)
    parts/manifest/shard-00000.parquet, parts/quarantine/shard-00000.jsonl   per-shard parts
    manifest.parquet, quarantine.jsonl, summary.json    merged at the end of every run
    units/tokenizer.npz             the unit tokenizer that made speech_units
    spk/assistant.npy               the assistant voice's speaker embedding (records point to it)

A kept dialogue is held out for evaluation when its id hashes below
``data.output.held_out_fraction`` (:func:`is_held_out`): deterministic by sample id, so a dialogue
never moves between the splits when the corpus grows. A shard is committed by writing its JSONL last, after its audio and its parts: a shard whose JSONL
exists is complete, and a rerun skips it. Everything else is rewritten identically on a rerun
(deterministic ids and paths), so a killed run leaves nothing that a rerun would duplicate.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from opens2s import storage
from opens2s.config.data import RenderSettings
from opens2s.data.sample import Sample

STAGE = "output"
SHARDS_DIR = "shards"
HELD_OUT_DIR = "held_out"
AUDIO_DIR = "audio"
MANIFEST_PARTS = "parts/manifest"
QUARANTINE_PARTS = "parts/quarantine"
MANIFEST = "manifest.parquet"
QUARANTINE = "quarantine.jsonl"
SUMMARY = "summary.json"
UNIT_TOKENIZER = "units/tokenizer.npz"
ASSISTANT_EMBEDDING = "spk/assistant.npy"
BUILD_CONFIG = "build_config.json"


def shard_name(shard: int) -> str:
    """``shard-00012``."""
    return f"shard-{shard:05d}"


def shard_uri(root: str, shard: int) -> str:
    """Where the records of ``shard`` live."""
    return storage.join(root, SHARDS_DIR, shard_name(shard) + ".jsonl")


def is_held_out(sample_id: str, fraction: float) -> bool:
    """Whether dialogue ``sample_id`` belongs to the held-out eval split (its SHA-1 below
    ``fraction`` of the hash space)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha1(f"opens2s-held-out:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def completed_shards(root: str) -> set[int]:
    """Shards whose JSONL exists (committed) under ``root``."""
    done = set()
    for uri in storage.list_prefix(storage.join(root, SHARDS_DIR)):
        name = uri.rsplit("/", 1)[-1]
        if name.startswith("shard-") and name.endswith(".jsonl"):
            done.add(int(name[len("shard-") : -len(".jsonl")]))
    return done


def encode_audio(wave: np.ndarray, sr: int, fmt: str) -> bytes:
    """A wave as FLAC or WAV bytes (16-bit)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sr, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


class AudioWriter:
    """Writes the turns of kept samples under ``<root>/audio/<id>/`` and drops the waves."""

    def __init__(self, root: str, render: RenderSettings) -> None:
        self.root = root
        self.fmt = render.audio_format

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        """Write audio of every live sample; a storage failure quarantines that sample."""
        for s in samples:
            if not s.ok:
                continue
            try:
                for i, turn in enumerate(s.turns):
                    rel = f"{AUDIO_DIR}/{s.id}/{i:02d}_{turn.role}.{self.fmt}"
                    data = encode_audio(s.waves[i], s.sample_rate, self.fmt)
                    storage.write_bytes(storage.join(self.root, *rel.split("/")), data)
                    turn.audio = rel
            except Exception as e:
                s.drop(STAGE, f"writing audio failed: {type(e).__name__}: {e}")
            s.waves = {}
        return samples


_UNIT = re.compile(r"<\|audio_(\d+)\|>")


def units_text(units: list[int]) -> str:
    """Unit ids as OpenS2S speech-unit tokens: ``<|audio_12|><|audio_7|>``."""
    return "".join(f"<|audio_{int(u)}|>" for u in units)


def record_for(sample: Sample, assistant_spk_emb: str = "") -> dict[str, Any]:
    """The OpenS2S training record of a kept sample (paths relative to the corpus root)."""
    messages = []
    for turn in sample.turns:
        if turn.role == "user":
            item = {"text": "", "audio": turn.audio, "speech_units": "", "spk_emb": ""}
        else:
            item = {
                "text": turn.text,
                "audio": "",
                "speech_units": units_text(turn.units),
                "spk_emb": assistant_spk_emb,
            }
        messages.append({"role": turn.role, "content": [item]})
    return {"id": sample.id, "messages": messages}


def manifest_row(sample: Sample) -> dict[str, Any]:
    """One manifest row: who, what emotion, how long, what the filters measured."""
    sc = sample.scenario
    user = sum(t.seconds for t in sample.turns if t.role == "user")
    assistant = sum(t.seconds for t in sample.turns if t.role == "assistant")
    return {
        "id": sample.id,
        "shard": sample.shard,
        "emotion": sc.emotion,
        "intensity": sc.intensity,
        "situation": sc.situation,
        "persona": sc.persona,
        "speaker": sc.speaker,
        "writer": sample.writer,
        "turns": len(sample.turns),
        "user_seconds": round(user, 3),
        "assistant_seconds": round(assistant, 3),
        "seconds": round(user + assistant, 3),
        "units": sum(len(t.units) for t in sample.turns),
        "silence_ratio_max": sample.checks.get("silence_ratio_max"),
        "clipped_fraction_max": sample.checks.get("clipped_fraction_max"),
        "wer_max": sample.checks.get("wer_max"),
        "lexically_neutral": sc.lexically_neutral,
        "pair": sc.pair,
        "prosody_agrees": sample.checks.get("prosody_agrees"),
        "speaker_similarity_min": sample.checks.get("speaker_similarity_min"),
        "ser_agrees": sample.checks.get("ser_agrees"),
        "audio": json.dumps([t.audio for t in sample.turns]),
        "texts": json.dumps([t.text for t in sample.turns]),
        "stage_seconds": json.dumps(sample.timings),
    }


MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("shard", pa.int64()),
        ("emotion", pa.string()),
        ("intensity", pa.float64()),
        ("situation", pa.string()),
        ("persona", pa.string()),
        ("speaker", pa.string()),
        ("writer", pa.string()),
        ("turns", pa.int64()),
        ("user_seconds", pa.float64()),
        ("assistant_seconds", pa.float64()),
        ("seconds", pa.float64()),
        ("units", pa.int64()),
        ("silence_ratio_max", pa.float64()),
        ("clipped_fraction_max", pa.float64()),
        ("wer_max", pa.float64()),
        ("lexically_neutral", pa.bool_()),
        ("pair", pa.int64()),
        ("prosody_agrees", pa.float64()),
        ("speaker_similarity_min", pa.float64()),
        ("ser_agrees", pa.float64()),
        ("audio", pa.string()),
        ("texts", pa.string()),
        ("stage_seconds", pa.string()),
    ]
)


def quarantine_row(sample: Sample) -> dict[str, Any]:
    """One quarantine line: which sample, which stage refused it and why."""
    return {
        "id": sample.id,
        "shard": sample.shard,
        "stage": sample.dropped_stage,
        "reason": sample.dropped_reason,
        "emotion": sample.scenario.emotion,
        "writer": sample.writer,
        "attempts": sample.attempts,
        "stage_seconds": sample.timings,
    }


def _parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema = MANIFEST_SCHEMA) -> bytes:
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_shard(
    root: str,
    shard: int,
    samples: list[Sample],
    assistant_spk_emb: str = "",
    held_out_fraction: float = 0.0,
) -> None:
    """Commit one shard: manifest part, quarantine part, held-out records, then the training
    records (the commit marker)."""
    samples = sorted(samples, key=lambda s: s.index)
    kept = [s for s in samples if s.ok]
    held = [s for s in kept if is_held_out(s.id, held_out_fraction)]
    held_ids = {s.id for s in held}
    dropped = [s for s in samples if not s.ok]
    commit_shard(
        root,
        shard,
        [record_for(s, assistant_spk_emb) for s in kept if s.id not in held_ids],
        [manifest_row(s) for s in kept],
        [quarantine_row(s) for s in dropped],
        held_out_records=[record_for(s, assistant_spk_emb) for s in held],
    )


def commit_shard(
    root: str,
    shard: int,
    records: list[dict[str, Any]],
    manifest_rows: list[dict[str, Any]],
    quarantine_rows: list[dict[str, Any]],
    schema: pa.Schema = MANIFEST_SCHEMA,
    held_out_records: list[dict[str, Any]] | None = None,
) -> None:
    """Commit one shard of any corpus (dialogues, continuations): manifest part (``schema``),
    quarantine part, held-out records, then the training records (the commit marker)."""
    name = shard_name(shard)
    storage.write_bytes(
        storage.join(root, MANIFEST_PARTS, name + ".parquet"), _parquet_bytes(manifest_rows, schema)
    )
    storage.write_text(
        storage.join(root, QUARANTINE_PARTS, name + ".jsonl"),
        "".join(json.dumps(q) + "\n" for q in quarantine_rows),
    )
    held_uri = storage.join(root, HELD_OUT_DIR, name + ".jsonl")
    if held_out_records or storage.exists(held_uri):
        storage.write_text(held_uri, "".join(json.dumps(r) + "\n" for r in held_out_records or []))
    storage.write_text(shard_uri(root, shard), "".join(json.dumps(r) + "\n" for r in records))


def read_manifest_parts(
    root: str, shards: set[int] | None = None, schema: pa.Schema = MANIFEST_SCHEMA
) -> pa.Table:
    """The manifest rows of committed shards (all, or those in ``shards``)."""
    done = completed_shards(root) if shards is None else shards
    tables = []
    for shard in sorted(done):
        uri = storage.join(root, MANIFEST_PARTS, shard_name(shard) + ".parquet")
        if storage.exists(uri):
            tables.append(pq.read_table(io.BytesIO(storage.read_bytes(uri))))
    if not tables:
        return schema.empty_table()
    # Parts written before a column was added lack it: it reads as null there.
    return pa.concat_tables(tables, promote_options="default")


def read_quarantine_parts(root: str, shards: set[int] | None = None) -> list[dict[str, Any]]:
    """The quarantine lines of committed shards."""
    done = completed_shards(root) if shards is None else shards
    rows: list[dict[str, Any]] = []
    for shard in sorted(done):
        uri = storage.join(root, QUARANTINE_PARTS, shard_name(shard) + ".jsonl")
        if storage.exists(uri):
            rows += [json.loads(line) for line in storage.read_text(uri).splitlines() if line]
    return rows


def merge_parts(
    root: str, schema: pa.Schema = MANIFEST_SCHEMA
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Write ``manifest.parquet`` and ``quarantine.jsonl`` from the parts of committed shards."""
    shards = completed_shards(root)
    manifest = read_manifest_parts(root, shards, schema)
    quarantine = read_quarantine_parts(root, shards)
    buf = io.BytesIO()
    pq.write_table(manifest, buf)
    storage.write_bytes(storage.join(root, MANIFEST), buf.getvalue())
    storage.write_text(
        storage.join(root, QUARANTINE), "".join(json.dumps(q) + "\n" for q in quarantine)
    )
    return manifest, quarantine


def record_files(root: str, split: str = "train") -> list[str]:
    """The record JSONL URIs of a split (``train``: ``shards/``, ``held_out``: ``held_out/``),
    in name order."""
    folder = {"train": SHARDS_DIR, "held_out": HELD_OUT_DIR}[split]
    return sorted(
        u for u in storage.list_prefix(storage.join(root, folder)) if u.endswith(".jsonl")
    )


def held_out_count(root: str) -> int:
    """Dialogues in the held-out split."""
    return sum(
        1
        for u in record_files(root, "held_out")
        for line in storage.read_text(u).splitlines()
        if line.strip()
    )


def manifest_rows(root: str) -> dict[str, dict[str, Any]]:
    """Record id -> its manifest row's ``emotion`` and ``speaker``; empty without a manifest."""
    uri = storage.join(root, MANIFEST)
    if not storage.exists(uri):
        return {}
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=["id", "emotion", "speaker"])
    return {row["id"]: row for row in table.to_pylist()}


def first_exchanges(
    root: str, split: str = "train", limit: int | None = None
) -> list[dict[str, Any]]:
    """The first user-audio question and its answer of each dialogue of a split, in record order:
    ``{"id", "question_audio" (URI), "answer_text", "answer_units" (ids)}``; dialogues without
    such an exchange are left out. Stops after ``limit`` exchanges."""
    found: list[dict[str, Any]] = []
    for uri in record_files(root, split):
        for line in storage.read_text(uri).splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            msgs = rec.get("messages", [])
            for user, assistant in zip(msgs, msgs[1:], strict=False):
                if user["role"] != "user" or assistant["role"] != "assistant":
                    continue
                audio = user["content"][0].get("audio")
                text = assistant["content"][0].get("text", "")
                if audio and text:
                    units = assistant["content"][0].get("speech_units", "")
                    found.append(
                        {
                            "id": rec["id"],
                            "question_audio": storage.join(root, audio),
                            "answer_text": text,
                            "answer_units": [int(u) for u in _UNIT.findall(units)],
                        }
                    )
                break  # the first exchange of each dialogue
            if limit is not None and len(found) >= limit:
                return found
    return found
