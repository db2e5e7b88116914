"""Training data: corpus shards -> Ray Dataset of encoded samples -> per-worker collated batches.

The corpus's ``shards/*.jsonl`` are read as lines; a Ray Data map parses each line into the
model's :class:`~opens2s.model.records.Record` and encodes it with the model's ``RecordEncoder``
(audio loaded and log-mel computed there, in the data pipeline, not in the training loop). A bad
record raises the model's typed ``RecordError``: it is skipped and tallied by reason in a small
named actor, so the run's summary can say how many records were dropped and why.

Encoded samples travel as one pickled column: their arrays differ in shape and dtype per record
and the model's ``collate`` wants the sample dicts back exactly as ``encode`` made them.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from opens2s import storage
from opens2s.config.audio import AudioSection
from opens2s.config.model import ModelSection

TALLY_NAMESPACE = "opens2s-train"


def shard_paths(corpus: str) -> list[str]:
    """The corpus's ``shards/*.jsonl`` URIs in name order; raises FileNotFoundError when none."""
    shards_uri = storage.join(corpus, "shards")
    paths = sorted(p for p in storage.list_prefix(shards_uri) if p.endswith(".jsonl"))
    if not paths:
        raise FileNotFoundError(
            f"corpus {corpus} has no shards/*.jsonl; build it with `opens2s corpus build` or point "
            "train.corpus at a corpus root"
        )
    return paths


@ray.remote(num_cpus=0)
class RecordErrorTally:
    """Bad records seen by the encode stage, one entry per record id (epochs repeat them)."""

    def __init__(self) -> None:
        self._errors: dict[str, tuple[str, str]] = {}

    def add(self, record_id: str, reason: str, message: str) -> None:
        self._errors.setdefault(record_id, (reason, message))

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(reason for reason, _ in self._errors.values()))


def create_error_tally(name: str) -> ray.actor.ActorHandle:
    """A fresh named tally for one training stage (killed with :func:`close_error_tally`)."""
    return RecordErrorTally.options(name=name, namespace=TALLY_NAMESPACE).remote()


def close_error_tally(tally: ray.actor.ActorHandle) -> dict[str, int]:
    """The tally's counts by reason; the actor is ended."""
    counts = ray.get(tally.by_reason.remote())
    ray.kill(tally)
    return counts


class RecordEncoderCache:
    """One tokenizer + ``RecordEncoder`` per (model, corpus) in each Ray worker process.

    Encoding runs as plain Ray Data tasks; Ray reuses task worker processes, so a later epoch or a
    later stage of the same cluster finds the encoder built and its imports done.
    """

    _encoders: dict[tuple[str, str, str], tuple[Any, int]] = {}

    @classmethod
    def get(cls, source_json: str, audio_json: str, corpus: str) -> tuple[Any, int]:
        """``(RecordEncoder, unit_vocab_size)`` for the model and audio sections (as JSON) and
        corpus."""
        key = (source_json, audio_json, corpus)
        if key not in cls._encoders:
            from opens2s.model.records import RecordEncoder
            from opens2s.train.model_source import config_and_tokenizer

            source = ModelSection.model_validate_json(source_json)
            audio = AudioSection.model_validate_json(audio_json)
            config, tokenizer = config_and_tokenizer(source, audio)
            encoder = RecordEncoder(tokenizer, config, corpus, section=source)
            cls._encoders[key] = (encoder, config.unit_vocab_size)
        return cls._encoders[key]


def encode_records(
    batch: dict[str, np.ndarray],
    *,
    source_json: str,
    audio_json: str,
    corpus: str,
    tally_name: str,
) -> dict[str, np.ndarray]:
    """Ray Data map: JSONL lines -> encoded samples (``{"id", "sample"}`` rows).

    A line that is not JSON or a record the model rejects (``RecordError``) is dropped and
    tallied by its error type; audio paths resolve against the corpus root (local or s3://).
    """
    from opens2s.model.records import RecordError, parse_record

    encoder, unit_vocab_size = RecordEncoderCache.get(source_json, audio_json, corpus)
    tally = ray.get_actor(tally_name, namespace=TALLY_NAMESPACE)
    ids: list[str] = []
    samples: list[bytes] = []
    for line in batch["text"]:
        line = str(line).strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            tally.add.remote(f"line:{line[:40]}", "InvalidJSON", str(e))
            continue
        record_id = str(obj.get("id", "")) if isinstance(obj, dict) else ""
        try:
            record = parse_record(obj, record_id=record_id, unit_vocab_size=unit_vocab_size)
            sample = encoder.encode(record)
        except RecordError as e:
            tally.add.remote(record_id, _reason(e), str(e))
            continue
        ids.append(record_id)
        samples.append(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
    return {"id": np.array(ids, dtype=object), "sample": np.array(samples, dtype=object)}


def _reason(error: Exception) -> str:
    """The error's kind, e.g. ``MissingAudioError`` (its message holds the details)."""
    return type(error).__name__


def corpus_dataset(
    corpus: str,
    source: ModelSection,
    audio: AudioSection,
    tally_name: str,
    *,
    encode_cpus: float = 0.5,
) -> ray.data.Dataset:
    """The corpus as a Ray Dataset of encoded samples, in shard order.

    Encoding runs as Ray Data tasks of ``encode_cpus`` CPUs each; bad records are dropped there
    and tallied in the actor named ``tally_name``.
    """
    paths = shard_paths(corpus)
    fs, fs_paths = (None, paths)
    if storage.is_s3(corpus):
        fs, _ = storage.pyarrow_filesystem(corpus)
        fs_paths = [storage.pyarrow_filesystem(p)[1] for p in paths]
    ds = ray.data.read_text(fs_paths, filesystem=fs, override_num_blocks=len(paths))
    # Rows in shard order whichever task finishes first (materialized or streamed), so every run
    # hands the same samples to the same worker in the same order.
    ds.context.execution_options.preserve_order = True
    return ds.map_batches(
        encode_records,
        fn_kwargs={
            "source_json": source.model_dump_json(),
            "audio_json": audio.model_dump_json(),
            "corpus": corpus,
            "tally_name": tally_name,
        },
        batch_size=8,
        batch_format="numpy",
        num_cpus=encode_cpus,
    )


def collate_rows(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """A batch of Ray Data rows -> the model's padded tensors (``collate``), plus ``ids``."""
    from opens2s.model.records import collate

    samples = [pickle.loads(s) for s in batch["sample"]]
    out = dict(collate(samples))
    out["ids"] = [str(i) for i in batch["id"]]
    return out


def iter_micro_batches(
    shard: ray.data.DataIterator,
    micro_batch_size: int,
    *,
    epoch: int = 0,
    seed: int = 0,
    drop_last: bool = True,
) -> Iterator[dict[str, Any]]:
    """One epoch of a worker's shard as collated micro-batches, shuffled anew each epoch.

    ``drop_last`` keeps every worker at the same number of micro-batches, so no rank waits on a
    collective the others never enter (one worker has no such need: pass False). The rows a
    dropped tail would hold change from epoch to epoch (the local shuffle is seeded ``seed +
    epoch``, the same on every rank and on a resumed run): unshuffled, the same records were
    left out of every epoch, and a 3-dialogue corpus with micro-batch 2 never trained its third.
    """
    batches = shard.iter_batches(
        batch_size=micro_batch_size,
        batch_format="numpy",
        drop_last=drop_last,
        prefetch_batches=1,
        local_shuffle_buffer_size=max(64, 4 * micro_batch_size),
        local_shuffle_seed=seed + epoch,
    )
    for batch in batches:
        yield collate_rows(batch)
