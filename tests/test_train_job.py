"""``ray job submit`` runs ``jobs/train.py`` on a running cluster, with run_dir and corpus on S3.

The test starts its own small cluster (``ray start --head --block`` on free ports, token auth
off) so that its job agent does not depend on ports other Ray instances on this machine hold,
and kills exactly that process group afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RayHead
from opens2s import storage
from opens2s.model import load_model
from opens2s.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture()
def job_cluster(s3_server) -> Iterator[tuple[str, dict[str, str]]]:
    """A one-node Ray cluster of our own; yields (dashboard URL, env for the ray CLI)."""
    head = RayHead(num_cpus=4)
    try:
        yield head.address, head.env
    finally:
        head.stop()


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
