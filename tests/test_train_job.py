"""``ray job submit`` runs ``jobs/train.py`` on a running cluster, with run_dir and corpus on S3.

The test starts its own small cluster (``ray start --head --block`` on free ports, token auth
off) so that its job agent does not depend on ports other Ray instances on this machine hold,
and kills exactly that process group afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from opens2s import storage
from opens2s.model import load_model
from opens2s.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture()
def job_cluster(s3_server, tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    """A one-node Ray cluster of our own; yields (dashboard URL, env for the ray CLI)."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    dashboard_port, gcs_port = free_port(), free_port()
    ports = {
        "--port": gcs_port,
        "--dashboard-port": dashboard_port,
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--ray-client-server-port": free_port(),
    }
    cmd = [RAY, "start", "--head", "--block", "--num-cpus=4", "--include-dashboard=true"]
    cmd += [f"{k}={v}" for k, v in ports.items()]
    log = (tmp_path / "ray-start.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        for _ in range(120):  # the cluster and its job agent come up
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "ray-start.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(url + "/api/version", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        yield url, env
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # our `ray start` and everything it started
        proc.wait()
        log.close()
        # `ray start` recorded its address for address-less ray.init() calls; a dead entry
        # would make those fail (what `ray stop` would clean up).
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip().endswith(f":{gcs_port}"):
            current.unlink()


def test_ray_job_submit_trains_from_s3_corpus_into_s3_run_dir(
    job_cluster, s3_bucket, train_corpus, tmp_path
):
    url, env = job_cluster
    corpus = f"s3://{s3_bucket}/corpus"
    run_dir = f"s3://{s3_bucket}/runs/job"
    storage.upload_dir(train_corpus[0], corpus)
    overrides = {
        "run_dir": run_dir,
        "train.corpus": corpus,
        "train.max_steps": 2,
        "train.warmup_steps": 1,
        "train.checkpoint_every": 2,
    }
    sets = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    cmd = [RAY, "job", "submit", "--address", url, "--working-dir", str(ROOT)]
    cmd += ["--runtime-env-json", json.dumps({"env_vars": {"PYTHONPATH": "platform"}})]
    cmd += ["--", sys.executable, "jobs/train.py", "--config", "jobs/configs/tiny.yaml", *sets]
    for _ in range(60):  # the job agent registers a little after the dashboard answers
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
        out = proc.stdout + proc.stderr
        if "No available agent to submit job" not in out:
            break
        time.sleep(1)
    assert proc.returncode == 0, out[-4000:]
    assert "stage finetune: 2 steps" in out
    assert "succeeded" in out

    rows = read_metrics(storage.join(run_dir, "train", "finetune", "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2]
    keys = storage.list_prefix(storage.join(run_dir, "train", "finetune"))
    assert any("/checkpoint-0000002/zero/" in k and "optim_states" in k for k in keys)
    assert storage.exists(storage.join(run_dir, "train", "finetune", "loss.png"))
    local = storage.copy_to_local(storage.join(run_dir, "model"), tmp_path / "model")
    model, _ = load_model(local)
    assert sum(p.numel() for p in model.parameters()) > 0
