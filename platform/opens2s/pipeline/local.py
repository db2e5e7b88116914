"""The pipeline on an embedded local Ray (``opens2s pipeline`` without ``--address``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from opens2s.config import PlatformConfig
from opens2s.pipeline.manifest import RunManifest
from opens2s.pipeline.plan import STEPS, served_config
from opens2s.pipeline.runner import run_steps

# Ray Data, Train workers (fractional CPUs) and Serve replicas must fit side by side on a laptop.
MIN_LOGICAL_CPUS = 8


def start_local_ray() -> None:
    """Start an embedded Ray unless this process is already connected to one."""
    import ray

    if ray.is_initialized():
        return
    # ray.train.report costs ~2 s a call at the default health-check interval.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ray.init(
        address="local",
        num_cpus=max(MIN_LOGICAL_CPUS, os.cpu_count() or 1),
        include_dashboard=True,
        log_to_driver=True,
    )


def run_local(
    cfg: PlatformConfig,
    names: Sequence[str] = STEPS,
    *,
    keep_serving: bool = False,
    log=print,
) -> RunManifest:
    """Run the steps in this process; the Serve app is deleted at the end unless ``keep_serving``."""
    start_local_ray()
    try:
        return run_steps(cfg, names, log=log)
    finally:
        if not keep_serving:
            _delete_app(served_config(cfg).serve.app_name)


def _delete_app(name: str) -> None:
    try:
        from ray import serve

        if name in serve.status().applications:
            serve.delete(name)
    except Exception:  # Serve was never started in this Ray instance
        pass
