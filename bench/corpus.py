"""Corpus-construction benchmark: dialogues per minute and audio hours per hour with 1 and 2 Ray
workers per stage in the same run, the 1 -> 2 scaling ratio, and the seconds each stage spent.

    .venv/bin/python bench/corpus.py [--dialogues 480] [--shard-size 5]

The unit tokenizer is fitted once before the timed runs (it is a separate job step), and a small
warm-up build starts Ray's worker processes first. ``dialogues_per_min_{1,2}w`` and
``scaling_1_to_2`` are steady-state throughput: shards committed after the first one over the
time from the first commit to the last, what a long job sustains. Each run's start-up (actor
processes start, import torch, load the codebook and espeak: a few seconds, the same with 1 or
2 workers) is reported apart as ``startup_seconds_{1,2}w``, and the end-to-end figures that
include it as ``wall_dialogues_per_min_{1,2}w`` and ``wall_scaling_1_to_2``. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per stage worker: scaling is Ray's


def _timing_commits(commits: list[float]):
    """A build log that notes when each shard is committed (and prints to stderr)."""

    def log(message: str) -> None:
        if "committed" in message:
            commits.append(time.perf_counter())
        print(message, file=sys.stderr)

    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=480)
    parser.add_argument("--shard-size", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray")
    args = parser.parse_args()

    import ray
    from opens2s.config import load_config
    from opens2s.data import scenarios
    from opens2s.data.pipeline import build_corpus, ensure_unit_tokenizer

    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    base = {
        "run_dir": str(work / "run"),
        "data.scenarios.num_dialogues": args.dialogues,
        "data.scenarios.max_exchanges": 2,  # as measured before the laptop default became 1
        "data.output.shard_size": args.shard_size,
        "data.cpus_per_worker": 0.5,
    }
    cfg = load_config(None, base)
    scen = scenarios.resolve_scenario_settings(cfg.data.scenarios, audio=cfg.audio)
    t = time.perf_counter()
    tokenizer = ensure_unit_tokenizer(cfg, scen, str(work / "units"), lambda m: None)
    fit_seconds = time.perf_counter() - t

    result: dict = {"dialogues": args.dialogues, "unit_fit_seconds": round(fit_seconds, 2)}
    # Warm-up (not timed): Ray starts its pool of worker processes, which the timed runs' actors
    # then take over.
    warm = {"data.workers": 2, "data.units.tokenizer_path": tokenizer}
    warm["data.output.uri"] = str(work / "warm-up")
    warm["data.scenarios.num_dialogues"] = 4 * args.shard_size
    build_corpus(load_config(None, {**base, **warm}), log=lambda m: None)
    for workers in (1, 2):
        cfg = load_config(
            None,
            {
                **base,
                "data.workers": workers,
                "data.units.tokenizer_path": tokenizer,
                "data.output.uri": str(work / f"corpus-{workers}w"),
            },
        )
        commits: list[float] = []
        t = time.perf_counter()
        summary = build_corpus(cfg, log=_timing_commits(commits))
        wall = time.perf_counter() - t
        done = summary["dialogues_written"] + summary["dialogues_quarantined"]
        # Steady state: shards committed after the first one, over the time between the first
        # and the last commit (excludes start-up: actor processes, codebook and espeak loads).
        steady = (len(commits) - 1) * args.shard_size / (commits[-1] - commits[0])
        result[f"startup_seconds_{workers}w"] = round(commits[0] - t, 2)
        result[f"seconds_{workers}w"] = round(wall, 2)
        result[f"dialogues_per_min_{workers}w"] = round(steady * 60, 2)
        result[f"wall_dialogues_per_min_{workers}w"] = round(done / wall * 60, 2)
        hours_per_dialogue = summary["hours"] / max(1, done)
        result[f"audio_hours_per_hour_{workers}w"] = round(steady * 3600 * hours_per_dialogue, 2)
        result[f"stage_seconds_{workers}w"] = summary["stage_seconds"]
        # Share of the workers' wall time spent inside stages (the rest: Ray scheduling,
        # serialisation, the driver committing shards); low means the stages wait, not work.
        busy = sum(summary["stage_seconds"].values()) / (wall * workers)
        result[f"stage_busy_fraction_{workers}w"] = round(busy, 3)
        result[f"quarantined_{workers}w"] = summary["dialogues_quarantined"]
    result["scaling_1_to_2"] = round(
        result["dialogues_per_min_2w"] / result["dialogues_per_min_1w"], 3
    )
    result["wall_scaling_1_to_2"] = round(
        result["wall_dialogues_per_min_2w"] / result["wall_dialogues_per_min_1w"], 3
    )
    result["cpu_cores"] = os.cpu_count()
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    ray.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
