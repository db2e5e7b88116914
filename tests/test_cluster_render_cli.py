"""``opens2s cluster render`` writes valid files; ``opens2s cluster validate`` names a bad field;
the committed examples under cluster/examples are what the configs render; the launcher YAML
passes Ray's own schema with the same worker groups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from opens2s.cluster import launcher_problems, render_launcher, render_manifests
from opens2s.config import load_config

ROOT = Path(__file__).resolve().parents[1]
OPENS2S = str(Path(sys.executable).parent / "opens2s")
EXAMPLES = {"tiny-cpu": "jobs/configs/tiny.yaml", "opens2s-8b-gpu": "jobs/configs/opens2s-8b.yaml"}

pytestmark = pytest.mark.timeout(180)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([OPENS2S, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_render_writes_every_file_and_validate_accepts_them(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    r = _run("cluster", "render", "--config", "jobs/configs/tiny.yaml", "--out", str(out))
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "configmap.yaml",
        "platform.yaml",
        "ray-cluster-launcher.yaml",
        "raycluster.yaml",
        "rayjob-corpus.yaml",
        "rayjob-eval.yaml",
        "rayjob-train.yaml",
        "rayservice.yaml",
    ]
    # The ConfigMap carries the config the pods read: loading it gives back the same config.
    cm = yaml.safe_load((out / "configmap.yaml").read_text())
    (tmp_path / "from-cm.yaml").write_text(cm["data"]["platform.yaml"])
    assert load_config(tmp_path / "from-cm.yaml") == load_config(ROOT / "jobs/configs/tiny.yaml")
    r = _run("cluster", "validate", *(str(p) for p in sorted(out.glob("ray*.yaml"))))
    assert r.returncode == 0, r.stderr


def test_validate_cli_fails_on_a_broken_manifest_with_the_field_path(tmp_path: Path) -> None:
    manifest = render_manifests(load_config(ROOT / "jobs/configs/tiny.yaml"))["rayservice.yaml"]
    manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "2"
    bad = tmp_path / "rayservice.yaml"
    bad.write_text(yaml.safe_dump(manifest))
    r = _run("cluster", "validate", str(bad))
    assert r.returncode == 1
    assert "$.spec.rayClusterConfig.workerGroupSpecs[0].maxReplicas" in r.stderr


def test_render_refuses_a_config_with_an_unknown_cluster_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("cluster:\n  worker_groups:\n    - name: cpu\n      max_replica: 2\n")
    r = _run("cluster", "render", "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "max_replica" in r.stderr
    assert not (tmp_path / "out").exists()


def _without_embedded_config(manifest: dict) -> dict:
    """The manifest less the inline platform config, whose other sections other parts change."""
    if manifest["kind"] == "RayService":
        serve_cfg = yaml.safe_load(manifest["spec"]["serveConfigV2"])
        for app in serve_cfg["applications"]:
            app["args"].pop("platform_config", None)
        manifest = {**manifest, "spec": {**manifest["spec"], "serveConfigV2": serve_cfg}}
    return manifest


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_committed_examples_are_what_the_config_renders(example: str) -> None:
    fresh = render_manifests(load_config(ROOT / EXAMPLES[example]))
    for name, manifest in fresh.items():
        if manifest["kind"] == "ConfigMap":
            continue
        committed = yaml.safe_load((ROOT / "cluster/examples" / example / name).read_text())
        assert _without_embedded_config(committed) == _without_embedded_config(manifest), (
            f"cluster/examples/{example}/{name} is stale: rerun `opens2s cluster render "
            f"--config {EXAMPLES[example]} --out cluster/examples/{example}`"
        )


@pytest.mark.parametrize("config", sorted(EXAMPLES.values()))
def test_launcher_yaml_passes_ray_schema_with_the_same_worker_groups(config: str) -> None:
    cfg = load_config(ROOT / config)
    launcher = render_launcher(cfg)
    assert launcher_problems(launcher) == []
    node_types = launcher["available_node_types"]
    assert set(node_types) == {"head"} | {g.name for g in cfg.cluster.worker_groups}
    for g in cfg.cluster.worker_groups:
        assert (node_types[g.name]["min_workers"], node_types[g.name]["max_workers"]) == (
            g.min_replicas,
            g.max_replicas,
        )
    assert launcher["docker"]["image"] == cfg.cluster.image
    launcher["available_node_types"]["head"]["resources"] = {"CPU": "eight"}
    assert launcher_problems(launcher) == [
        "$.available_node_types.head.resources.CPU: 'eight' is not of type 'integer'"
    ]
