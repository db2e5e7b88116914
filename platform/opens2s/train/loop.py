"""The training loop that runs in every Ray Train worker.

Read top to bottom, one worker does: build the model (preset or saved directory), freeze what the
stage does not train, wrap it in DeepSpeed, restore the latest checkpoint if Ray Train hands one
over (step, optimizer, scheduler, data position), then for each micro-batch of its data shard:
forward, backward, step; every optimizer step it reports metrics, every ``checkpoint_every`` steps
and at the end it saves its ZeRO shard and reports the checkpoint.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from opens2s import storage
from opens2s.config.audio import AudioSection
from opens2s.config.model import ModelSection
from opens2s.config.train import Stage, TrainSection
from opens2s.model.records import to_device
from opens2s.train import checkpoints
from opens2s.train.data import iter_micro_batches
from opens2s.train.deepspeed_config import (
    WarmupLinearDecay,
    deepspeed_config,
    skip_shm_comm_build,
)
from opens2s.train.metrics import MetricsLog
from opens2s.train.model_source import build_initial_model
from opens2s.train.stages import (
    add_lora,
    apply_stage,
    enable_gradient_checkpointing,
    stage_lora,
)

NOT_INPUTS = ("ids",)
"""Batch keys that are not model inputs (record ids, kept for debugging)."""


@dataclass(frozen=True)
class KillWorker:
    """Fault injection for tests and drills: SIGKILL rank ``rank``'s process after ``step``.

    Only on the first attempt: the marker file records that the kill happened.
    """

    rank: int
    step: int
    marker: str


@dataclass(frozen=True)
class LoopConfig:
    """Everything a worker needs, picklable (passed as ``train_loop_config``)."""

    train: TrainSection
    stage: Stage
    source: ModelSection
    audio: AudioSection
    metrics_uri: str
    kill: KillWorker | None = None
    checkpoints_uri: str = ""
    """The stage's run storage, where its ``checkpoint-<step>`` directories land."""
    resume_from_stored: bool = False
    """Resume from the newest stored checkpoint even when Ray Train hands none over."""


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: one worker's share of the stage (see module docstring)."""
    import deepspeed
    import ray.train

    cfg: LoopConfig = config["loop"]
    train = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    on_gpu = train.use_gpu and torch.cuda.is_available()
    torch.manual_seed(train.seed)
    if not on_gpu:
        skip_shm_comm_build()

    # 1. Model, stage freeze set, optional LoRA, optional activation recomputation.
    model, tokenizer = build_initial_model(cfg.source, cfg.audio)
    model.train()  # as HF's Trainer does: dropout as configured, checkpointing active
    apply_stage(model, cfg.stage)
    lora = stage_lora(train.lora, cfg.stage)
    if lora is not None:
        add_lora(model, lora)
    if train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)  # before ZeRO-3 partitions them

    # 2. DeepSpeed engine (optimizer and LR schedule from the generated config).
    ds_config = deepspeed_config(train, world_size=world, on_gpu=on_gpu)
    schedule = WarmupLinearDecay.from_section(train)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=trainable, config=ds_config, lr_scheduler=schedule.scheduler
    )

    # 3. Resume from the checkpoint Ray Train hands over, if any.
    # Not newer than Ray's, and a damaged one falls back to the one before it.
    handed = ray.train.get_checkpoint()
    state, ckpt = checkpoints.resume(
        engine,
        _checkpoint_uri(handed) if handed is not None else None,
        cfg.checkpoints_uri,
        stored_too=cfg.resume_from_stored,
        say=lambda line: rank == 0 and print(f"[train:{cfg.stage}] {line}", flush=True),
    )
    start_step = state.step
    log = MetricsLog.resume(cfg.metrics_uri, start_step) if rank == 0 else None
    if rank == 0:
        where = f"resumed at step {start_step}" if ckpt is not None else "from the start"
        print(
            f"[train:{cfg.stage}] {world} workers, ZeRO-{train.zero_stage}, "
            f"{n_trainable:,} trainable params, {where}",
            flush=True,
        )

    # 4. The loop: micro-batches -> optimizer steps, epoch after epoch until max_steps.
    shard = ray.train.get_dataset_shard("train")
    device = engine.device
    dtype = next(engine.module.parameters()).dtype  # bf16 on GPU: features follow the weights
    step, epoch, batch_in_epoch = state.step, state.epoch, state.batch_in_epoch
    sums = _LossSums()
    t_step = time.perf_counter()
    while step < train.max_steps:
        batches_in_epoch = 0
        epoch_batches = iter_micro_batches(
            shard, train.micro_batch_size, epoch=epoch, seed=train.seed, drop_last=world > 1
        )
        for index, batch in enumerate(epoch_batches):
            batches_in_epoch = index + 1
            if index < batch_in_epoch:
                continue  # consumed before the checkpoint this run resumed from
            batch_in_epoch = index + 1
            inputs = {
                k: to_device(v, device, dtype) for k, v in batch.items() if k not in NOT_INPUTS
            }
            out = engine(**inputs)
            engine.backward(out.loss)
            lr = float(engine.get_lr()[0])  # the rate this optimizer step uses
            engine.step()
            sums.add(out, len(batch["ids"]))
            if sums.micro_batches < train.grad_accum_steps:
                continue

            # One optimizer step done. Its time ends here, before the metrics' collective (as
            # bench/train.py times plain DDP): waiting on it for the slower rank would count that
            # rank's lag twice, once here and once in the next step's gradient reduction.
            elapsed = time.perf_counter() - t_step
            step += 1
            metrics, report_slots_free = sums.reduce(world, device, report_slot_free())
            sums = _LossSums()
            metrics.update(
                step=step,
                epoch=epoch,
                lr=lr,
                step_time_s=elapsed,
                samples_per_s=metrics.pop("samples") / elapsed,
                start_step=start_step,
            )
            state = checkpoints.TrainState(step=step, epoch=epoch, batch_in_epoch=batch_in_epoch)
            checkpoint_now = step % train.checkpoint_every == 0 or step == train.max_steps
            if log is not None:
                log.append(metrics)
                _print_progress(cfg.stage, metrics, train.max_steps)
                # A local log is rewritten every step (watchable live); objects on S3 cannot be
                # appended to, so there the log is written with each checkpoint.
                if checkpoint_now or not storage.is_s3(log.uri):
                    log.flush()
            if checkpoint_now:
                _save_and_report(engine, tokenizer, state, metrics, cfg, rank)
            elif report_slots_free or (cfg.kill is not None and cfg.kill.step == step):
                # Every step is in the metrics log; Ray Train gets the steps it can take without
                # stalling the loop (see report_slot_free), decided alike on every rank. A kill
                # drill's step is always reported: see _wait_until_reports_collected.
                ray.train.report(metrics)
            if cfg.kill is not None and cfg.kill.rank == rank and cfg.kill.step == step:
                _kill_once(cfg.kill)
            t_step = time.perf_counter()
            if step >= train.max_steps:
                break
        if step >= train.max_steps:
            break
        if batches_in_epoch == 0:
            raise RuntimeError(
                f"worker {rank}'s data shard holds fewer than micro_batch_size="
                f"{train.micro_batch_size} samples: the corpus is too small for "
                f"{world} workers (check the skipped-record counts)"
            )
        epoch, batch_in_epoch = epoch + 1, 0


