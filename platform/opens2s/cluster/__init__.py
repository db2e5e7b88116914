"""Cluster deployment from the one config: KubeRay RayCluster / RayJob / RayService manifests,
checked against the KubeRay CRD schemas, and the Ray cluster launcher YAML for VMs."""

from opens2s.cluster.crd_validation import (
    ManifestError,
    SchemaProblem,
    manifest_problems,
    validate_manifest,
)
from opens2s.cluster.launcher import launcher_problems, render_launcher
from opens2s.cluster.raycluster import render_config_map, render_raycluster
from opens2s.cluster.rayjob import render_rayjob
from opens2s.cluster.rayservice import render_rayservice, serve_config
from opens2s.cluster.render import render_manifests, write_cluster_files

__all__ = [
    "ManifestError",
    "SchemaProblem",
    "launcher_problems",
    "manifest_problems",
    "render_config_map",
    "render_launcher",
    "render_manifests",
    "render_raycluster",
    "render_rayjob",
    "render_rayservice",
    "serve_config",
    "validate_manifest",
    "write_cluster_files",
]
