"""The KubeRay RayService: the Serve application on its own RayCluster, upgraded without downtime.

``serveConfigV2`` is a Ray Serve config (``serve deploy`` format) whose one application is the
serving part's own entry (``opens2s.serving.app.serve_application_entry``): the app builder with
the platform config inline, so the replicas read the very serve section (model_dir, autoscaling,
limits) the user wrote.
"""

from __future__ import annotations

from typing import Any

import yaml

from opens2s.cluster.raycluster import labels, raycluster_spec
from opens2s.cluster.rayjob import runtime_env
from opens2s.config import PlatformConfig
from opens2s.pipeline.plan import served_config
from opens2s.serving.app import serve_application_entry


def serve_config(cfg: PlatformConfig) -> dict[str, Any]:
    """The Ray Serve config (``serve deploy`` schema) for the platform's application."""
    s = cfg.serve
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": s.port},
        # serve.model_dir defaults to <run_dir>/model, where the training RayJob exports. The
        # token is left out: replicas read it from the pods' Secret-backed environment.
        "applications": [
            {
                **serve_application_entry(served_config(cfg).without_secrets()),
                "runtime_env": runtime_env(cfg),
            }
        ],
    }


def _upgrade_strategy(cfg: PlatformConfig) -> dict[str, Any]:
    o = cfg.cluster.service
    strategy: dict[str, Any] = {"type": o.upgrade_strategy}
    if o.upgrade_strategy == "NewClusterWithIncrementalUpgrade":
        strategy["clusterUpgradeOptions"] = {
            "gatewayClassName": o.gateway_class_name,
            "stepSizePercent": o.step_size_percent,
            "intervalSeconds": o.interval_seconds,
            "maxSurgePercent": o.max_surge_percent,
        }
    return strategy


def render_rayservice(cfg: PlatformConfig) -> dict[str, Any]:
    """The RayService named ``<cluster.name>-serve``."""
    c = cfg.cluster
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": f"{c.name}-serve", "namespace": c.namespace, "labels": labels(c)},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config(cfg), sort_keys=False),
            "upgradeStrategy": _upgrade_strategy(cfg),
            "deploymentUnhealthySecondThreshold": c.service.deployment_unhealthy_threshold_seconds,
            "rayClusterConfig": raycluster_spec(cfg),
        },
    }
