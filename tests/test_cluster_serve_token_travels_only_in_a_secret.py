"""The Serve bearer token never lands in a file others can read: not in the ConfigMap, the
RayService, platform.yaml or a Ray job's working dir; pods get it from a Kubernetes Secret."""

from __future__ import annotations

from pathlib import Path

import yaml
from opens2s.cluster import write_cluster_files
from opens2s.config import AUTH_TOKEN_ENV, PlatformConfig, load_config
from opens2s.pipeline.ray_jobs import job_env

TOKEN = "tok-3f9a1c-do-not-leak"
ROOT = Path(__file__).resolve().parents[1]


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_rendered_files_hold_no_token_and_pods_read_it_from_the_secret(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "jobs/configs/tiny.yaml", {"serve.auth_token": TOKEN})
    written = {p.name: p for p in write_cluster_files(cfg, tmp_path)}  # checked against the CRDs
    holding = sorted(name for name, p in written.items() if TOKEN in p.read_text())
    assert holding == ["secret-serve-auth.yaml"]
    secret = yaml.safe_load(written["secret-serve-auth.yaml"].read_text())
    assert secret["kind"] == "Secret" and secret["stringData"] == {"token": TOKEN}
    name = secret["metadata"]["name"]

    service = yaml.safe_load(written["rayservice.yaml"].read_text())
    entry = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert entry["args"]["platform_config"]["serve"]["auth_token"] is None
    for manifest in ("raycluster.yaml", "rayservice.yaml", "rayjob-train.yaml"):
        doc = yaml.safe_load(written[manifest].read_text())["spec"]
        spec = doc.get("rayClusterConfig") or doc.get("rayClusterSpec") or doc
        for container in _containers(spec):
            env = {e["name"]: e for e in container["env"]}
            ref = env[AUTH_TOKEN_ENV]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": name, "key": "token"}, manifest

    # A replica validates the token-less inline config inside a pod whose environment holds
    # the Secret's value: it serves with the token.
    import os

    os.environ[AUTH_TOKEN_ENV] = TOKEN
    try:
        served = PlatformConfig.model_validate(entry["args"]["platform_config"])
    finally:
        del os.environ[AUTH_TOKEN_ENV]
    assert served.serve.auth_token == TOKEN


def test_an_existing_secret_is_referenced_and_none_is_rendered(tmp_path: Path) -> None:
    cfg = load_config(None, {"cluster.serve_auth_secret": "team-serve-token"})
    written = {p.name for p in write_cluster_files(cfg, tmp_path)}
    assert "secret-serve-auth.yaml" not in written
    spec = yaml.safe_load((tmp_path / "raycluster.yaml").read_text())["spec"]
    refs = [e for c in _containers(spec) for e in c["env"] if e["name"] == AUTH_TOKEN_ENV]
    assert refs and all(e["valueFrom"]["secretKeyRef"]["name"] == "team-serve-token" for e in refs)


def test_job_working_dir_config_has_no_token_and_only_the_serve_job_gets_it() -> None:
    cfg = load_config(None, {"serve.auth_token": TOKEN})
    assert TOKEN not in cfg.without_secrets().to_yaml()
    assert cfg.serve.auth_token == TOKEN  # the original is untouched
    assert AUTH_TOKEN_ENV not in job_env(cfg, "corpus", {})
    assert AUTH_TOKEN_ENV not in job_env(cfg, "train", {})
    assert job_env(cfg, "serve", {"A": "1"}) == {"A": "1", AUTH_TOKEN_ENV: TOKEN}
