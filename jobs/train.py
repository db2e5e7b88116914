"""Ray job: train the OpenS2S model on the corpus with Ray Train + DeepSpeed, then export it.

Locally (an embedded Ray):     python jobs/train.py --config jobs/configs/tiny.yaml
On a cluster:                  ray job submit --working-dir . -- python jobs/train.py --config …
Overrides:                     --set train.max_steps=200 --set train.zero_stage=3

Every stage of ``train.stages`` runs in order; a rerun with the same run_dir resumes each stage
from its latest checkpoint. The job ends with a summary (steps, losses, time, skipped records,
where the checkpoints, metrics, loss plot and exported model went).
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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    import ray
    from opens2s.cli.train import parse_overrides
    from opens2s.config import ConfigError, load_config
    from opens2s.train import run_training

    try:
        cfg = load_config(args.config, parse_overrides(args.set))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if not ray.is_initialized():
        # ray.train.report costs ~2 s a call at Ray's default health-check interval.
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
        address = os.environ.get("RAY_ADDRESS")
        if address:  # under `ray job submit`: the job's own runtime env applies
            ray.init(address=address)
        else:  # an embedded local Ray whose workers import this checkout's package
            ray.init(address="local", runtime_env={"env_vars": {"PYTHONPATH": str(_PLATFORM)}})
    summary = run_training(cfg)
    print(summary.render(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
