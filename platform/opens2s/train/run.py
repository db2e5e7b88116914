"""Driver side of training: one Ray Train ``TorchTrainer`` per stage, then export and a summary.

For each stage in ``train.stages``: build the corpus dataset (Ray Data, encoded samples), start
``num_workers`` workers running :func:`~opens2s.train.loop.train_loop_per_worker`, let Ray Train
restart them from the latest checkpoint when one dies (``max_failures``), plot the loss curves,
and export the final checkpoint (the next stage starts from it; the last one lands in
``<run_dir>/model``).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from opens2s import storage
from opens2s.config import PlatformConfig
from opens2s.config.model import ModelSection
from opens2s.config.train import Stage
from opens2s.train import checkpoints
from opens2s.train.data import close_error_tally, corpus_dataset, create_error_tally
from opens2s.train.export import export_checkpoint
from opens2s.train.loop import KillWorker, LoopConfig, train_loop_per_worker
from opens2s.train.metrics import plot_losses, read_metrics


@dataclass
class StageSummary:
    """What one stage did and where its outputs went."""

    stage: str
    steps: int
    first_loss: dict[str, float]
    final_loss: dict[str, float]
    seconds: float
    checkpoint: str
    metrics: str
    plot: str
    skipped_records: dict[str, int]
    resumed_from: list[int] = field(default_factory=list)
    """Steps that restarted attempts resumed from (empty when no worker failed)."""
    export: str | None = None


@dataclass
class TrainSummary:
    """The whole training run: its stages and the exported model directory."""

    stages: list[StageSummary]
    model_dir: str | None
    seconds: float

    def render(self) -> str:
        """A few human-readable lines."""
        lines = []
        for s in self.stages:
            f, z = s.first_loss, s.final_loss
            lines.append(
                f"stage {s.stage}: {s.steps} steps in {s.seconds:.1f} s; loss "
                f"{f.get('loss', float('nan')):.4f} -> {z.get('loss', float('nan')):.4f} "
                f"(llm {z.get('llm_loss', float('nan')):.4f}, "
                f"tts {z.get('tts_loss', float('nan')):.4f})"
            )
            if s.resumed_from:
                lines.append(f"  resumed after worker failure from step(s) {s.resumed_from}")
            if s.skipped_records:
                lines.append(f"  skipped bad records by reason: {s.skipped_records}")
            lines.append(f"  checkpoint {s.checkpoint}")
            lines.append(f"  metrics {s.metrics}, plot {s.plot}")
        lines.append(f"model exported to {self.model_dir}" if self.model_dir else "no export")
        lines.append(f"total {self.seconds:.1f} s")
        return "\n".join(lines)


def _absolute(uri: str) -> str:
    """A local path made absolute (Ray workers do not share the driver's working directory)."""
    return uri if storage.is_s3(uri) else str(Path(uri).resolve())


def _with_absolute_paths(cfg: PlatformConfig) -> PlatformConfig:
    """``cfg`` with a local run_dir, corpus and initial checkpoint as absolute paths."""
    train = cfg.train.model_copy(update={"corpus": _absolute(corpus_uri(cfg))})
    model = cfg.model
    if model.checkpoint:
        model = model.model_copy(update={"checkpoint": _absolute(model.checkpoint)})
    return cfg.model_copy(
        update={"run_dir": _absolute(cfg.run_dir), "train": train, "model": model}
    )


def stage_dir(cfg: PlatformConfig, stage: str) -> str:
    """``<run_dir>/train/<stage>``: Ray Train's run directory for the stage."""
    return storage.join(cfg.run_dir, "train", stage)


def corpus_uri(cfg: PlatformConfig) -> str:
    """The dialogue corpus training reads: ``train.corpus``, else where the corpus job writes it
    (``data.output.uri``, else ``<run_dir>/corpus``)."""
    return cfg.train.corpus or cfg.corpus_uri()


def stage_corpus_uri(cfg: PlatformConfig, stage: Stage) -> str:
    """The corpus ``stage`` reads: its ``train.stage_settings`` corpus, else the continuation
    corpus for ``understand`` (speech in, continued text out) and the dialogue corpus for the
    others (``speak`` learns from its assistant speech, align and finetune from all of it)."""
    own = cfg.train.stage_corpus(stage)
    if own:
        return own
    if stage == "understand":
        return cfg.continuation_uri()
    return corpus_uri(cfg)


def run_training(cfg: PlatformConfig, *, kill: KillWorker | None = None) -> TrainSummary:
    """Train every stage of ``cfg.train.stages`` in order; returns the summary.

    Uses the connected Ray cluster (``RAY_ADDRESS`` under ``ray job submit``), else starts an
    embedded local one (never attaches to another cluster that happens to run on this machine). ``kill`` injects a worker failure into
    the first stage (tests, drills).
    """
    if not ray.is_initialized():
        # ray.train.report costs ~2 s a call at Ray's default health-check interval.
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local")
    t0 = time.perf_counter()
    cfg = _with_absolute_paths(cfg)
    source = cfg.model
    summaries = []
    model_dir = None
    for index, stage in enumerate(cfg.train.stages):
        last = index == len(cfg.train.stages) - 1
        summary = fit_stage(cfg, stage, source, kill=kill if index == 0 else None)
        out = (
            storage.join(cfg.run_dir, "model")
            if last
            else storage.join(stage_dir(cfg, stage), "model")
        )
        if cfg.train.export or not last:
            summary.export = export_checkpoint(summary.checkpoint, out, units_from=corpus_uri(cfg))
            print(f"[train:{stage}] exported {summary.export}", flush=True)
            source = cfg.model.model_copy(update={"checkpoint": summary.export})
            if last:
                model_dir = summary.export
        summaries.append(summary)
    return TrainSummary(summaries, model_dir, time.perf_counter() - t0)


def fit_stage(
    cfg: PlatformConfig, stage: Stage, source: ModelSection, *, kill: KillWorker | None = None
) -> StageSummary:
    """Run one stage on Ray Train; resumes from the stage's latest checkpoint if one exists."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = _with_absolute_paths(cfg)
    if source.checkpoint:
        source = source.model_copy(update={"checkpoint": _absolute(source.checkpoint)})
    train = cfg.train.for_stage(stage)
    out_dir = stage_dir(cfg, stage)
    metrics_uri = storage.join(out_dir, "metrics.jsonl")
    tally_name = f"record-errors-{stage}-{uuid.uuid4().hex[:8]}"
    tally = create_error_tally(tally_name)
    t0 = time.perf_counter()
    forgot = checkpoints.forget_missing(out_dir, say=lambda line: print(f"[train:{stage}] {line}"))
    try:
        dataset = corpus_dataset(stage_corpus_uri(cfg, stage), source, cfg.audio, tally_name)
        if train.materialize_corpus:
            dataset = dataset.materialize()
        fs, storage_path = storage.pyarrow_filesystem(storage.join(cfg.run_dir, "train"))
        execution = DataConfig.default_ingest_options()
        # Same rows to the same worker in the same order on every run and every restart: the
        # data position saved in a checkpoint then means the same thing after a resume.
        execution.preserve_order = True
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "loop": LoopConfig(
                    train,
                    stage,
                    source,
                    cfg.audio,
                    metrics_uri,
                    kill,
                    checkpoints_uri=out_dir,
                    resume_from_stored=bool(forgot),
                ),
            },
            scaling_config=ScalingConfig(
                num_workers=train.num_workers,
                use_gpu=train.use_gpu,
                resources_per_worker={"CPU": train.cpus_per_worker},
            ),
            torch_config=TorchConfig(backend="nccl" if train.use_gpu else "gloo"),
            run_config=RunConfig(
                name=stage,
                storage_path=storage_path,
                storage_filesystem=fs,
                failure_config=FailureConfig(max_failures=train.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=train.keep_last),
            ),
            datasets={"train": dataset},
            dataset_config=DataConfig(execution_options=execution, enable_shard_locality=False),
        )
        result = trainer.fit()
    finally:
        skipped = close_error_tally(tally)
    if result.checkpoint is None:
        raise RuntimeError(f"stage {stage} finished without a checkpoint in {out_dir}")
    rows = read_metrics(metrics_uri)
    plot = plot_losses(rows, storage.join(out_dir, "loss.png"), title=f"OpenS2S {stage}")
    ckpt_uri = _checkpoint_uri(result.checkpoint, cfg.run_dir)
    losses = ("loss", "llm_loss", "tts_loss")
    return StageSummary(
        stage=stage,
        steps=int(rows[-1]["step"]) if rows else 0,
        first_loss={k: rows[0][k] for k in losses} if rows else {},
        final_loss={k: rows[-1][k] for k in losses} if rows else {},
        seconds=time.perf_counter() - t0,
        checkpoint=ckpt_uri,
        metrics=metrics_uri,
        plot=plot,
        skipped_records=skipped,
        resumed_from=sorted({r["start_step"] for r in rows if r.get("start_step", 0) > 0}),
    )


def _checkpoint_uri(checkpoint: Any, run_dir: str) -> str:
    """A Ray checkpoint's location as a URI like the run dir's (s3:// or local path)."""
    if storage.is_s3(run_dir):
        return f"s3://{checkpoint.path}"
    return str(checkpoint.path)
