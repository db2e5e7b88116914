"""Ray job: ask a model every spoken question of an eval set and score its answers (docs/eval.md).

Locally (an embedded Ray):  python jobs/eval.py --config jobs/configs/tiny.yaml --checkpoint runs/tiny/model
On a cluster:               ray job submit --working-dir . -- python jobs/eval.py --config … --checkpoint s3://…
Options:                    --eval-set SET.jsonl|CORPUS  --out DIR  --set eval.max_items=50

Writes ``<out>/eval.json`` (summary), ``items.parquet``, ``distributions.png``, ``report.md`` and
the answers' audio; prints the summary table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# `ray job submit --working-dir .` ships the repository, not an installed package.
_PLATFORM = Path(__file__).resolve().parents[1] / "platform"
if _PLATFORM.is_dir() and str(_PLATFORM) not in sys.path:
    sys.path.insert(0, str(_PLATFORM))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="platform config YAML")
    parser.add_argument("--checkpoint", required=True, help="model dir, exported or released")
    parser.add_argument("--eval-set", default=None, help=".jsonl set or corpus root")
    parser.add_argument("--out", default=None, help="output folder (default <run_dir>/eval)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    import ray
    from opens2s.cli.train import parse_overrides
    from opens2s.config import ConfigError, load_config
    from opens2s.evaluation.job import eval_dir, run_eval

    try:
        cfg = load_config(args.config, parse_overrides(args.set))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:  # under `ray job submit`: the job's own runtime env applies
            ray.init(address=address)
        else:  # an embedded local Ray whose workers import this checkout's package
            ray.init(address="local", runtime_env={"env_vars": {"PYTHONPATH": str(_PLATFORM)}})
    try:
        run_eval(cfg, args.checkpoint, args.out or eval_dir(cfg), args.eval_set, log=print)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
