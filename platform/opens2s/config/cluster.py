"""The ``cluster`` section of the platform config: where the platform runs beyond a laptop.

Read by ``opens2s.cluster`` (KubeRay RayCluster / RayJob / RayService manifests and the Ray
cluster launcher YAML) and by ``opens2s pipeline --address``. The defaults are the tiny CPU
cluster; ``jobs/configs/opens2s-8b.yaml`` spells out the GPU layout.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Kubernetes object and label names (RFC 1123 labels): what a RayCluster/group name must be.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A Kubernetes resource quantity such as "500m", "2", "4Gi", "1.5".
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def _check_dns_label(value: str, what: str, max_len: int = 40) -> str:
    if not _DNS_LABEL.match(value) or len(value) > max_len:
        raise ValueError(
            f"{what} {value!r} must be lower-case letters, digits and '-', start and end with a "
            f"letter or digit, at most {max_len} characters (a Kubernetes name)"
        )
    return value


class PodResources(BaseModel):
    """Resources of one Ray pod / node: requests equal limits, so Ray sees exactly these."""

    model_config = ConfigDict(extra="forbid")

    cpu: str = "2"
    """Kubernetes CPU quantity ("2", "500m")."""
    memory: str = "4Gi"
    """Kubernetes memory quantity ("4Gi", "512Mi")."""
    gpu: int = Field(0, ge=0)
    """NVIDIA GPUs per pod (``nvidia.com/gpu``)."""

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '2', '500m', '4Gi')")
        return value


class HeadGroup(BaseModel):
    """The Ray head pod (GCS, dashboard, job drivers, Serve controller and proxy)."""

    model_config = ConfigDict(extra="forbid")

    resources: PodResources = PodResources(cpu="2", memory="6Gi")
    ray_start_params: dict[str, str] = {"dashboard-host": "0.0.0.0"}
    """``ray start`` flags without the leading dashes; '"num-cpus": "0"' keeps work off the head."""
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    instance_type: str = "m5.2xlarge"
    """VM type of the head node in the Ray cluster launcher YAML."""


class WorkerGroup(BaseModel):
    """One homogeneous group of Ray worker pods that the autoscaler scales between min and max."""

    model_config = ConfigDict(extra="forbid")

    name: str
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(2, ge=0)
    replicas: int | None = Field(None, ge=0)
    """Pods at creation; None starts at ``min_replicas``."""
    resources: PodResources = PodResources()
    ray_start_params: dict[str, str] = {}
    idle_timeout_seconds: int | None = Field(None, ge=0)
    """Overrides the autoscaler's idle timeout for this group (autoscaler v2)."""
    node_selector: dict[str, str] = {}
    instance_type: str = "m5.2xlarge"
    """VM type of this group in the Ray cluster launcher YAML."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_dns_label(value, "worker group name", max_len=30)

    @model_validator(mode="after")
    def _bounds(self) -> WorkerGroup:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"worker group {self.name!r}: min_replicas ({self.min_replicas}) must be <= "
                f"max_replicas ({self.max_replicas})"
            )
        if self.replicas is not None and not (
            self.min_replicas <= self.replicas <= self.max_replicas
        ):
            raise ValueError(
                f"worker group {self.name!r}: replicas ({self.replicas}) must lie between "
                f"min_replicas ({self.min_replicas}) and max_replicas ({self.max_replicas})"
            )
        return self


class AutoscalerOptions(BaseModel):
    """KubeRay in-tree autoscaling (the Ray autoscaler as a sidecar of the head pod)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    version: Literal["v1", "v2"] = "v2"
    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = "Default"
    idle_timeout_seconds: int = Field(60, ge=0)
    """Seconds a worker stays idle before the autoscaler removes it."""
    resources: PodResources = PodResources(cpu="500m", memory="512Mi")


