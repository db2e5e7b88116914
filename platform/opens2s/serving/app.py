"""The Serve application: config → deployments (ingress + model) with their options.

``serve run serve/tiny.yaml`` and ``serve deploy`` reach :func:`app_builder` through the import
path ``opens2s.serving.app:app_builder``; ``opens2s serve --config`` calls :func:`build_app`; the
RayService manifest puts :func:`serve_app_args` into ``serveConfigV2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application

from opens2s.config import PlatformConfig, load_config


def model_deployment_options(cfg: PlatformConfig) -> dict[str, Any]:
    """Serve options of the model deployment: resources, autoscaling, sessions per replica."""
    s, a = cfg.serve, cfg.serve.autoscaling
    return {
        "ray_actor_options": {"num_cpus": s.model_num_cpus, "num_gpus": s.model_num_gpus},
        "max_ongoing_requests": s.limits.max_sessions_per_replica,
        "autoscaling_config": {
            "min_replicas": a.min_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
            "look_back_period_s": a.look_back_period_s,
        },
        "health_check_period_s": 2.0,
        "graceful_shutdown_timeout_s": 2.0,
    }


def ingress_options(cfg: PlatformConfig) -> dict[str, Any]:
    """Serve options of the ingress deployment."""
    s = cfg.serve
    return {
        "num_replicas": s.ingress_replicas,
        "ray_actor_options": {"num_cpus": s.ingress_num_cpus},
        # WebSocket sessions and NDJSON streams are long-lived requests.
        "max_ongoing_requests": max(100, 4 * s.limits.max_sessions_per_replica),
    }


def build_app(cfg: PlatformConfig) -> Application:
    """The bound application for ``serve.run``: an ingress bound to an autoscaling model deployment."""
    from opens2s.serving.ingress import Ingress
    from opens2s.serving.model_deployment import S2SModel

    raw = cfg.model_dump(mode="json")
    model = S2SModel.options(**model_deployment_options(cfg)).bind(raw)
    return Ingress.options(**ingress_options(cfg)).bind(model, raw)


def serve_app_args(cfg: PlatformConfig) -> dict[str, Any]:
    """Application ``args`` for a Serve config file or a RayService ``serveConfigV2`` entry.

    The whole platform config travels inline, so replicas never read a file that may not exist
    on their node. Use with ``import_path: opens2s.serving.app:app_builder``.
    """
    return {"platform_config": cfg.model_dump(mode="json")}


def serve_application_entry(cfg: PlatformConfig) -> dict[str, Any]:
    """One ``applications:`` entry of a Serve config (name, route prefix, import path, args)."""
    return {
        "name": cfg.serve.app_name,
        "route_prefix": cfg.serve.route_prefix,
        "import_path": "opens2s.serving.app:app_builder",
        "args": serve_app_args(cfg),
    }


def app_builder(args: dict[str, Any]) -> Application:
    """Serve's application builder: ``args`` hold ``platform_config`` (inline) or ``config``
    (a YAML path, relative to the working directory) and optional dotted ``overrides``."""
    if "platform_config" in args:
        cfg = PlatformConfig.model_validate(args["platform_config"])
    elif "config" in args:
        cfg = load_config(Path(args["config"]), args.get("overrides"))
    else:
        raise ValueError(
            "opens2s app args need 'config' (a platform YAML path) or 'platform_config' (inline), "
            f"got keys {sorted(args)}"
        )
    return build_app(cfg)
