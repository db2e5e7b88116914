"""Benchmark: ZeRO-2 (DeepSpeed, our training loop) vs plain PyTorch DDP on the same tiny model.

Same Ray cluster, same corpus (a synthetic toy corpus), same 2 workers, same micro-batch size,
same AdamW + warmup/decay. Reports the median optimizer-step time after warm-up, samples/s and the
peak resident memory per worker. The last line of output is one JSON object.

    python bench/train.py [--steps 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

_PLATFORM = Path(__file__).resolve().parents[1] / "platform"
if str(_PLATFORM) not in sys.path:
    sys.path.insert(0, str(_PLATFORM))

WARMUP_STEPS = 5


def ddp_loop_per_worker(config: dict) -> None:
    """Plain DDP: the same model, data and optimizer settings as the DeepSpeed loop, no ZeRO."""
    import ray.train
    import torch
    import torch.distributed as dist
    from opens2s.train.data import iter_micro_batches
    from opens2s.train.loop import report_slot_free
    from opens2s.train.model_source import build_initial_model
    from opens2s.train.stages import apply_stage
    from ray.train.torch import prepare_model

    train, stage, source = config["train"], config["stage"], config["source"]
    torch.manual_seed(train.seed)
    model, _ = build_initial_model(source, config["audio"])
    apply_stage(model, stage)
    model = prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=train.lr, betas=train.betas, eps=1e-8, weight_decay=train.weight_decay
    )

    def lr_factor(step: int) -> float:
        if step < train.warmup_steps:
            return step / max(train.warmup_steps, 1)
        return max(0.0, (train.max_steps - step) / max(1, train.max_steps - train.warmup_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    shard = ray.train.get_dataset_shard("train")
    step = 0
    while step < train.max_steps:
        t0 = time.perf_counter()
        for batch in iter_micro_batches(shard, train.micro_batch_size):
            inputs = {k: v for k, v in batch.items() if k != "ids"}
            loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - t0
            # As our loop does: a Ray Train report only when every worker's report slot is free
            # (and at the last step). Outside the timed window, like our loop's metrics gather.
            slot_free = float(report_slot_free())
            stats = torch.tensor([float(len(batch["ids"])), float(loss.detach()), slot_free])
            rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024])
            dist.all_reduce(stats)
            dist.all_reduce(rss, op=dist.ReduceOp.MAX)
            if int(stats[2]) == dist.get_world_size() or step == train.max_steps:
                ray.train.report(
                    {
                        "step": step,
                        "loss": float(stats[1]) / dist.get_world_size(),
                        "step_time_s": elapsed,
                        "samples_per_s": float(stats[0]) / elapsed,
                        "max_rss_mb": float(rss[0]),
                    }
                )
            if config.get("rows_uri") and ray.train.get_context().get_world_rank() == 0:
                with open(config["rows_uri"], "a") as f:
                    f.write(
                        json.dumps(
                            {
                                "step": step,
                                "step_time_s": elapsed,
                                "samples_per_s": float(stats[0]) / elapsed,
                                "max_rss_mb": float(rss[0]),
                            }
                        )
                        + "\n"
                    )
            if step >= train.max_steps:
                break
            t0 = time.perf_counter()


def run_ddp(cfg, work: Path) -> list[dict]:
    import ray
    from opens2s.train.data import close_error_tally, corpus_dataset, create_error_tally
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    tally_name = f"bench-ddp-{os.getpid()}"
    tally = create_error_tally(tally_name)
    ds = corpus_dataset(cfg.train.corpus, cfg.model, cfg.audio, tally_name).materialize()
    work.mkdir(parents=True, exist_ok=True)
    rows_uri = work / "ddp.jsonl"
    execution = DataConfig.default_ingest_options()
    execution.preserve_order = True
    trainer = TorchTrainer(
        ddp_loop_per_worker,
        train_loop_config={
            "train": cfg.train,
            "stage": "finetune",
            "source": cfg.model,
            "audio": cfg.audio,
            "rows_uri": str(rows_uri),
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name=f"bench-ddp-{work.name}-{os.getpid()}", storage_path=str(work)),
        datasets={"train": ds},
        dataset_config=DataConfig(execution_options=execution, enable_shard_locality=False),
    )
    trainer.fit()
    close_error_tally(tally)
    del ray
    return [json.loads(line) for line in rows_uri.read_text().splitlines()]


def summarize_rows(rows: list[dict]) -> list[dict]:
    """The rows of one run that count for timing (after warm-up), plus the memory peak."""
    peak = max(r["max_rss_mb"] for r in rows)
    return [dict(r, max_rss_mb=peak) for r in rows[WARMUP_STEPS:]]


def summarize(timed: list[dict]) -> dict[str, float]:
    """Median step time and samples/s over the timed steps of all rounds; peak memory."""
    return {
        "step_time_s": statistics.median(r["step_time_s"] for r in timed),
        "min_step_time_s": min(r["step_time_s"] for r in timed),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in timed),
        "max_rss_mb_per_worker": max(r["max_rss_mb"] for r in timed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternate the two runs this many times (ZeRO-2 first, then DDP first, ...) so "
        "that load from other processes on the machine hits both alike",
    )
    args = parser.parse_args()

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray
    from opens2s.config import load_config
    from opens2s.model import build_model
    from opens2s.train import fit_stage
    from opens2s.train.metrics import read_metrics
    from opens2s.train.toy_corpus import write_toy_corpus

    work = Path(tempfile.mkdtemp(prefix="opens2s-bench-train-"))
    write_toy_corpus(work / "corpus", n_good=32)
    cfg = load_config(
        None,
        {
            "run_dir": str(work / "run"),
            "train.corpus": str(work / "corpus"),
            "train.max_steps": args.steps,
            "train.checkpoint_every": 10**6,
            "train.num_workers": args.workers,
            "train.zero_stage": 2,
            # The settings this bench was measured with (the laptop default now trains longer).
            "train.warmup_steps": 2,
            "train.lr": 1e-3,
            "train.weight_decay": 0.05,
        },
    )
    ray.init(
        address="local",
        num_cpus=8,
        runtime_env={"env_vars": {"PYTHONPATH": str(_PLATFORM)}},
        log_to_driver=False,
    )
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    zero2_rows: list[dict] = []
    ddp_rows: list[dict] = []
    for round_index in range(args.rounds):
        round_cfg = cfg.model_copy(update={"run_dir": str(work / f"run-{round_index}")})

        def zero2_run(c=round_cfg) -> None:
            zero2_rows.extend(
                summarize_rows(read_metrics(fit_stage(c, "finetune", c.model).metrics))
            )

        def ddp_run(c=round_cfg, r=round_index) -> None:
            ddp_rows.extend(summarize_rows(run_ddp(c, work / f"ddp-{r}")))

        runs = [zero2_run, ddp_run] if round_index % 2 == 0 else [ddp_run, zero2_run]
        for run in runs:
            run()
    zero2, ddp = summarize(zero2_rows), summarize(ddp_rows)
    n_params = sum(p.numel() for p in build_model("tiny").parameters())
    ray.shutdown()
    result = {
        "device": "cpu",
        "model": "tiny",
        "params": n_params,
        "num_workers": args.workers,
        "micro_batch_size": cfg.train.micro_batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "timed_steps_per_method": len(zero2_rows),
        "zero2_step_time_s": round(zero2["step_time_s"], 4),
        "ddp_step_time_s": round(ddp["step_time_s"], 4),
        "zero2_over_ddp_step_time": round(zero2["step_time_s"] / ddp["step_time_s"], 3),
        # Other processes on a shared machine only ever add time: the fastest step is the
        # least disturbed estimate of each method's own cost.
        "zero2_over_ddp_min_step_time": round(zero2["min_step_time_s"] / ddp["min_step_time_s"], 3),
        "zero2_samples_per_s": round(zero2["samples_per_s"], 2),
        "ddp_samples_per_s": round(ddp["samples_per_s"], 2),
        "zero2_max_rss_mb_per_worker": round(zero2["max_rss_mb_per_worker"], 1),
        "ddp_max_rss_mb_per_worker": round(ddp["max_rss_mb_per_worker"], 1),
        "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
