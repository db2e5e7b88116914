"""The pipeline's steps: each knows its outputs, whether they already exist, and how to make them
by calling the public functions of the part that owns the work (data, train, serving, audio).

A part that is not installed makes its step raise :class:`StepUnavailable`; the runner records
that step as ``missing`` in the run manifest instead of failing obscurely.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opens2s import storage
from opens2s.config import PlatformConfig
from opens2s.pipeline.manifest import RunManifest
from opens2s.pipeline.plan import served_config

Log = Callable[[str], None]
UNIT_TOKENIZER = "units/tokenizer.npz"
CORPUS_SUMMARY = "summary.json"
MODEL_CONFIG = "config.json"


class StepUnavailable(RuntimeError):
    """The part that does this step's work is not installed (not landed yet, or an extra)."""


@dataclass
class StepResult:
    """A step's outputs (name → URI) and a few facts about them."""

    outputs: dict[str, str]
    detail: dict[str, Any] = field(default_factory=dict)


def _need(module: str, *names: str) -> list[Any]:
    """Import ``names`` from ``module`` or say which part is missing."""
    import importlib

    try:
        mod = importlib.import_module(module)
        return [getattr(mod, n) for n in names]
    except (ImportError, AttributeError) as e:
        raise StepUnavailable(f"{module}.{'/'.join(names)} is not available: {e}") from e


def corpus_root(cfg: PlatformConfig) -> str:
    """Where the corpus lives: ``data.output.uri`` or ``<run_dir>/corpus``."""
    return cfg.corpus_uri()


def model_dir(cfg: PlatformConfig) -> str:
    """The exported model: ``<run_dir>/model``."""
    return storage.join(cfg.run_dir, "model")


def turn_dir(cfg: PlatformConfig) -> str:
    """The spoken test turn's files: ``<run_dir>/turn``."""
    return storage.join(cfg.run_dir, "turn")


# ---- units and corpus ---------------------------------------------------------------------------


def units_outputs(cfg: PlatformConfig) -> dict[str, str]:
    """The unit tokenizer the corpus's speech units come from."""
    return {
        "tokenizer": cfg.data.units.tokenizer_path or storage.join(corpus_root(cfg), UNIT_TOKENIZER)
    }


def run_units(cfg: PlatformConfig, log: Log) -> StepResult:
    """Fit the k-means unit tokenizer on a sample of rendered assistant speech (a Ray job)."""
    (ensure,) = _need("opens2s.data.pipeline", "ensure_unit_tokenizer")
    (resolve,) = _need("opens2s.data.scenarios", "resolve_scenario_settings")
    scen = resolve(cfg.data.scenarios, audio=cfg.audio)
    uri = ensure(cfg, scen, corpus_root(cfg), log)
    return StepResult({"tokenizer": uri}, {"codebook_size": cfg.audio.codebook_size})


def corpus_outputs(cfg: PlatformConfig) -> dict[str, str]:
    """The corpus root and its summary (written last, so it marks a complete corpus)."""
    root = corpus_root(cfg)
    return {"corpus": root, "summary": storage.join(root, CORPUS_SUMMARY)}


_CORPUS_FACTS = (
    "dialogues_planned",
    "dialogues_written",
    "dialogues_quarantined",
    "shards",
    "hours",
    "per_emotion",
    "drops_by_reason",
)


def corpus_detail(cfg: PlatformConfig) -> dict[str, Any]:
    """The headline numbers of the corpus's ``summary.json`` (empty when there is none)."""
    uri = corpus_outputs(cfg)["summary"]
    if not storage.exists(uri):
        return {}
    summary = json.loads(storage.read_text(uri))
    return {k: summary[k] for k in _CORPUS_FACTS if k in summary}


def run_corpus(cfg: PlatformConfig, log: Log) -> StepResult:
    """Build the speech-dialogue corpus with Ray Data (finishes a partly built one)."""
    (build_corpus,) = _need("opens2s.data.pipeline", "build_corpus")
    build_corpus(cfg, log=log)
    return StepResult(corpus_outputs(cfg), corpus_detail(cfg))


