"""From the platform config to Serve: the serve/*.yaml files, app args, deployment options."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from opens2s.config import PlatformConfig, load_config
from opens2s.serving.app import (
    app_builder,
    ingress_options,
    model_deployment_options,
    serve_application_entry,
)
from ray.serve import Application

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)


def test_serve_yaml_files_point_at_the_app_builder_with_a_loadable_platform_config(
    monkeypatch,
) -> None:
    monkeypatch.chdir(ROOT)  # Serve resolves the config path from the working directory
    files = sorted((ROOT / "serve").glob("*.yaml"))
    assert files
    for f in files:
        spec = yaml.safe_load(f.read_text())
        for app in spec["applications"]:
            assert app["import_path"] == "opens2s.serving.app:app_builder"
            assert isinstance(app_builder(app["args"]), Application), f


def test_application_entry_carries_the_whole_config_inline() -> None:
    cfg = load_config(None, {"serve.auth_token": "t", "serve.autoscaling.max_replicas": 4})
    entry = serve_application_entry(cfg)
    assert entry["import_path"] == "opens2s.serving.app:app_builder"
    assert entry["name"] == "opens2s" and entry["route_prefix"] == "/"
    assert PlatformConfig.model_validate(entry["args"]["platform_config"]) == cfg
    assert isinstance(app_builder(entry["args"]), Application)
    with pytest.raises(ValueError, match="platform_config"):
        app_builder({"confg": "typo.yaml"})


def test_deployment_options_follow_the_serve_section() -> None:
    cfg = load_config(
        None,
        {
            "serve.model_num_cpus": 0.25,
            "serve.model_num_gpus": 0.5,
            "serve.limits.max_sessions_per_replica": 6,
            "serve.autoscaling": {
                "min_replicas": 0,
                "max_replicas": 5,
                "target_ongoing_requests": 3,
            },
        },
    )
    opts = model_deployment_options(cfg)
    assert opts["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.5}
    assert opts["max_ongoing_requests"] == 6
    auto = opts["autoscaling_config"]
    assert (auto["min_replicas"], auto["initial_replicas"], auto["max_replicas"]) == (0, 1, 5)
    assert auto["target_ongoing_requests"] == 3
    assert ingress_options(cfg)["ray_actor_options"] == {"num_cpus": cfg.serve.ingress_num_cpus}
