"""The KubeRay RayCluster: head and worker groups, pod templates and in-tree autoscaling.

``raycluster_spec`` is shared by the RayCluster itself, every RayJob (``rayClusterSpec``) and the
RayService (``rayClusterConfig``), so the three always describe the same cluster.
"""

from __future__ import annotations

from typing import Any

from opens2s.config import AUTH_TOKEN_ENV, PlatformConfig
from opens2s.config.cluster import ClusterSection, PodResources
from opens2s.serving.proxy_limits import proxy_environment

CONFIG_FILE = "platform.yaml"
CONFIG_VOLUME = "opens2s-config"
# Ray's ports on the head: GCS, dashboard (Jobs API), Ray client; Serve's comes from the config.
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}


def config_map_name(cluster: ClusterSection) -> str:
    """Name of the ConfigMap that carries the platform config into every pod."""
    return f"{cluster.name}-config"


def config_path(cluster: ClusterSection) -> str:
    """Where a pod reads the platform config."""
    return f"{cluster.config_mount_path.rstrip('/')}/{CONFIG_FILE}"


def render_config_map(cfg: PlatformConfig) -> dict[str, Any]:
    """A ConfigMap holding the platform config the user wrote, less its secrets (the Serve token
    reaches the pods from a Secret: :func:`serve_auth_secret_name`)."""
    c = cfg.cluster
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(c), "namespace": c.namespace, "labels": labels(c)},
        "data": {CONFIG_FILE: cfg.without_secrets().to_yaml()},
    }


def serve_auth_secret_name(cfg: PlatformConfig) -> str | None:
    """The Secret whose key ``token`` holds the Serve bearer token: ``cluster.serve_auth_secret``,
    else ``<name>-serve-auth`` when ``serve.auth_token`` is set; None when auth is off."""
    if cfg.cluster.serve_auth_secret:
        return cfg.cluster.serve_auth_secret
    return f"{cfg.cluster.name}-serve-auth" if cfg.serve.auth_token else None


def render_serve_auth_secret(cfg: PlatformConfig) -> dict[str, Any] | None:
    """The Secret holding ``serve.auth_token`` (None when the config names an existing one or
    has no token). Apply it, do not commit it."""
    if cfg.cluster.serve_auth_secret or not cfg.serve.auth_token:
        return None
    c = cfg.cluster
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": serve_auth_secret_name(cfg),
            "namespace": c.namespace,
            "labels": labels(c),
        },
        "type": "Opaque",
        "stringData": {"token": cfg.serve.auth_token},
    }


def labels(cluster: ClusterSection) -> dict[str, str]:
    """Labels on every rendered object."""
    return {"app.kubernetes.io/name": "opens2s", "app.kubernetes.io/instance": cluster.name}


def _resources(r: PodResources) -> dict[str, Any]:
    # requests == limits: Ray advertises what the container may really use.
    amounts: dict[str, Any] = {"cpu": r.cpu, "memory": r.memory}
    if r.gpu:
        amounts["nvidia.com/gpu"] = r.gpu
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _env(cluster: ClusterSection) -> list[dict[str, str]]:
    # Every node's Serve proxy caps WebSocket messages (serving/proxy_limits.py); cluster.env
    # may override the cap.
    env = {"OPENS2S_CONFIG": config_path(cluster), **proxy_environment(), **cluster.env}
    return [{"name": k, "value": v} for k, v in env.items()]


def _pod_template(
    cluster: ClusterSection, container: str, r: PodResources, *, ports: dict[str, int] | None = None
) -> dict:
    c: dict[str, Any] = {
        "name": container,
        "image": cluster.image,
        "imagePullPolicy": cluster.image_pull_policy,
        "resources": _resources(r),
        "env": _env(cluster),
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": cluster.config_mount_path, "readOnly": True}
        ],
    }
    if cluster.env_secret:
        c["envFrom"] = [{"secretRef": {"name": cluster.env_secret}}]
    if ports:
        c["ports"] = [{"name": n, "containerPort": p} for n, p in ports.items()]
    spec: dict[str, Any] = {
        "containers": [c],
        "volumes": [{"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(cluster)}}],
    }
    if cluster.autoscaler.enabled and cluster.autoscaler.version == "v2":
        # Autoscaler v2 replaces failed pods itself; a restarted container would confuse it.
        spec["restartPolicy"] = "Never"
    if r.gpu:
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {"metadata": {"labels": labels(cluster)}, "spec": spec}


def _worker_groups(cluster: ClusterSection) -> list[dict[str, Any]]:
    groups = []
    for g in cluster.worker_groups:
        template = _pod_template(cluster, "ray-worker", g.resources)
        if g.node_selector:
            template["spec"]["nodeSelector"] = dict(g.node_selector)
        group: dict[str, Any] = {
            "groupName": g.name,
            "replicas": g.min_replicas if g.replicas is None else g.replicas,
            "minReplicas": g.min_replicas,
            "maxReplicas": g.max_replicas,
            "rayStartParams": dict(g.ray_start_params),
            "template": template,
        }
        if g.idle_timeout_seconds is not None:
            group["idleTimeoutSeconds"] = g.idle_timeout_seconds
        groups.append(group)
    return groups


def raycluster_spec(cfg: PlatformConfig) -> dict[str, Any]:
    """The RayCluster ``spec``: head, worker groups, autoscaler, auth."""
    c = cfg.cluster
    spec: dict[str, Any] = {
        "rayVersion": c.ray_version,
        "enableInTreeAutoscaling": c.autoscaler.enabled,
        "authOptions": {"mode": c.auth_mode},
        "headGroupSpec": {
            "serviceType": c.head.service_type,
            "rayStartParams": dict(c.head.ray_start_params),
            "template": _pod_template(
                c, "ray-head", c.head.resources, ports={**HEAD_PORTS, "serve": cfg.serve.port}
            ),
        },
        "workerGroupSpecs": _worker_groups(c),
    }
    secret = serve_auth_secret_name(cfg)
    if secret:  # the token as an environment variable from the Secret, never in plain text
        token_env = {
            "name": AUTH_TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}},
        }
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            for container in group["template"]["spec"]["containers"]:
                container["env"].append(dict(token_env))
    if c.autoscaler.enabled:
        a = c.autoscaler
        spec["autoscalerOptions"] = {
            "version": a.version,
            "upscalingMode": a.upscaling_mode,
            "idleTimeoutSeconds": a.idle_timeout_seconds,
            "imagePullPolicy": c.image_pull_policy,
            "resources": _resources(a.resources),
        }
    return spec


def render_raycluster(cfg: PlatformConfig) -> dict[str, Any]:
    """A long-lived RayCluster (for ``ray job submit`` / ``opens2s pipeline --address``)."""
    c = cfg.cluster
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": c.name, "namespace": c.namespace, "labels": labels(c)},
        "spec": raycluster_spec(cfg),
    }