class JobOptions(BaseModel):
    """How the corpus and training RayJobs run and clean up."""

    model_config = ConfigDict(extra="forbid")

    shutdown_after_job_finishes: bool = True
    """Delete the job's RayCluster when the job ends (its outputs are in run_dir)."""
    ttl_seconds_after_finished: int = Field(600, ge=0)
    """Seconds the finished cluster is kept (for logs) before it is deleted."""
    active_deadline_seconds: int | None = Field(None, gt=0)
    """Fail the job after this long; None: no deadline."""
    backoff_limit: int = Field(0, ge=0)
    """Retries of a failed job (each on a fresh cluster); steps resume from their outputs."""
    submission_mode: Literal["K8sJobMode", "HTTPMode", "SidecarMode"] = "K8sJobMode"


class ServiceOptions(BaseModel):
    """How the RayService rolls out a new cluster when the cluster spec changes."""

    model_config = ConfigDict(extra="forbid")

    upgrade_strategy: Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"] = (
        "NewCluster"
    )
    """NewCluster: blue/green (200% capacity while upgrading); NewClusterWithIncrementalUpgrade
    (KubeRay >= 1.5, needs the Gateway API): shift traffic step by step; None: never."""
    gateway_class_name: str = "istio"
    step_size_percent: int = Field(25, ge=1, le=100)
    interval_seconds: int = Field(30, ge=1)
    max_surge_percent: int = Field(100, ge=1, le=100)
    deployment_unhealthy_threshold_seconds: int = Field(300, ge=1)
    """How long a Serve deployment may be unhealthy before KubeRay replaces the cluster."""


class LauncherOptions(BaseModel):
    """The Ray cluster launcher YAML (``ray up``) for VMs: same head and worker groups."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["aws"] = "aws"
    region: str = "us-west-2"
    ssh_user: str = "ubuntu"
    image_id: str | None = None
    """Machine image; None lets Ray pick its default Deep Learning AMI."""


class ClusterSection(BaseModel):
    """A Ray cluster for the platform: the image, the pods and how jobs and serving use them."""

    model_config = ConfigDict(extra="forbid")

    name: str = "opens2s-tiny"
    """Base name of every rendered object (RayCluster, RayJobs ``<name>-corpus`` ...)."""
    namespace: str = "default"
    image: str = "ghcr.io/opens2s/opens2s-platform:0.1.0-cpu"
    """Container image with the package installed (built from ``cluster/Dockerfile``)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    ray_version: str = "2.60.0"
    auth_mode: Literal["token", "disabled"] = "token"
    """Ray token authentication (Ray >= 2.52); KubeRay creates the token Secret."""
    app_dir: str = "/opt/opens2s"
    """Where the image holds the repository (``jobs/`` entrypoints)."""
    config_mount_path: str = "/etc/opens2s"
    """Where pods see the rendered platform config (a ConfigMap, ``platform.yaml``)."""
    env: dict[str, str] = {}
    """Environment of every pod and job (e.g. ``AWS_ENDPOINT_URL`` for an S3 run_dir)."""
    env_secret: str | None = None
    """A Kubernetes Secret whose keys become environment variables (S3 credentials)."""
    serve_auth_secret: str | None = None
    """An existing Kubernetes Secret whose key ``token`` holds the Serve bearer token. None with
    ``serve.auth_token`` set: the render writes that Secret (``secret-serve-auth.yaml``, named
    ``<name>-serve-auth``); no other rendered file carries the token."""
    head: HeadGroup = HeadGroup()
    worker_groups: list[WorkerGroup] = [
        WorkerGroup(name="cpu", min_replicas=1, max_replicas=2, resources=PodResources())
    ]
    autoscaler: AutoscalerOptions = AutoscalerOptions()
    jobs: JobOptions = JobOptions()
    service: ServiceOptions = ServiceOptions()
    launcher: LauncherOptions = LauncherOptions()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # RayJob names get "-corpus"/"-train" appended and KubeRay adds pod suffixes: keep room.
        return _check_dns_label(value, "cluster.name", max_len=30)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_dns_label(value, "cluster.namespace", max_len=63)

    @model_validator(mode="after")
    def _unique_groups(self) -> ClusterSection:
        names = [g.name for g in self.worker_groups]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"cluster.worker_groups names must be unique; repeated: {duplicates}")
        return self
