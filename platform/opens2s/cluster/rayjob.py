"""KubeRay RayJobs for the batch steps: each creates its own RayCluster, runs the pipeline's steps
of that job through ``jobs/pipeline.py`` and deletes the cluster when done (outputs are in run_dir).
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from opens2s.cluster.raycluster import config_path, labels, raycluster_spec
from opens2s.config import PlatformConfig
from opens2s.pipeline.plan import CLUSTER_JOBS


def job_entrypoint(cfg: PlatformConfig, steps: tuple[str, ...]) -> str:
    """The shell command the job runs on the head pod: the same entrypoint as ``--address`` runs."""
    c = cfg.cluster
    script = f"{c.app_dir.rstrip('/')}/jobs/pipeline.py"
    return shlex.join(["python", script, "--config", config_path(c), "--only", ",".join(steps)])


def runtime_env(cfg: PlatformConfig) -> dict[str, Any]:
    """The job's Ray runtime environment: the package is in the image, only variables travel."""
    return {"env_vars": {"OPENS2S_CONFIG": config_path(cfg.cluster), **cfg.cluster.env}}


def render_rayjob(cfg: PlatformConfig, job: str) -> dict[str, Any]:
    """The RayJob named ``<cluster.name>-<job>`` for one of ``CLUSTER_JOBS`` ("corpus", "train")."""
    if job not in CLUSTER_JOBS:
        raise ValueError(f"unknown cluster job {job!r}; expected one of {sorted(CLUSTER_JOBS)}")
    c = cfg.cluster
    j = c.jobs
    spec: dict[str, Any] = {
        "entrypoint": job_entrypoint(cfg, CLUSTER_JOBS[job]),
        "runtimeEnvYAML": yaml.safe_dump(runtime_env(cfg), sort_keys=False),
        "submissionMode": j.submission_mode,
        "shutdownAfterJobFinishes": j.shutdown_after_job_finishes,
        "ttlSecondsAfterFinished": j.ttl_seconds_after_finished,
        "backoffLimit": j.backoff_limit,
        "metadata": {"opens2s-job": job},
        "rayClusterSpec": raycluster_spec(cfg),
    }
    if j.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = j.active_deadline_seconds
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": f"{c.name}-{job}",
            "namespace": c.namespace,
            "labels": {**labels(c), "opens2s.io/job": job},
        },
        "spec": spec,
    }
