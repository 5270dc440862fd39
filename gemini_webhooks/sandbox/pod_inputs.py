"""What a pod reads, resolved for a loopback process — pure: the ConfigMaps and Secrets it
names, its volumes as files (ConfigMap, Secret, projected: downward API and ServiceAccount
tokens too), its environment with `$(VAR)` expansion, and the table that maps a path
under a `mountPath` to where that volume was written."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

JSON = dict[str, Any]
# (kind, namespace, name) -> the object's string data, or None when it does not exist.
Lookup = Callable[[str, str, str], Mapping[str, str] | None]

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class PodPlanError(ValueError):
    """The pod cannot start as specified (e.g. a required Secret is missing)."""


def decode_secret_data(secret: JSON) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def referenced_objects(pod_spec: JSON) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the Pod's volumes and env name."""
    wanted: set[tuple[str, str]] = set()
    for volume in pod_spec.get("volumes") or []:
        sources = (volume.get("projected") or {}).get("sources") or [volume]
        for source in sources:
            if "configMap" in source:
                wanted.add(("ConfigMap", source["configMap"].get("name", "")))
            if "secret" in source:
                secret = source["secret"]
                wanted.add(("Secret", secret.get("secretName") or secret.get("name", "")))
    for container in pod_spec.get("containers") or []:
        for var in container.get("env") or []:
            value_from = var.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                wanted.add(("ConfigMap", value_from["configMapKeyRef"]["name"]))
            if "secretKeyRef" in value_from:
                wanted.add(("Secret", value_from["secretKeyRef"]["name"]))
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                wanted.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                wanted.add(("Secret", source["secretRef"]["name"]))
    return wanted


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written; `$$` is `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, value)


class Mounts:
    """Maps container paths under a mountPath to where the volume lives on disk."""

    def __init__(self) -> None:
        self.table: list[tuple[PurePosixPath, Path]] = []

    def add(self, mount_path: str, host_path: Path) -> None:
        self.table.append((PurePosixPath(mount_path), host_path))
        self.table.sort(key=lambda item: len(item[0].parts), reverse=True)

    def rewrite(self, value: str) -> str:
        if not value.startswith("/"):
            # `--flag=/path` forms
            head, sep, tail = value.partition("=")
            if sep and tail.startswith("/"):
                return head + sep + self.rewrite(tail)
            return value
        path = PurePosixPath(value)
        for mount, host in self.table:
            if path == mount or mount in path.parents:
                relative = path.relative_to(mount)
                return str(host / relative) if relative.parts else str(host)
        return value

    def rewrite_tree(self, document: Any) -> Any:
        if isinstance(document, dict):
            return {k: self.rewrite_tree(v) for k, v in document.items()}
        if isinstance(document, list):
            return [self.rewrite_tree(v) for v in document]
        if isinstance(document, str):
            return self.rewrite(document)
        return document


def _items(source: JSON, data: Mapping[str, str]) -> dict[str, str]:
    """The files a ConfigMap/Secret volume source projects: all keys, or `items`."""
    items = source.get("items")
    if not items:
        return dict(data)
    out = {}
    for item in items:
        key = item["key"]
        if key in data:
            out[item.get("path", key)] = data[key]
    return out


def _downward_files(source: JSON, pod: Mapping[str, str]) -> dict[str, str]:
    files = {}
    for item in source.get("items") or []:
        field_path = (item.get("fieldRef") or {}).get("fieldPath", "")
        if field_path not in pod:
            raise PodPlanError(
                f"downwardAPI {item.get('path')}: {field_path or '?'} is not emulated"
            )
        files[item["path"]] = pod[field_path]
    return files


def volume_files(
    volume: JSON,
    namespace: str,
    lookup: Lookup,
    pod: Mapping[str, str] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> tuple[dict[str, str] | None, list[str]]:
    """The files of one volume (relative path -> text), or None for an emptyDir.

    `pod` holds the downward API's fields; `tokens` the service-account tokens a node
    requested for this pod, by audience ("" for the API server's own)."""
    warnings: list[str] = []
    name = volume["name"]
    if "emptyDir" in volume:
        return None, warnings
    sources: list[tuple[str, JSON]] = []
    files: dict[str, str] = {}
    if "configMap" in volume:
        sources.append(("ConfigMap", volume["configMap"]))
    elif "secret" in volume:
        sources.append(("Secret", volume["secret"]))
    elif "projected" in volume:
        for source in volume["projected"].get("sources") or []:
            if "configMap" in source:
                sources.append(("ConfigMap", source["configMap"]))
            elif "secret" in source:
                sources.append(("Secret", source["secret"]))
            elif "downwardAPI" in source and pod is not None:
                files.update(_downward_files(source["downwardAPI"], pod))
            elif "serviceAccountToken" in source and tokens is not None:
                token_source = source["serviceAccountToken"]
                audience = token_source.get("audience", "")
                if audience not in tokens:
                    raise PodPlanError(f"volume {name}: no token for audience {audience!r}")
                files[token_source["path"]] = tokens[audience]
            else:
                kind = next(iter(source), "?")
                warnings.append(f"volume {name}: projected source {kind} is not emulated")
    else:
        kind = next((k for k in volume if k != "name"), "?")
        warnings.append(f"volume {name}: type {kind} is not emulated (left empty)")
        return {}, warnings
    for kind, source in sources:
        object_name = source.get("secretName") or source.get("name") or ""
        data = lookup(kind, namespace, object_name)
        if data is None:
            if source.get("optional"):
                continue
            raise PodPlanError(f"volume {name}: {kind} {namespace}/{object_name} not found")
        files.update(_items(source, data))
    return files, warnings


def container_env(
    container: JSON, namespace: str, pod: Mapping[str, str], lookup: Lookup
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                ref = source[key]
                data = lookup(kind, namespace, ref["name"])
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise PodPlanError(f"envFrom: {kind} {namespace}/{ref['name']} not found")
                env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var["value"]), env)
            continue
        value_from = var.get("valueFrom") or {}
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if key in value_from:
                ref = value_from[key]
                data = lookup(kind, namespace, ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        break
                    raise PodPlanError(
                        f"env {name}: key {ref['key']!r} of {kind} {namespace}/{ref['name']} "
                        "not found"
                    )
                env[name] = data[ref["key"]]
                break
        else:
            if "fieldRef" in value_from:
                field_path = value_from["fieldRef"]["fieldPath"]
                if field_path not in pod:
                    raise PodPlanError(f"env {name}: fieldRef {field_path} is not emulated")
                env[name] = pod[field_path]
            elif value_from:
                kind = next(iter(value_from))
                raise PodPlanError(f"env {name}: {kind} is not emulated")
    return env
