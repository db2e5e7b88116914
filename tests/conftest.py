"""Shared test fixtures: one local Ray instance and one S3-compatible server for the whole session.

Ray and moto are real: Ray starts a local cluster (``address="local"``, never an existing one),
moto runs as a child process on 127.0.0.1. Environment variables that Ray workers must inherit
(PYTHONPATH, S3 endpoint and credentials, offline flags) are set before ``ray.init``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
ARTIFACTS = ROOT / "artifacts"

# Nothing may reach a model hub; tests must pass offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# ray.train.report costs ~2 s a call at the default health-check interval.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Workers do not see pytest's sys.path.
_pp = [str(ROOT / "platform"), str(TESTS), str(ROOT)]
os.environ["PYTHONPATH"] = os.pathsep.join(
    _pp + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)
# Serve's proxy (a Ray worker: it inherits this environment) caps WebSocket messages at 1 MiB, as
# docs/serving.md tells deployments to (opens2s.serving.proxy_limits).
os.environ.setdefault(
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH",
    "opens2s.serving.proxy_limits:cap_websocket_messages",
)
# Console scripts of the venv (moto_server, opens2s, ray) on PATH even when pytest is called by path.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"
S3_REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """A moto S3 server running as a child process on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = Path(sys.executable).parent / "moto_server"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        self.proc = subprocess.Popen(
            [*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto S3 server did not start on {self.endpoint}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def reset(self) -> None:
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=5)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name=S3_REGION,
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's S3-compatible server; its endpoint and credentials are in the environment."""
    server = S3Server()
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    os.environ["AWS_ACCESS_KEY_ID"] = S3_ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = S3_SECRET_KEY
    os.environ["AWS_DEFAULT_REGION"] = S3_REGION
    os.environ["AWS_REGION"] = S3_REGION
    yield server
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server: S3Server) -> str:
    """An empty bucket on a freshly reset server; returns its name."""
    s3_server.reset()
    s3_server.client().create_bucket(Bucket="opens2s-test")
    return "opens2s-test"


@pytest.fixture(scope="session")
def ray_local(s3_server: S3Server) -> Iterator[None]:
    """One local Ray instance shared by every test that needs Ray.

    It declares more logical CPUs than the machine has so that Ray Data, Train workers (0.5 CPU
    each) and Serve replicas can be scheduled side by side on 2 cores.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=8,
            include_dashboard=True,
            log_to_driver=True,
            runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
        )
    yield
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files a person may want to look at (screenshots, plots, wavs)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def train_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A small training corpus (16 good records, 2 bad, a units/tokenizer.npz) and its expected
    skip counts."""
    from opens2s.train.toy_corpus import write_toy_corpus

    root = tmp_path_factory.mktemp("train-corpus")
    expected = write_toy_corpus(root)
    # Stands in for the corpus's unit tokenizer: export must carry it along byte for byte.
    (root / "units").mkdir()
    (root / "units" / "tokenizer.npz").write_bytes(os.urandom(256))
    return root, expected


def train_test_config(run_dir: Path, corpus: Path, **train: object):
    """The platform config the training tests share (tiny model, 2 workers, 10 ZeRO-2 steps);
    ``train`` overrides fields of the train section."""
    from opens2s.config import load_config

    overrides: dict[str, object] = {
        "run_dir": str(run_dir),
        "train.corpus": str(corpus),
        "train.stages": ["finetune"],
        "train.max_steps": 10,
        "train.warmup_steps": 2,
        "train.checkpoint_every": 5,
        "train.keep_last": 1,
        "train.zero_stage": 2,
        "train.num_workers": 2,
        "train.lr": 1e-3,
    }
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return load_config(None, overrides)


@pytest.fixture(scope="session")
def train_reference_run(ray_local, train_corpus, tmp_path_factory: pytest.TempPathFactory):
    """One ZeRO-2 finetune run on the test corpus (exported); other training tests compare to it.

    Returns ``(config, TrainSummary)``.
    """
    from opens2s.train import run_training

    cfg = train_test_config(tmp_path_factory.mktemp("train-ref"), train_corpus[0])
    return cfg, run_training(cfg)


class RayHead:
    """A ``ray start --head --block`` cluster of a test's own, for ``ray job submit`` and the Jobs
    API: free ports, its own short temp dir (Unix socket paths have a length limit) and process
    group, token auth off (``env`` carries the same setting for the client side). ``stop`` ends
    exactly what it started; never a global ``ray stop``."""

    def __init__(self, num_cpus: int = 4) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.log = Path(self.temp_dir) / "ray-start.log"
        # Workers get 100 ports below the kernel's ephemeral range, where ``free_port`` never
        # lands: a range inside it collided with a component port once (Ray refuses to start).
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        worker_low = 10000 + (self.gcs_port % max(1, (ephemeral_low - 10100) // 100)) * 100
        args = [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
            f"--num-cpus={num_cpus}", "--include-dashboard=true",
            "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--min-worker-port={worker_low}", f"--max-worker-port={worker_low + 99}",
            f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            cwd=self.temp_dir,  # a job's driver must not find a directory named "ray" in its cwd
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ray start --head exited early:\n{self.log.read_text()[-3000:]}"
                )
            try:
                urllib.request.urlopen(f"{self.address}/api/version", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("the head node's dashboard did not come up in 90 s")

    def stop(self) -> None:
        """Stop this head's process group, then stragglers naming its temp dir; forget it."""
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
        # `ray start` recorded its address for address-less ray.init() calls; a dead entry would
        # make those fail (what `ray stop` would clean up).
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip().endswith(f":{self.gcs_port}"):
            current.unlink()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker`` (a head's private temp dir)."""
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