def continuation_outputs(cfg: PlatformConfig) -> dict[str, str]:
    """The continuation corpus root and its summary (written last: a complete corpus)."""
    root = cfg.continuation_uri()
    return {"corpus": root, "summary": storage.join(root, CORPUS_SUMMARY)}


def run_continuation(cfg: PlatformConfig, log: Log) -> StepResult:
    """Build the speech-understanding corpus: speech in, the text an LLM continued from its
    transcript out (from ``continuation.manifest``, else the dialogue corpus's user turns)."""
    (build_continuation,) = _need("opens2s.data.continuation", "build_continuation")
    build_continuation(cfg, log=log)
    outputs = continuation_outputs(cfg)
    summary = json.loads(storage.read_text(outputs["summary"]))
    keep = ("utterances", "records_written", "quarantined", "shards", "backend")
    return StepResult(outputs, {k: summary[k] for k in keep if k in summary})


# ---- training -----------------------------------------------------------------------------------


def stage_outputs(cfg: PlatformConfig, stage: str, manifest: RunManifest) -> dict[str, str]:
    """A training stage's outputs: its final checkpoint, metrics and loss plot; a stage that
    another follows also exports the model the next stage starts from."""
    base = storage.join(cfg.run_dir, "train", stage)
    out = {
        "metrics": storage.join(base, "metrics.jsonl"),
        "loss_plot": storage.join(base, "loss.png"),
    }
    checkpoint = manifest.steps[stage].outputs.get("checkpoint")
    out["checkpoint"] = checkpoint or storage.join(base, "<not trained yet>")
    if _next_stage(cfg, stage):
        out["model"] = storage.join(base, "model")
    return out


def _next_stage(cfg: PlatformConfig, stage: str) -> str | None:
    stages = list(cfg.train.stages)
    i = stages.index(stage)
    return stages[i + 1] if i + 1 < len(stages) else None


def _stage_source(cfg: PlatformConfig, stage: str, manifest: RunManifest):
    """What a stage starts from: the previous stage's export, else the ``model`` section."""
    stages = list(cfg.train.stages)
    i = stages.index(stage)
    if i == 0:
        return cfg.model
    prev = manifest.steps[stages[i - 1]].outputs.get("model") or storage.join(
        cfg.run_dir, "train", stages[i - 1], "model"
    )
    return cfg.model.model_copy(update={"checkpoint": prev})


def run_stage(cfg: PlatformConfig, stage: str, manifest: RunManifest, log: Log) -> StepResult:
    """Train one stage with Ray Train + DeepSpeed; export it when another stage follows."""
    fit_stage, export_checkpoint = _need("opens2s.train.run", "fit_stage", "export_checkpoint")
    from opens2s.pipeline.progress import StageProgress

    metrics = stage_outputs(cfg, stage, manifest)["metrics"]
    with StageProgress(metrics, cfg.train.for_stage(stage).max_steps, stage, log):
        summary = fit_stage(cfg, stage, _stage_source(cfg, stage, manifest))
    outputs = {
        "checkpoint": summary.checkpoint,
        "metrics": summary.metrics,
        "loss_plot": summary.plot,
    }
    if _next_stage(cfg, stage):
        out = storage.join(cfg.run_dir, "train", stage, "model")
        outputs["model"] = export_checkpoint(summary.checkpoint, out, units_from=corpus_root(cfg))
    log(
        f"[{stage}] {summary.steps} steps in {summary.seconds:.1f} s, loss "
        f"{summary.first_loss.get('loss', float('nan')):.3f} -> "
        f"{summary.final_loss.get('loss', float('nan')):.3f}"
    )
    detail = {
        "steps": summary.steps,
        "first_loss": summary.first_loss,
        "final_loss": summary.final_loss,
        "skipped_records": summary.skipped_records,
    }
    return StepResult(outputs, detail)


def export_outputs(cfg: PlatformConfig) -> dict[str, str]:
    """The ``from_pretrained`` model directory."""
    return {"model": model_dir(cfg)}