def _checkpoint_uri(checkpoint: Any) -> str:
    """A Ray checkpoint's location as a storage URI (s3:// or a local path)."""
    if getattr(checkpoint.filesystem, "type_name", "local") == "s3":
        return f"s3://{checkpoint.path}"
    return str(checkpoint.path)


class _LossSums:
    """Losses of the micro-batches of one optimizer step, averaged over workers at the step."""

    def __init__(self) -> None:
        self.loss = self.llm = self.tts = 0.0
        self.samples = 0
        self.micro_batches = 0

    def add(self, out: Any, samples: int) -> None:
        self.loss += float(out.loss.detach())
        self.llm += float(out.llm_loss)
        self.tts += float(out.tts_loss)
        self.samples += samples
        self.micro_batches += 1

    def reduce(
        self, world: int, device: torch.device, slot_free: bool
    ) -> tuple[dict[str, float], bool]:
        """Mean losses, total samples and the largest peak memory over the workers, and whether
        every worker's report slot is free: one all-gather of six numbers per rank (one
        collective per step), on ``device`` (NCCL collectives take only GPU tensors)."""
        n = max(self.micro_batches, 1)
        mine = torch.tensor(
            [
                self.loss / n,
                self.llm / n,
                self.tts / n,
                float(self.samples),
                _max_rss_mb(),
                float(slot_free),
            ],
            dtype=torch.float64,
            device=device,
        )
        rows = mine.unsqueeze(0)
        if dist.is_initialized():
            flat = torch.empty(world * mine.numel(), dtype=mine.dtype, device=device)
            dist.all_gather_single(flat, mine)  # gloo wants the concatenated (1-D) form
            rows = flat.view(-1, mine.numel())
        rows = rows.cpu()
        loss, llm, tts = (rows[:, :3].sum(dim=0) / world).tolist()
        metrics = {
            "loss": loss,
            "llm_loss": llm,
            "tts_loss": tts,
            "samples": float(rows[:, 3].sum()),
            "max_rss_mb": float(rows[:, 4].max()),
        }
        return metrics, bool(rows[:, 5].min() > 0)


