"""Corpus-construction benchmark: dialogues per minute and audio hours per hour with 1 and 2 Ray
workers per stage in the same run, the 1 -> 2 scaling ratio, and the seconds each stage spent.

    .venv/bin/python bench/corpus.py [--dialogues 40] [--shard-size 5]

The unit tokenizer is fitted once before the timed runs (it is a separate job step), and a small
warm-up build starts the worker processes both timed runs reuse. The last
line printed is one JSON object (scaling_1_to_2, dialogues_per_min_1w/2w, per-stage seconds).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=40)
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
        "data.output.shard_size": args.shard_size,
        "data.cpus_per_worker": 0.5,
    }
    cfg = load_config(None, base)
    scen = scenarios.resolve_scenario_settings(cfg.data.scenarios, audio=cfg.audio)
    t = time.perf_counter()
    tokenizer = ensure_unit_tokenizer(cfg, scen, str(work / "units"), lambda m: None)
    fit_seconds = time.perf_counter() - t

    result: dict = {"dialogues": args.dialogues, "unit_fit_seconds": round(fit_seconds, 2)}
    # Warm-up (not timed): start and import into the worker processes both timed runs reuse, so
    # neither run pays for process start-up.
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
        t = time.perf_counter()
        summary = build_corpus(cfg, log=lambda m: print(m, file=sys.stderr))
        wall = time.perf_counter() - t
        done = summary["dialogues_written"] + summary["dialogues_quarantined"]
        result[f"seconds_{workers}w"] = round(wall, 2)
        result[f"dialogues_per_min_{workers}w"] = round(done / wall * 60, 2)
        result[f"audio_hours_per_hour_{workers}w"] = round(summary["hours"] * 3600 / wall, 2)
        result[f"stage_seconds_{workers}w"] = summary["stage_seconds"]
        # Share of the workers' wall time spent inside stages (the rest: Ray scheduling,
        # serialisation, the driver committing shards); low means the stages wait, not work.
        busy = sum(summary["stage_seconds"].values()) / (wall * workers)
        result[f"stage_busy_fraction_{workers}w"] = round(busy, 3)
        result[f"quarantined_{workers}w"] = summary["dialogues_quarantined"]
    result["scaling_1_to_2"] = round(
        result["dialogues_per_min_2w"] / result["dialogues_per_min_1w"], 3
    )
    result["cpu_cores"] = os.cpu_count()
    ray.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