def run_export(cfg: PlatformConfig, manifest: RunManifest, log: Log) -> StepResult:
    """Export the last stage's final checkpoint as a ``from_pretrained`` dir (+ unit tokenizer)."""
    (export_checkpoint,) = _need("opens2s.train.export", "export_checkpoint")
    last = cfg.train.stages[-1]
    checkpoint = manifest.steps[last].outputs.get("checkpoint")
    if not checkpoint or not storage.exists(checkpoint):
        raise RuntimeError(
            f"export needs the {last} stage's checkpoint, but the manifest has {checkpoint!r}; "
            f"rerun the {last} step"
        )
    out = export_checkpoint(checkpoint, model_dir(cfg), units_from=corpus_root(cfg))
    files = sorted(p.rsplit("/", 1)[-1] for p in storage.list_prefix(out))
    return StepResult({"model": out}, {"from_checkpoint": checkpoint, "files": files[:20]})


# ---- serving and the spoken test turn -----------------------------------------------------------


def serve_url(cfg: PlatformConfig, port: int | None = None) -> str:
    """The HTTP base URL of the Serve app (route prefix included, no trailing slash)."""
    s = cfg.serve
    host = "127.0.0.1" if s.host in ("0.0.0.0", "") else s.host
    return f"http://{host}:{port or s.port}{s.route_prefix.rstrip('/')}"


def _serve_http_port(default: int) -> int:
    """The port Serve's HTTP proxies listen on in this Ray cluster (it may have been started
    earlier with other options); the config's port when Serve cannot tell."""
    try:
        from ray.serve.context import _get_global_client  # no public getter in Ray 2.60

        return int(_get_global_client().http_config.port)
    except Exception:
        return default


def run_serve(cfg: PlatformConfig, log: Log) -> StepResult:
    """Deploy the Serve app on the exported model and wait until it answers /healthz."""
    (build_app,) = _need("opens2s.serving.app", "build_app")
    from ray import serve

    served = served_config(cfg)
    s = served.serve
    serve.start(http_options={"host": s.host, "port": s.port})
    serve.run(build_app(served), name=s.app_name, route_prefix=s.route_prefix, blocking=False)
    url = serve_url(served, _serve_http_port(s.port))
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=10) as r:
                health = json.loads(r.read())
            break
        except OSError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Serve app at {url} did not become healthy: {e}") from e
            time.sleep(1.0)
    log(f"[serve] {s.app_name} on {url} (model {s.model_dir})")
    return StepResult({"url": url}, {"app": s.app_name, "model_dir": s.model_dir, "health": health})


def serve_running(cfg: PlatformConfig) -> bool:
    """Whether the app already runs on the connected Ray cluster."""
    try:
        from ray import serve

        status = serve.status().applications.get(cfg.serve.app_name)
    except Exception:
        return False
    return status is not None and str(status.status).endswith("RUNNING")


def eval_outputs(cfg: PlatformConfig) -> dict[str, str]:
    """The eval's summary (written last), report and distributions plot."""
    d = storage.join(cfg.run_dir, "eval")
    return {
        "result": storage.join(d, "eval.json"),
        "report": storage.join(d, "report.md"),
        "plot": storage.join(d, "distributions.png"),
    }


def run_eval_step(cfg: PlatformConfig, manifest: RunManifest, log: Log) -> StepResult:
    """Evaluate the exported model on the eval set (a Ray Data job; docs/eval.md)."""
    run_eval, eval_dir = _need("opens2s.evaluation.job", "run_eval", "eval_dir")
    model = manifest.steps["export"].outputs.get("model") or model_dir(cfg)
    result = run_eval(cfg, model, eval_dir(cfg), log=log, table=False)
    detail = {k: result[k] for k in ("eval_set", "seconds", "summary")}
    detail["failed_items"] = result["failed_items"][:20]
    return StepResult(eval_outputs(cfg), detail)


def turn_outputs(cfg: PlatformConfig) -> dict[str, str]:
    """The spoken test's summary (written last), its folder (``q<i>/question.wav``,
    ``answer.wav``, ``answer.json``, ``reference_vocoded.wav``; ``held_out/``) and question 1's
    files."""
    d = turn_dir(cfg)
    return {
        "result": storage.join(d, "summary.json"),
        "answers": d,
        "question": storage.join(d, "q1", "question.wav"),
        "answer": storage.join(d, "q1", "answer.wav"),
        "reference_vocoded": storage.join(d, "q1", "reference_vocoded.wav"),
    }
