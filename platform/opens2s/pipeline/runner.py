"""Run pipeline steps in this process on the connected Ray cluster, skipping finished ones.

Used by ``opens2s pipeline`` (local Ray) and by ``jobs/pipeline.py`` (inside a Ray job, one or a
few steps per job). A step is skipped when its outputs exist, unless an earlier step of this run
ran (its outputs would be stale); every step's outcome goes to ``<run_dir>/pipeline.json``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from opens2s import storage
from opens2s.config import PlatformConfig
from opens2s.config.train import STAGE_ORDER
from opens2s.pipeline import steps as st
from opens2s.pipeline.manifest import RunManifest
from opens2s.pipeline.plan import STEPS, not_needed, served_config

TRAIN_STEPS = STAGE_ORDER
# A part of the platform not installed yet, even when the import happened in a Ray worker.
_MISSING_PART = re.compile(r"No module named '(opens2s\.[\w.]+)'")


class PipelineError(RuntimeError):
    """A step failed or could not run; the manifest says which and why."""

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"pipeline step {step!r}: {message}")


def step_outputs(cfg: PlatformConfig, name: str, manifest: RunManifest) -> dict[str, str]:
    """The outputs a step makes (URIs), known before it runs."""
    if name == "units":
        return st.units_outputs(cfg)
    if name == "corpus":
        return st.corpus_outputs(cfg)
    if name == "continuation":
        return st.continuation_outputs(cfg)
    if name in TRAIN_STEPS:
        return st.stage_outputs(cfg, name, manifest)
    if name == "export":
        return st.export_outputs(cfg)
    if name == "serve":
        return {"url": st.serve_url(served_config(cfg))}
    if name == "eval":
        return st.eval_outputs(cfg)
    return st.turn_outputs(cfg)


def outputs_exist(cfg: PlatformConfig, name: str, manifest: RunManifest) -> bool:
    """Whether a step's outputs are already there (the step can be skipped)."""
    if name == "units":
        return storage.exists(st.units_outputs(cfg)["tokenizer"])
    if name == "corpus":
        return storage.exists(st.corpus_outputs(cfg)["summary"])
    if name == "continuation":
        return storage.exists(st.continuation_outputs(cfg)["summary"])
    if name in TRAIN_STEPS:
        rec = manifest.steps[name]
        if rec.status not in ("done", "skipped"):
            return False
        outs = st.stage_outputs(cfg, name, manifest)
        return storage.exists(outs["metrics"]) and (
            "model" not in outs or storage.exists(storage.join(outs["model"], st.MODEL_CONFIG))
        )
    if name == "export":
        return storage.exists(storage.join(st.model_dir(cfg), st.MODEL_CONFIG))
    if name == "serve":
        return st.serve_running(served_config(cfg))
    if name == "eval":
        return storage.exists(st.eval_outputs(cfg)["result"])
    return storage.exists(st.turn_outputs(cfg)["result"])


def _run_step(cfg: PlatformConfig, name: str, manifest: RunManifest, log) -> st.StepResult:
    if name == "units":
        return st.run_units(cfg, log)
    if name == "corpus":
        return st.run_corpus(cfg, log)
    if name == "continuation":
        return st.run_continuation(cfg, log)
    if name in TRAIN_STEPS:
        return st.run_stage(cfg, name, manifest, log)
    if name == "export":
        return st.run_export(cfg, manifest, log)
    if name == "serve":
        return st.run_serve(cfg, log)
    if name == "eval":
        return st.run_eval_step(cfg, manifest, log)
    from opens2s.pipeline.spoken_turn import run_turn

    url = manifest.steps["serve"].outputs.get("url") or st.serve_url(served_config(cfg))
    result = run_turn(cfg, url, st.corpus_root(cfg), st.turn_dir(cfg))
    return st.StepResult(st.turn_outputs(cfg), result)


def _turn_detail_for_manifest(detail: dict[str, Any]) -> dict[str, Any]:
    """The spoken test's summary as the manifest keeps it (rows without corpus audio URIs)."""

    def row(r: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if r is None else {k: v for k, v in r.items() if k != "question_audio"}

    return {
        **detail,
        "questions": [row(r) for r in detail.get("questions", [])],
        "held_out": row(detail.get("held_out")),
    }


def run_steps(
    cfg: PlatformConfig,
    names: Sequence[str] = STEPS,
    *,
    force: bool = False,
    log=print,
) -> RunManifest:
    """Run ``names`` (pipeline order) on the connected Ray cluster; returns the manifest.

    ``force`` runs the first step even when its outputs exist (an earlier step was redone).
    Raises :class:`PipelineError` when a step fails or its part is not installed; the manifest
    then records the step as ``failed`` / ``missing`` and later steps as ``missing``.
    """
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ValueError(f"unknown pipeline steps {unknown}; steps are {', '.join(STEPS)}")
    manifest = RunManifest.load(cfg.run_dir)
    ordered = [n for n in STEPS if n in names]
    stale = force
    for i, name in enumerate(ordered):
        reason = not_needed(cfg, name)
        if reason:
            manifest.record(name, "skipped", outputs={}, detail={"reason": reason})
            log(f"[{name}] nothing to do: {reason} (train.stages {list(cfg.train.stages)})")
            continue
        if (
            name == "serve"
            and "turn" in ordered
            and not stale
            and outputs_exist(cfg, "turn", manifest)
        ):
            manifest.record(name, "skipped", detail={"reason": "the test turn is already done"})
            log("[serve] skipped: the test turn is already done, nothing to serve it for")
            continue
        if not stale and outputs_exist(cfg, name, manifest):
            outs = step_outputs(cfg, name, manifest)
            detail = st.corpus_detail(cfg) if name == "corpus" else None
            manifest.record(name, "skipped", outputs=outs, detail=detail)
            log(f"[{name}] skipped: outputs already there ({', '.join(outs.values())})")
            continue
        log(f"[{name}] running ...")
        t0 = time.perf_counter()
        try:
            result = _run_step(cfg, name, manifest, log)
        except Exception as e:
            if not isinstance(e, st.StepUnavailable):
                missing = _MISSING_PART.search(str(e))
                if missing is None:
                    manifest.record(
                        name,
                        "failed",
                        seconds=time.perf_counter() - t0,
                        error=f"{type(e).__name__}: {e}",
                    )
                    raise PipelineError(name, f"failed: {type(e).__name__}: {e}") from e
                e = st.StepUnavailable(f"{missing.group(1)} is not installed")
            manifest.record(name, "missing", outputs={}, detail={}, error=str(e))
            for later in ordered[i + 1 :]:
                manifest.record(
                    later, "missing", outputs={}, detail={}, error=f"needs step {name!r}"
                )
            raise PipelineError(name, f"missing: {e}") from e
        detail = _turn_detail_for_manifest(result.detail) if name == "turn" else result.detail
        seconds = time.perf_counter() - t0
        manifest.record(name, "done", outputs=result.outputs, detail=detail, seconds=seconds)
        log(f"[{name}] done in {seconds:.1f} s")
        stale = True  # everything after a redone step is redone too
    return manifest
