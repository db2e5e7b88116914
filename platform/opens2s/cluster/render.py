"""Render every cluster file from one config, check each one, write them to a directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from opens2s.cluster.crd_validation import ManifestError, SchemaProblem, validate_manifest
from opens2s.cluster.launcher import launcher_problems, render_launcher
from opens2s.cluster.raycluster import (
    CONFIG_FILE,
    render_config_map,
    render_raycluster,
    render_serve_auth_secret,
)
from opens2s.cluster.rayjob import render_rayjob
from opens2s.cluster.rayservice import render_rayservice, serve_config
from opens2s.config import PlatformConfig
from opens2s.pipeline.plan import CLUSTER_JOBS

LAUNCHER_FILE = "ray-cluster-launcher.yaml"
SERVE_AUTH_SECRET_FILE = "secret-serve-auth.yaml"


def render_manifests(cfg: PlatformConfig) -> dict[str, dict[str, Any]]:
    """The Kubernetes objects by file name: ConfigMap, RayCluster, one RayJob per batch job,
    RayService, and the Secret holding ``serve.auth_token`` when the config has one."""
    out = {"configmap.yaml": render_config_map(cfg), "raycluster.yaml": render_raycluster(cfg)}
    for job in CLUSTER_JOBS:
        out[f"rayjob-{job}.yaml"] = render_rayjob(cfg, job)
    out["rayservice.yaml"] = render_rayservice(cfg)
    secret = render_serve_auth_secret(cfg)
    if secret is not None:
        out[SERVE_AUTH_SECRET_FILE] = secret
    return out


def check_serve_config(cfg: PlatformConfig) -> None:
    """Check the RayService's ``serveConfigV2`` with Ray Serve's own deploy schema."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(serve_config(cfg))
    except ValidationError as e:
        problems = [
            SchemaProblem("$.spec.serveConfigV2." + ".".join(map(str, err["loc"])), err["msg"])
            for err in e.errors()
        ]
        raise ManifestError("RayService serveConfigV2", problems) from e


def write_cluster_files(cfg: PlatformConfig, out_dir: str | Path) -> list[Path]:
    """Validate and write every manifest, the launcher YAML and ``platform.yaml`` to ``out_dir``.

    Nothing is written when any file is invalid: the error names the file and each bad field.
    """
    manifests = render_manifests(cfg)
    for name, manifest in manifests.items():
        if manifest["apiVersion"].startswith("ray.io/"):
            validate_manifest(manifest, where=name)
    check_serve_config(cfg)
    launcher = render_launcher(cfg)
    problems = launcher_problems(launcher)
    if problems:
        raise ValueError(
            f"{LAUNCHER_FILE} does not match Ray's launcher schema:\n  " + "\n  ".join(problems)
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, manifest in manifests.items():
        path = out / name
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    path = out / LAUNCHER_FILE
    path.write_text(yaml.safe_dump(launcher, sort_keys=False))
    written.append(path)
    path = out / CONFIG_FILE
    path.write_text(cfg.without_secrets().to_yaml())
    written.append(path)
    return written
