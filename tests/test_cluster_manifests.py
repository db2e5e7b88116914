"""KubeRay manifests rendered from the one config validate against the KubeRay CRD schemas, carry
the settings of the config, and a wrong field is reported with its JSON path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from opens2s.cluster import (
    ManifestError,
    manifest_problems,
    render_manifests,
    render_raycluster,
    render_rayjob,
    render_rayservice,
    validate_manifest,
)
from opens2s.cluster.crd_validation import CRD_FILES
from opens2s.config import ClusterSection, ConfigError, PlatformConfig, load_config
from opens2s.pipeline.plan import CLUSTER_JOBS, STEPS, served_config
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "tiny": ROOT / "jobs/configs/tiny.yaml",
    "opens2s-8b": ROOT / "jobs/configs/opens2s-8b.yaml",
}
SHARED_CRDS = ROOT.parent / "shared" / "kuberay-crds"

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_rendered_kuberay_manifest_validates_against_its_crd(name: str) -> None:
    cfg = load_config(CONFIGS[name])
    manifests = render_manifests(cfg)
    kinds = sorted(m["kind"] for m in manifests.values())
    assert kinds == ["ConfigMap", "RayCluster", "RayJob", "RayJob", "RayJob", "RayService"]
    for file, manifest in manifests.items():
        if manifest["kind"] != "ConfigMap":
            assert manifest_problems(manifest) == [], file


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_raycluster_carries_autoscaling_and_worker_groups_of_the_config(name: str) -> None:
    cfg = load_config(CONFIGS[name])
    spec = render_raycluster(cfg)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert (
        spec["autoscalerOptions"]["idleTimeoutSeconds"]
        == cfg.cluster.autoscaler.idle_timeout_seconds
    )
    assert spec["autoscalerOptions"]["version"] == cfg.cluster.autoscaler.version
    assert spec["headGroupSpec"]["rayStartParams"] == cfg.cluster.head.ray_start_params
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert list(groups) == [g.name for g in cfg.cluster.worker_groups]
    for g in cfg.cluster.worker_groups:
        rendered = groups[g.name]
        assert (rendered["minReplicas"], rendered["maxReplicas"]) == (
            g.min_replicas,
            g.max_replicas,
        )
        container = rendered["template"]["spec"]["containers"][0]
        assert container["image"] == cfg.cluster.image
        limits = container["resources"]["limits"]
        assert (limits["cpu"], limits["memory"]) == (g.resources.cpu, g.resources.memory)
        assert limits.get("nvidia.com/gpu", 0) == g.resources.gpu
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "serve", "containerPort": cfg.serve.port} in head["ports"]


def test_gpu_layout_has_cpu_and_gpu_worker_groups_and_incremental_upgrade() -> None:
    cfg = load_config(CONFIGS["opens2s-8b"])
    groups = {g["groupName"]: g for g in render_raycluster(cfg)["spec"]["workerGroupSpecs"]}
    assert (
        groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"].get(
            "nvidia.com/gpu"
        )
        is None
    )
    gpu_pod = groups["gpu"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert gpu_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    strategy = render_rayservice(cfg)["spec"]["upgradeStrategy"]
    assert strategy["type"] == "NewClusterWithIncrementalUpgrade"
    assert strategy["clusterUpgradeOptions"]["stepSizePercent"] == 25


@pytest.mark.parametrize("job", sorted(CLUSTER_JOBS))
def test_rayjob_runs_the_pipeline_steps_of_its_job_and_cleans_up(job: str) -> None:
    cfg = load_config(CONFIGS["tiny"], {"cluster.env": {"AWS_ENDPOINT_URL": "http://s3:9000"}})
    spec = render_rayjob(cfg, job)["spec"]
    assert spec["entrypoint"].split()[:2] == ["python", "/opt/opens2s/jobs/pipeline.py"]
    assert "--config /etc/opens2s/platform.yaml" in spec["entrypoint"]
    only = spec["entrypoint"].split("--only ")[1].split(",")
    assert tuple(only) == CLUSTER_JOBS[job] and set(only) <= set(STEPS)
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == cfg.cluster.jobs.ttl_seconds_after_finished
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == "http://s3:9000"
    assert spec["rayClusterSpec"] == render_raycluster(cfg)["spec"]


def test_rayservice_serve_config_is_a_valid_serve_deploy_config_from_the_serve_section() -> None:
    cfg = load_config(CONFIGS["tiny"], {"serve.port": 8123, "serve.app_name": "talk"})
    spec = render_rayservice(cfg)["spec"]
    serve_cfg = yaml.safe_load(spec["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_cfg)
    (app,) = serve_cfg["applications"]
    assert app["name"] == "talk" and app["import_path"] == "opens2s.serving.app:app_builder"
    served = PlatformConfig.model_validate(app["args"]["platform_config"])
    # The RayService serves what the training RayJob exported, unless serve.model_dir says else.
    assert served == served_config(cfg)
    assert served.serve.model_dir == f"{cfg.run_dir}/model"
    assert serve_cfg["http_options"]["port"] == 8123
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}


def _break(manifest: dict, path: list, value: object) -> dict:
    broken = copy.deepcopy(manifest)
    node = broken
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value", "reported"),
    [
        (
            ["spec", "workerGroupSpecs", 0, "minReplicas"],
            "one",
            "$.spec.workerGroupSpecs[0].minReplicas",
        ),
        (["spec", "workerGroupSpecs", 0, "minReplica"], 1, "$.spec.workerGroupSpecs[0].minReplica"),
        (["spec", "workerGroupSpecs", 0, "template"], KeyError, "$.spec.workerGroupSpecs[0]"),
        (
            ["spec", "autoscalerOptions", "upscalingMode"],
            "Fast",
            "$.spec.autoscalerOptions.upscalingMode",
        ),
        (
            [
                "spec",
                "headGroupSpec",
                "template",
                "spec",
                "containers",
                0,
                "resources",
                "limits",
                "cpu",
            ],
            "two",
            "$.spec.headGroupSpec.template.spec.containers[0].resources.limits.cpu",
        ),
        (
            ["spec", "headGroupSpec", "rayStartParams", "num-cpus"],
            0,
            "$.spec.headGroupSpec.rayStartParams.num-cpus",
        ),
        (["metadata", "name"], "Opens2s_Tiny", "$.metadata.name"),
    ],
)
def test_broken_raycluster_fails_with_the_path_of_the_wrong_field(path, value, reported) -> None:
    broken = _break(render_raycluster(load_config(CONFIGS["tiny"])), path, value)
    with pytest.raises(ManifestError) as e:
        validate_manifest(broken)
    assert [p.path for p in e.value.problems] == [reported]
    assert reported in str(e.value)


def test_broken_rayjob_and_rayservice_fail_with_field_paths() -> None:
    cfg = load_config(CONFIGS["tiny"])
    job = _break(render_rayjob(cfg, "train"), ["spec", "ttlSecondsAfterFinished"], "10m")
    assert [p.path for p in manifest_problems(job)] == ["$.spec.ttlSecondsAfterFinished"]
    svc = _break(render_rayservice(cfg), ["spec", "upgradeStrategy", "clusterUpgradeOptions"], {})
    paths = [p.path for p in manifest_problems(svc)]
    assert paths == ["$.spec.upgradeStrategy.clusterUpgradeOptions"] * 3  # three required keys


def test_cluster_section_rejects_wrong_settings_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="min_replicas"):
        load_config(
            None,
            {"cluster.worker_groups": [{"name": "cpu", "min_replicas": 3, "max_replicas": 1}]},
        )
    with pytest.raises(ConfigError, match="cluster.name"):
        load_config(None, {"cluster.name": "OpenS2S"})
    with pytest.raises(ConfigError, match="memory"):
        load_config(None, {"cluster.head.resources.memory": "lots"})
    with pytest.raises(ConfigError, match="max_replica"):
        load_config(None, {"cluster.worker_groups": [{"name": "cpu", "max_replica": 2}]})


def test_tiny_yaml_spells_out_the_embedded_cluster_default() -> None:
    assert load_config(CONFIGS["tiny"]).cluster == ClusterSection()


@pytest.mark.skipif(not SHARED_CRDS.is_dir(), reason="../shared/kuberay-crds not beside this clone")
def test_packaged_crds_are_the_shared_kuberay_crds_unchanged() -> None:
    packaged = ROOT / "platform/opens2s/cluster/crds"
    for file in CRD_FILES.values():
        assert (packaged / file).read_bytes() == (SHARED_CRDS / file).read_bytes(), file


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_ray_node_caps_websocket_messages_in_its_serve_proxy(name: str) -> None:
    from opens2s.serving.proxy_limits import proxy_environment

    spec = render_raycluster(load_config(CONFIGS[name]))["spec"]
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            for key, value in proxy_environment().items():
                assert env.get(key) == value, (container["name"], key)
