"""Run the pipeline on an existing Ray cluster, one Ray job per step, through the Jobs API.

Each step is submitted as ``python -m opens2s.pipeline.job --config platform.yaml --only STEP``
(what ``ray job submit`` would run), its logs are streamed here as they come, and its exit status
decides whether the pipeline goes on. The job writes the step's outputs and its manifest entry to
``run_dir``, which therefore must be reachable from both sides: an ``s3://`` URI, or a local path
when the cluster runs on this machine (a relative local path is made absolute).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from opens2s import storage
from opens2s.config import PlatformConfig
from opens2s.pipeline.manifest import RunManifest
from opens2s.pipeline.plan import STEPS
from opens2s.pipeline.runner import TRAIN_STEPS, PipelineError, outputs_exist, step_outputs

# Variables of this process that a job should see too (speed knobs, offline flags).
FORWARDED_ENV = (
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "OMP_NUM_THREADS",
)


def cluster_config(cfg: PlatformConfig) -> PlatformConfig:
    """The config as the jobs get it: a local run_dir made absolute."""
    if storage.is_s3(cfg.run_dir) or Path(cfg.run_dir).is_absolute():
        return cfg
    return cfg.model_copy(update={"run_dir": str(Path(cfg.run_dir).resolve())})


async def _stream_logs(client, job_id: str, log) -> None:
    async for chunk in client.tail_job_logs(job_id):
        for line in chunk.splitlines():
            log(f"  | {line}")


def _wait(client, job_id: str, log) -> str:
    """Stream the job's logs until it ends; returns its final status name."""
    from ray.job_submission import JobStatus

    try:
        asyncio.run(_stream_logs(client, job_id, log))
    except Exception as e:  # log streaming is best effort; the status is what counts
        log(f"  (log stream ended: {type(e).__name__}: {e})")
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    while (status := client.get_job_status(job_id)) not in terminal:
        time.sleep(0.5)
    return status.value if hasattr(status, "value") else str(status)


def run_steps_as_jobs(
    cfg: PlatformConfig,
    address: str,
    names: Sequence[str] = STEPS,
    *,
    log=print,
) -> RunManifest:
    """Submit each step that has work to do as a Ray job on ``address``; returns the manifest."""
    from ray.job_submission import JobSubmissionClient

    cfg = cluster_config(cfg)
    client = JobSubmissionClient(address)
    ordered = [n for n in STEPS if n in names]
    manifest = RunManifest.load(cfg.run_dir)
    manifest.mode, manifest.address = "jobs", address
    manifest.save()
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env.update(cfg.cluster.env)
    stale = False
    with tempfile.TemporaryDirectory(prefix="opens2s-job-") as staging:
        # The job's working dir holds only the config; the package is installed on the cluster.
        (Path(staging) / "platform.yaml").write_text(cfg.to_yaml())
        for name in ordered:
            skip_here = (
                not stale
                and name not in TRAIN_STEPS + ("serve",)
                and outputs_exist(cfg, name, manifest)
            )
            if skip_here:
                manifest.record(name, "skipped", outputs=step_outputs(cfg, name, manifest))
                log(f"[{name}] skipped: outputs already there")
                continue
            if name == "serve" and not stale and outputs_exist(cfg, "turn", manifest):
                manifest.record(name, "skipped", detail={"reason": "the test turn is already done"})
                log("[serve] skipped: the test turn is already done")
                continue
            entrypoint = f"python -m opens2s.pipeline.job --config platform.yaml --only {name}"
            if stale:
                entrypoint += " --force"
            job_id = client.submit_job(
                entrypoint=entrypoint,
                submission_id=f"opens2s-{name}-{uuid.uuid4().hex[:8]}",
                runtime_env={"working_dir": staging, "env_vars": env},
                metadata={"opens2s_step": name, "run_dir": cfg.run_dir},
            )
            log(f"[{name}] submitted Ray job {job_id} to {address}")
            t0 = time.perf_counter()
            status = _wait(client, job_id, log)
            manifest = RunManifest.load(cfg.run_dir)  # the job wrote its step's record
            manifest.mode, manifest.address = "jobs", address
            rec = manifest.steps[name]
            if status != "SUCCEEDED":
                info = client.get_job_info(job_id)
                if rec.status not in ("failed", "missing"):
                    manifest.record(
                        name,
                        "failed",
                        seconds=time.perf_counter() - t0,
                        error=f"Ray job {job_id} {status}: {info.message}",
                        ray_job_id=job_id,
                    )
                else:
                    manifest.record(
                        name, rec.status, seconds=rec.seconds, error=rec.error, ray_job_id=job_id
                    )
                raise PipelineError(name, f"Ray job {job_id} ended {status}: {info.message}")
            manifest.record(
                name,
                rec.status,
                outputs=rec.outputs,
                detail=rec.detail,
                seconds=rec.seconds,
                error=rec.error,
                ray_job_id=job_id,
            )
            log(f"[{name}] Ray job {job_id} {status} ({rec.status})")
            stale = stale or rec.status == "done"
    return manifest
