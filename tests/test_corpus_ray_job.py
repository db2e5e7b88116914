"""``ray job submit --working-dir . -- python jobs/build_corpus.py`` against a ``ray start --head``
cluster that this test starts on free ports (token auth off on both sides) and stops again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def _processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker`` (our cluster's private temp dir)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry))
    return pids


class HeadNode:
    """A ``ray start --head --block`` cluster of our own, in its own session and temp dir."""

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: socket paths
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        worker_low = 20000 + (self.gcs_port % 200) * 100
        args = [
            RAY, "start", "--head", "--block", "--num-cpus=4", "--include-dashboard=true",
            "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--min-worker-port={worker_low}", f"--max-worker-port={worker_low + 99}",
            f"--temp-dir={self.temp_dir}",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "ray start --head exited early"
            try:
                urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the head node's dashboard did not come up in 90 s")

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def stop(self) -> None:
        """Stop exactly what this head started: its session, then stragglers naming our dir."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in _processes_mentioning(self.temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.mark.timeout(360)
def test_build_corpus_runs_through_ray_job_submit_on_a_head_node(tmp_path) -> None:
    corpus = tmp_path / "corpus"
    # The job may fit its own tokenizer (tested end to end elsewhere); here it gets one, fitted
    # directly on two espeak sentences, so the test spends its time on the cluster path.
    tokenizer = tmp_path / "tokenizer.npz"
    _fit_small_tokenizer(tokenizer)
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "audio": {"codebook_size": 16},
                "data": {
                    "workers": 1,
                    "cpus_per_worker": 0.5,
                    "scenarios": {"num_dialogues": 3, "max_exchanges": 1},
                    "units": {"tokenizer_path": str(tokenizer)},
                    "output": {"shard_size": 2},
                },
            }
        )
    )
    head = HeadNode()
    try:
        head.start()
        runtime_env = {"excludes": [".git", ".venv", "runs", "artifacts", "*.egg-info"]}
        job = subprocess.run(
            [
                RAY,
                "job",
                "submit",
                f"--address={head.dashboard}",
                f"--working-dir={ROOT}",
                f"--runtime-env-json={json.dumps(runtime_env)}",
                "--",
                "python",
                "jobs/build_corpus.py",
                "--config",
                str(config),
                "--output",
                str(corpus),
            ],  # fmt: skip
            env=head.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout + job.stderr
    finally:
        head.stop()
    summary = json.loads((corpus / "summary.json").read_text())
    assert summary["dialogues_planned"] == 3
    assert summary["dialogues_written"] + summary["dialogues_quarantined"] == 3
    assert sorted(p.name for p in (corpus / "shards").iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
    ]
    records = [json.loads(line) for line in (corpus / "shards" / "shard-00000.jsonl").open()]
    assert all(r["messages"][1]["content"][0]["speech_units"] for r in records)


def _fit_small_tokenizer(path: Path) -> None:
    from opens2s.audio.io import resample
    from opens2s.audio.tts import ASSISTANT_SPEAKER, EspeakTTS
    from opens2s.audio.units import MelKMeansUnits

    tts = EspeakTTS()
    waves = []
    for text in ("I am here with you, that sounds hard.", "Take it one step at a time."):
        wave, sr = tts.synthesize(text, ASSISTANT_SPEAKER)
        waves.append(resample(wave, sr, 16000))
    MelKMeansUnits(16, 25.0).fit(waves, passes=2).save(path)
