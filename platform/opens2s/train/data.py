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

    def examples(self, limit: int = 5) -> list[dict[str, str]]:
        items = list(self._errors.items())[:limit]
        return [{"id": i, "reason": r, "message": m} for i, (r, m) in items]


def create_error_tally(name: str) -> ray.actor.ActorHandle:
    """A fresh named tally for one training stage (killed with :func:`close_error_tally`)."""
    return RecordErrorTally.options(name=name, namespace=TALLY_NAMESPACE).remote()


def close_error_tally(tally: ray.actor.ActorHandle) -> dict[str, int]:
    """The tally's counts by reason; the actor is ended."""
    counts = ray.get(tally.by_reason.remote())
    ray.kill(tally)
    return counts


class EncodeRecords:
    """Ray Data map stage: JSONL lines -> encoded samples (``{"id", "sample"}`` rows).

    Holds one tokenizer and ``RecordEncoder`` per actor; audio paths resolve against the corpus
    root (local or s3://).
    """

    def __init__(self, source: ModelSection, corpus: str, tally_name: str) -> None:
        from opens2s.model.records import RecordEncoder
        from opens2s.train.model_source import config_and_tokenizer

        config, tokenizer = config_and_tokenizer(source)
        self.unit_vocab_size = config.unit_vocab_size
        self.encoder = RecordEncoder(tokenizer, config, corpus, section=source)
        self.tally = ray.get_actor(tally_name, namespace=TALLY_NAMESPACE)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from opens2s.model.records import RecordError, parse_record

        ids: list[str] = []
        samples: list[bytes] = []
        for line in batch["text"]:
            line = str(line).strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                self.tally.add.remote(f"line:{line[:40]}", "invalid_json", str(e))
                continue
            record_id = str(obj.get("id", "")) if isinstance(obj, dict) else ""
            try:
                record = parse_record(
                    obj, record_id=record_id, unit_vocab_size=self.unit_vocab_size
                )
                sample = self.encoder.encode(record)
            except RecordError as e:
                self.tally.add.remote(record_id, _reason(e), str(e))
                continue
            ids.append(record_id)
            samples.append(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
        return {"id": np.array(ids, dtype=object), "sample": np.array(samples, dtype=object)}


def _reason(error: Exception) -> str:
    """The error's kind, e.g. ``MissingAudioError`` (its message holds the details)."""
    return type(error).__name__


def corpus_dataset(
    corpus: str, source: ModelSection, tally_name: str, *, encode_cpus: float = 0.5
) -> ray.data.Dataset:
    """The corpus as a Ray Dataset of encoded samples, in shard order.

    Encoding runs in one actor (``encode_cpus`` CPUs) that the training workers' shards stream
    from; bad records are dropped there and tallied in the actor named ``tally_name``.
    """
    paths = shard_paths(corpus)
    fs, fs_paths = (None, paths)
    if storage.is_s3(corpus):
        fs, _ = storage.pyarrow_filesystem(corpus)
        fs_paths = [storage.pyarrow_filesystem(p)[1] for p in paths]
    ds = ray.data.read_text(fs_paths, filesystem=fs, override_num_blocks=len(paths))
    return ds.map_batches(
        EncodeRecords,
        fn_constructor_kwargs={"source": source, "corpus": corpus, "tally_name": tally_name},
        batch_size=8,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=1),
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
    shard: ray.data.DataIterator, micro_batch_size: int, skip: int = 0
) -> Iterator[dict[str, Any]]:
    """One epoch of a worker's shard as collated micro-batches, skipping the first ``skip``.

    ``drop_last`` keeps every worker at the same number of micro-batches, so no rank waits on a
    collective the others never enter.
    """
    batches = shard.iter_batches(
        batch_size=micro_batch_size,
        batch_format="numpy",
        drop_last=True,
        prefetch_batches=1,
    )
    for index, batch in enumerate(batches):
        if index < skip:
            continue
        yield collate_rows(batch)