def _max_rss_mb() -> float:
    """Peak resident memory of this worker process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _save_and_report(
    engine: Any,
    tokenizer: Any,
    state: checkpoints.TrainState,
    metrics: dict[str, Any],
    cfg: LoopConfig,
    rank: int,
) -> None:
    """Every rank saves its ZeRO shard into a local directory; Ray Train merges and uploads them."""
    import ray.train

    local = Path(tempfile.mkdtemp(prefix=f"opens2s-ckpt-{state.step}-r{rank}-"))
    lora = stage_lora(cfg.train.lora, cfg.stage)
    checkpoints.save(
        engine, local, state, stage=cfg.stage, lora=lora, tokenizer=tokenizer, rank=rank
    )
    ray.train.report(
        metrics,
        checkpoint=ray.train.Checkpoint.from_directory(str(local)),
        checkpoint_dir_name=checkpoints.dir_name(state.step),
    )
    shutil.rmtree(local, ignore_errors=True)


def _kill_once(kill: KillWorker) -> None:
    marker = Path(kill.marker)
    if marker.exists():
        return
    _wait_until_reports_collected()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _result_queue() -> Any | None:
    """This worker's one-slot queue of reports for Ray Train's controller (Ray Train v2
    internals), or None on a Ray Train that does not have it."""
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        return get_train_context().execution_context.result_queue
    except Exception:
        return None


def report_slot_free() -> bool:
    """Whether ``ray.train.report`` would return at once on this worker.

    Each report is a barrier across the workers (through a Ray actor) and then waits until the
    controller's poll, every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s by default), has taken
    the previous one: reporting every step of a model whose steps take less than that would
    stall training on the poll. True on a Ray Train without the queue (report every step).
    """
    queue = _result_queue()
    return queue is None or queue.empty()


def _wait_until_reports_collected(timeout_s: float = 30.0) -> None:
    """Block until Ray Train's controller has taken this worker's last report.

    ``ray.train.report`` returns as soon as the controller's poll *takes* the previous report
    from the worker's one-slot queue, before the poll's reply is on the wire. A SIGKILL right
    then can lose that reply, and with it the checkpoint the drill means to resume from. The
    controller issues a worker's next poll only after the previous one's reply arrived, so
    once the queue is empty again every report before the last one has reached it. The loop
    therefore always reports the kill step: the checkpoint before it is then safe.
    """
    queue = _result_queue()
    if queue is None:  # another Ray Train version: fall back to a few health-check rounds
        time.sleep(2.0)
        return
    deadline = time.monotonic() + timeout_s
    while not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.01)


def _print_progress(stage: str, m: dict[str, Any], max_steps: int) -> None:
    print(
        f"[train:{stage}] step {m['step']}/{max_steps} loss {m['loss']:.4f} "
        f"(llm {m['llm_loss']:.4f}, tts {m['tts_loss']:.4f}) lr {m['lr']:.2e} "
        f"{m['samples_per_s']:.1f} samples/s",
        flush=True,
    )
