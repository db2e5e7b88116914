"""The Ray cluster launcher YAML (``ray up``) for VMs, with the same head and worker groups as the
KubeRay RayCluster, checked against the launcher's own JSON schema shipped with Ray.
"""

from __future__ import annotations

import json
import math
import shlex
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

from opens2s.cluster.raycluster import CONFIG_FILE, config_path
from opens2s.config import PlatformConfig
from opens2s.serving.proxy_limits import proxy_environment


def _flags(params: dict[str, str]) -> list[str]:
    return [f"--{k}={v}" for k, v in params.items()]


def render_launcher(cfg: PlatformConfig) -> dict[str, Any]:
    """The cluster launcher config: one node type per worker group, the platform image in Docker.

    ``file_mounts`` copies ``platform.yaml`` (written beside this file by ``opens2s cluster
    render``) to the same path the Kubernetes pods use; run ``ray up`` from that directory.
    """
    c = cfg.cluster
    run_options = ["--ulimit nofile=65536:65536", "--shm-size=8g"]
    env = {**proxy_environment(), **c.env}  # Serve's proxies cap WebSocket messages
    run_options += [f"--env {shlex.quote(f'{k}={v}')}" for k, v in env.items()]
    node_types: dict[str, Any] = {
        "head": {
            "node_config": {"InstanceType": c.head.instance_type},
            "resources": {},  # empty: Ray detects the VM's CPUs and GPUs
        }
    }
    for g in c.worker_groups:
        node: dict[str, Any] = {
            "node_config": {"InstanceType": g.instance_type},
            "min_workers": g.min_replicas,
            "max_workers": g.max_replicas,
            "resources": {},
        }
        if g.resources.gpu:
            node["docker"] = {"worker_run_options": ["--gpus all"]}
        if g.idle_timeout_seconds is not None:
            node["idle_timeout_s"] = g.idle_timeout_seconds
        node_types[g.name] = node
    if c.launcher.image_id:
        for node in node_types.values():
            node["node_config"]["ImageId"] = c.launcher.image_id
    head_flags = shlex.join(_flags(c.head.ray_start_params))
    return {
        "cluster_name": c.name,
        "max_workers": sum(g.max_replicas for g in c.worker_groups),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": max(1, math.ceil(c.autoscaler.idle_timeout_seconds / 60)),
        "docker": {
            "image": c.image,
            "container_name": "ray_container",
            "pull_before_run": True,
            "run_options": run_options,
        },
        "provider": {"type": c.launcher.provider, "region": c.launcher.region},
        "auth": {"ssh_user": c.launcher.ssh_user},
        "available_node_types": node_types,
        "head_node_type": "head",
        "file_mounts": {config_path(c): f"./{CONFIG_FILE}"},
        "head_start_ray_commands": [
            "ray stop",
            "ulimit -n 65536; ray start --head --port=6379 "
            "--autoscaling-config=~/ray_bootstrap_config.yaml " + head_flags,
        ],
        "worker_start_ray_commands": [
            "ray stop",
            "ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379",
        ],
    }


@lru_cache(maxsize=1)
def launcher_schema() -> dict[str, Any]:
    """Ray's JSON schema for cluster launcher YAML (``ray/autoscaler/ray-schema.json``)."""
    return json.loads(resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text())


def launcher_problems(config: dict[str, Any]) -> list[str]:
    """Violations of Ray's launcher schema as ``$.path: message`` lines (empty when valid)."""
    out = []
    for e in jsonschema.Draft7Validator(launcher_schema()).iter_errors(config):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        out.append(f"{path}: {e.message}")
    return sorted(out)
