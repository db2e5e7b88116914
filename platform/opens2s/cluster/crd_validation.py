"""Check KubeRay manifests against the CRDs' openAPIV3Schema, as a Kubernetes API server would.

The schemas are the KubeRay ray.io/v1 CRDs shipped in ``opens2s/cluster/crds/``. Validation follows
the structural-schema rules the API server applies with strict field validation (``kubectl apply``'s
default): an unknown field is an error unless the schema preserves unknown fields, ``nullable``
allows null, ``x-kubernetes-list-type: map|set`` lists have unique keys / items. The CEL rules
(``x-kubernetes-validations``) are not evaluated; they guard fields the renderers never set
(deletionStrategy, managedBy, GCS fault tolerance).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
API_VERSION = "ray.io/v1"
# metadata.name of a custom resource: a DNS subdomain (the API server checks it, not the CRD).
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class SchemaProblem:
    """One violation: the JSON path of the offending field and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ManifestError(ValueError):
    """A manifest that the Kubernetes API server would reject; ``problems`` name each field."""

    def __init__(self, where: str, problems: list[SchemaProblem]) -> None:
        self.where = where
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{where} does not match its KubeRay CRD schema:\n{lines}")


def _strict(schema: Any) -> Any:
    """Turn a CRD structural schema into a JSON schema with the API server's semantics."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        out["additionalProperties"] = False
    return out


def _unique_list(validator, list_type, instance, schema):  # noqa: ANN001 (jsonschema API)
    """``x-kubernetes-list-type``: ``set`` items are unique, ``map`` items are unique by keys."""
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen: list[Any] = []
        for item in instance:
            if item in seen:
                yield jsonschema.ValidationError(f"duplicate entry {item!r} in a list-type set")
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: set[tuple] = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in seen_keys:
                yield jsonschema.ValidationError(
                    f"duplicate entry with {dict(zip(keys, key, strict=True))} (keys {keys} "
                    "must be unique)"
                )
            seen_keys.add(key)


_KubeValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-type": _unique_list}
)


@cache
def crd_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    """The strict openAPIV3Schema of one KubeRay kind (``RayCluster``, ``RayJob``, ``RayService``)."""
    if kind not in CRD_FILES:
        raise ValueError(f"unknown KubeRay kind {kind!r}; expected one of {sorted(CRD_FILES)}")
    text = resources.files("opens2s.cluster").joinpath("crds", CRD_FILES[kind]).read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(text, Loader=loader)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    raise ValueError(f"the {kind} CRD has no version {version!r}")


@cache
def _validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    return _KubeValidator(crd_schema(kind, version))


def _path(error: jsonschema.ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    # An unknown field is reported on its parent object: name the field itself.
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {})
        extra = sorted(k for k in error.instance if k not in allowed)
        if len(extra) == 1:
            path += f".{extra[0]}"
    return path


def manifest_problems(manifest: dict[str, Any]) -> list[SchemaProblem]:
    """Every schema violation of a KubeRay manifest, sorted by field path (empty when valid)."""
    problems: list[SchemaProblem] = []
    api, kind = manifest.get("apiVersion"), manifest.get("kind")
    if kind not in CRD_FILES:
        return [SchemaProblem("$.kind", f"{kind!r} is not one of {sorted(CRD_FILES)}")]
    if api != API_VERSION:
        problems.append(SchemaProblem("$.apiVersion", f"{api!r} should be {API_VERSION!r}"))
    name = (manifest.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        problems.append(
            SchemaProblem(
                "$.metadata.name", f"{name!r} is not a DNS subdomain (a-z, 0-9, '-', '.')"
            )
        )
    for error in _validator(kind, "v1").iter_errors(manifest):
        problems.append(SchemaProblem(_path(error), error.message))
    return sorted(problems, key=lambda p: p.path)


def validate_manifest(manifest: dict[str, Any], where: str | None = None) -> None:
    """Raise :class:`ManifestError` naming each wrong field when the manifest is not valid."""
    problems = manifest_problems(manifest)
    if problems:
        label = where or f"{manifest.get('kind')} {(manifest.get('metadata') or {}).get('name')!r}"
        raise ManifestError(label, problems)
