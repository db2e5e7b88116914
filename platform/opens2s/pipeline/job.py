"""The Ray job entrypoint: run some pipeline steps on the cluster this job runs on.

``python -m opens2s.pipeline.job --config platform.yaml --only corpus`` is what ``opens2s pipeline
--address`` submits for each step, and ``jobs/pipeline.py`` (the KubeRay RayJobs' entrypoint) is
this same program.
"""

from __future__ import annotations

import argparse
import sys

from opens2s.pipeline.plan import STEPS


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, connect to the job's Ray cluster, run the steps; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="platform config YAML")
    parser.add_argument(
        "--only", default=",".join(STEPS), help=f"comma-separated steps (of {', '.join(STEPS)})"
    )
    parser.add_argument(
        "--force", action="store_true", help="run the first step even if its outputs exist"
    )
    args = parser.parse_args(argv)

    import ray

    from opens2s.config import load_config
    from opens2s.pipeline.runner import PipelineError, run_steps

    cfg = load_config(args.config)
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    if not ray.is_initialized():
        ray.init()  # inside a Ray job: the job's cluster
    try:
        run_steps(cfg, names, force=args.force, log=lambda m: print(m, flush=True))
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
