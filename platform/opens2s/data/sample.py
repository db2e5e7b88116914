"""One dialogue as it moves through the corpus stages, and its row form for Ray Data.

Every stage takes and returns ``list[Sample]``. A sample that fails a stage is not removed: it is
marked dropped with the stage's name and the reason, later stages pass it through untouched, and
the output stage writes it to the quarantine manifest. So no sample is ever lost silently.

In a Ray Dataset a sample is one row with a fixed set of columns (``id``, ``shard``, ``index``,
``dropped``, ``sample`` as JSON text, ``waves`` as npz bytes), so blocks from different stages and
workers always share one schema.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Scenario:
    """What a dialogue is about and who speaks it."""

    emotion: str
    intensity: float
    situation: str
    persona: str
    speaker: str
    exchanges: int
    lexically_neutral: bool = False
    """The user's words carry no emotion: only the voice tells it (a minimal-pair member)."""
    pair: int = -1
    """The minimal pair this dialogue belongs to (same user words, other emotions); -1: none."""


@dataclass
class Turn:
    """One turn of a dialogue; ``audio`` is relative to the corpus root once written."""

    role: str
    text: str
    audio: str = ""
    seconds: float = 0.0
    units: list[int] = field(default_factory=list)


@dataclass
class Sample:
    """A dialogue sample: scenario, script turns, rendered waves, unit ids, checks, fate."""

    id: str
    index: int
    shard: int
    scenario: Scenario
    turns: list[Turn] = field(default_factory=list)
    writer: str = ""
    attempts: int = 0
    sample_rate: int = 0
    checks: dict[str, float] = field(default_factory=dict)
    dropped_stage: str = ""
    dropped_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds each stage spent on this sample (its share of the stage's batch time)."""
    waves: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    """Rendered audio per turn index (float32 at ``sample_rate``); not part of the JSON form."""

    @property
    def ok(self) -> bool:
        """True while no stage has quarantined this sample."""
        return not self.dropped_stage

    def drop(self, stage: str, reason: str) -> None:
        """Quarantine this sample: ``stage`` that refused it and a reason a person can act on."""
        if self.ok:
            self.dropped_stage = stage
            self.dropped_reason = reason
            self.waves = {}

    def to_json(self) -> dict[str, Any]:
        """Everything except the waves, as plain JSON-ready values."""
        d = asdict(self)
        d.pop("waves")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sample:
        """Inverse of :meth:`to_json`."""
        d = dict(d)
        d["scenario"] = Scenario(**d["scenario"])
        d["turns"] = [Turn(**t) for t in d.get("turns", [])]
        return cls(**d)


def sample_id(seed: int, index: int) -> str:
    """Deterministic id of sample ``index`` of a corpus seeded with ``seed``."""
    digest = hashlib.sha1(f"opens2s-corpus:{seed}:{index}".encode()).hexdigest()[:8]
    return f"d{index:07d}-{digest}"


def _waves_to_bytes(waves: dict[int, np.ndarray]) -> bytes:
    if not waves:
        return b""
    buf = io.BytesIO()
    np.savez(buf, **{str(k): np.asarray(v, dtype=np.float32) for k, v in waves.items()})
    return buf.getvalue()


def _waves_from_bytes(data: bytes | None) -> dict[int, np.ndarray]:
    if not data:
        return {}
    with np.load(io.BytesIO(data)) as z:
        return {int(k): z[k] for k in z.files}


ROW_COLUMNS = ("id", "shard", "index", "dropped", "sample", "waves")


def to_row(s: Sample) -> dict[str, Any]:
    """The Ray Data row of a sample (fixed columns, see the module docstring)."""
    return {
        "id": s.id,
        "shard": s.shard,
        "index": s.index,
        "dropped": s.dropped_stage,
        "sample": json.dumps(s.to_json()),
        "waves": _waves_to_bytes(s.waves),
    }


def from_row(row: dict[str, Any]) -> Sample:
    """The sample held by a Ray Data row."""
    s = Sample.from_json(json.loads(row["sample"]))
    s.waves = _waves_from_bytes(row.get("waves"))
    return s


def batch_to_samples(batch: dict[str, Any]) -> list[Sample]:
    """A Ray Data batch (numpy format: column -> array) as samples."""
    n = len(batch["id"])
    return [from_row({c: batch[c][i] for c in ("sample", "waves")}) for i in range(n)]


def samples_to_batch(samples: list[Sample]) -> dict[str, Any]:
    """Samples as a Ray Data batch with the fixed row columns."""
    rows = [to_row(s) for s in samples]
    batch: dict[str, Any] = {}
    for c in ROW_COLUMNS:
        values = [r[c] for r in rows]
        if c in ("shard", "index"):
            batch[c] = np.asarray(values, dtype=np.int64)
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            batch[c] = arr
    return batch
