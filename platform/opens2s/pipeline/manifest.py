"""The run manifest ``<run_dir>/pipeline.json``: what each pipeline step did and where its outputs are.

A step's record says whether it ran (``done``), found its outputs already there (``skipped``),
could not run because the part providing it is not installed (``missing``) or failed
(``failed``), plus its output URIs, timing and a few numbers (counts, losses, TTFA ...).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from opens2s import storage
from opens2s.pipeline.plan import STEPS

MANIFEST_FILE = "pipeline.json"
Status = Literal["pending", "done", "skipped", "missing", "failed"]


@dataclass
class StepRecord:
    """What one step did."""

    name: str
    status: Status = "pending"
    outputs: dict[str, str] = field(default_factory=dict)
    """Output name → URI (local path or s3://)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """A few numbers and facts about the outputs (counts, losses, transcript, TTFA)."""
    seconds: float | None = None
    finished_at: str | None = None
    error: str | None = None
    ray_job_id: str | None = None
    """The Ray job that ran the step (``--address`` mode)."""


@dataclass
class RunManifest:
    """All steps of one run_dir, in pipeline order."""

    run_dir: str
    steps: dict[str, StepRecord] = field(default_factory=dict)
    mode: str = "local"
    """"local" (in-process Ray) or "jobs" (Ray Jobs API on an existing cluster)."""
    address: str | None = None

    def __post_init__(self) -> None:
        for name in STEPS:
            self.steps.setdefault(name, StepRecord(name))

    @property
    def uri(self) -> str:
        """Where the manifest lives."""
        return storage.join(self.run_dir, MANIFEST_FILE)

    def record(
        self,
        name: str,
        status: Status,
        *,
        outputs: dict[str, str] | None = None,
        detail: dict[str, Any] | None = None,
        seconds: float | None = None,
        error: str | None = None,
        ray_job_id: str | None = None,
    ) -> StepRecord:
        """Set a step's record and save the manifest (so an interrupted run keeps what it did)."""
        old = self.steps[name]
        rec = StepRecord(
            name,
            status,
            outputs=dict(outputs if outputs is not None else old.outputs),
            detail=dict(detail if detail is not None else old.detail),
            seconds=seconds,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            error=error,
            ray_job_id=ray_job_id if ray_job_id is not None else old.ray_job_id,
        )
        self.steps[name] = rec
        self.save()
        return rec

    def to_json(self) -> str:
        """The manifest as indented JSON."""
        body = {
            "run_dir": self.run_dir,
            "mode": self.mode,
            "address": self.address,
            "steps": [asdict(self.steps[n]) for n in STEPS],
        }
        return json.dumps(body, indent=2, sort_keys=False)

    def save(self) -> str:
        """Write ``pipeline.json`` atomically; returns its URI."""
        return storage.write_text(self.uri, self.to_json() + "\n")

    @classmethod
    def load(cls, run_dir: str) -> RunManifest:
        """The run_dir's manifest, or a fresh one when there is none yet."""
        uri = storage.join(run_dir, MANIFEST_FILE)
        if not storage.exists(uri):
            return cls(run_dir)
        raw = json.loads(storage.read_text(uri))
        steps = {s["name"]: StepRecord(**s) for s in raw.get("steps", []) if s["name"] in STEPS}
        return cls(run_dir, steps, raw.get("mode", "local"), raw.get("address"))
