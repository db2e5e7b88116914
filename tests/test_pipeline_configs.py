"""jobs/configs/tiny.yaml is the embedded default spelled out (section by section, as its header
promises), and opens2s-8b.yaml loads: the demo and the GPU layout start from valid configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from opens2s.config import PlatformConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "jobs/configs/tiny.yaml"

pytestmark = pytest.mark.timeout(60)


def test_tiny_yaml_equals_the_embedded_default_in_every_section_it_spells_out() -> None:
    raw = yaml.safe_load(TINY.read_text())
    loaded = load_config(TINY)
    default = PlatformConfig()
    assert loaded.run_dir == default.run_dir
    differing = [
        section
        for section in raw
        if section != "run_dir" and getattr(loaded, section) != getattr(default, section)
    ]
    assert differing == [], f"tiny.yaml sections differ from the schema defaults: {differing}"


def test_gpu_config_loads_with_s3_run_dir_and_gpu_workers() -> None:
    cfg = load_config(ROOT / "jobs/configs/opens2s-8b.yaml")
    assert cfg.run_dir.startswith("s3://")
    assert any(g.resources.gpu > 0 for g in cfg.cluster.worker_groups)
    assert any(g.resources.gpu == 0 for g in cfg.cluster.worker_groups)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "jobs/configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_config_loads_and_renders_valid_kuberay_manifests(path: Path) -> None:
    from opens2s.cluster import manifest_problems, render_manifests

    cfg = load_config(path)
    for name, manifest in render_manifests(cfg).items():
        if manifest["kind"] != "ConfigMap":
            assert manifest_problems(manifest) == [], (path.name, name)
