"""Run the pipeline on an existing Ray cluster as Ray jobs, through the Jobs API.

Steps go in the job groups of ``plan.JOB_GROUPS`` (corpus: units + corpus; train: align +
finetune + export; serve: serve + turn), the same grouping as the KubeRay RayJobs. A group with
work left is submitted as ``python -m opens2s.pipeline.job --config platform.yaml --only STEPS``
(what ``ray job submit`` would run; the job skips its finished steps itself), its logs are streamed
here as they come, and its exit status decides whether the pipeline goes on. The job writes the step's outputs and its manifest entry to
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
from opens2s.config import AUTH_TOKEN_ENV, PlatformConfig
from opens2s.pipeline.manifest import RunManifest
from opens2s.pipeline.plan import JOB_GROUPS, STEPS, not_needed
from opens2s.pipeline.runner import PipelineError, outputs_exist, step_outputs

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


def _submit(client, *, retry_s: float = 90.0, **kwargs) -> str:
    """Submit a job; a cluster that just started may not have its job agent up yet: retry."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return client.submit_job(**kwargs)
        except (RuntimeError, ConnectionError) as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _client(address: str, retry_s: float = 90.0):
    """A Jobs API client; waits for a cluster that is still starting (dashboard not up yet)."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + retry_s
    while True:
        try:
            return JobSubmissionClient(address)
        except (ConnectionError, RuntimeError) as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Ray dashboard (Jobs API) answers at {address}: {e}") from e
            time.sleep(1.0)


def _all_done(cfg: PlatformConfig, names: list[str], manifest: RunManifest) -> bool:
    """Whether no step of a job group has work left (checked here, before submitting anything).

    Serving is never judged from here (only the cluster knows whether the app runs); with the
    test turn done there is nothing to serve for.
    """
    for name in names:
        if name == "serve":
            if "turn" not in names or not outputs_exist(cfg, "turn", manifest):
                return False
        elif not_needed(cfg, name):
            continue
        elif not outputs_exist(cfg, name, manifest):
            return False
    return True


def job_env(cfg: PlatformConfig, group: str, env: dict[str, str]) -> dict[str, str]:
    """The environment of one group's job: the Serve token (``AUTH_TOKEN_ENV``) goes only to
    the serve group, which deploys the app and asks it the spoken turn."""
    if group == "serve" and cfg.serve.auth_token:
        return {**env, AUTH_TOKEN_ENV: cfg.serve.auth_token}
    return dict(env)


def run_steps_as_jobs(
    cfg: PlatformConfig,
    address: str,
    names: Sequence[str] = STEPS,
    *,
    log=print,
) -> RunManifest:
    """Submit each job group that has work to do as a Ray job on ``address``; returns the
    manifest (each step's record names the Ray job that ran it)."""
    cfg = cluster_config(cfg)
    client = _client(address)
    ordered = [n for n in STEPS if n in names]
    manifest = RunManifest.load(cfg.run_dir)
    manifest.mode, manifest.address = "jobs", address
    manifest.save()
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env.update(cfg.cluster.env)
    stale = False
    with tempfile.TemporaryDirectory(prefix="opens2s-job-") as staging:
        # The job's working dir holds only the config; the package is installed on the cluster.
        # It is uploaded to the cluster for all to read: the Serve token is not in it.
        (Path(staging) / "platform.yaml").write_text(cfg.without_secrets().to_yaml())
        for group, group_steps in JOB_GROUPS.items():
            todo = [n for n in group_steps if n in ordered]
            if not todo:
                continue
            if not stale and _all_done(cfg, todo, manifest):
                for name in todo:
                    outputs = step_outputs(cfg, name, manifest) if name != "serve" else None
                    manifest.record(name, "skipped", outputs=outputs)
                log(f"[{group}] skipped: outputs of {', '.join(todo)} already there")
                continue
            entrypoint = (
                f"python -m opens2s.pipeline.job --config platform.yaml --only {','.join(todo)}"
            )
            if stale:
                entrypoint += " --force"
            job_id = _submit(
                client,
                entrypoint=entrypoint,
                submission_id=f"opens2s-{group}-{uuid.uuid4().hex[:8]}",
                runtime_env={"working_dir": staging, "env_vars": job_env(cfg, group, env)},
                metadata={"opens2s_steps": ",".join(todo), "run_dir": cfg.run_dir},
            )
            log(f"[{group}] submitted Ray job {job_id} ({', '.join(todo)}) to {address}")
            t0 = time.perf_counter()
            status = _wait(client, job_id, log)
            manifest = RunManifest.load(cfg.run_dir)  # the job wrote its steps' records
            manifest.mode, manifest.address = "jobs", address
            for name in todo:
                rec = manifest.steps[name]
                if rec.status == "pending":  # the job stopped before this step
                    continue
                manifest.record(
                    name,
                    rec.status,
                    seconds=rec.seconds,
                    error=rec.error,
                    ray_job_id=job_id,
                )
                stale = stale or rec.status == "done"
            if status != "SUCCEEDED":
                info = client.get_job_info(job_id)
                failed = [n for n in todo if manifest.steps[n].status in ("failed", "missing")]
                if not failed:  # the job died before it could record anything
                    failed = [next(n for n in todo if manifest.steps[n].status == "pending")]
                    manifest.record(
                        failed[0],
                        "failed",
                        seconds=time.perf_counter() - t0,
                        error=f"Ray job {job_id} {status}: {info.message}",
                        ray_job_id=job_id,
                    )
                raise PipelineError(failed[0], f"Ray job {job_id} ended {status}: {info.message}")
            log(f"[{group}] Ray job {job_id} {status}")
    return manifest
