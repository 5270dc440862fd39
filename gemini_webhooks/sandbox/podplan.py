"""From a Deployment's pod template to a process: what to write, what to run — pure.

The sandbox plays the kubelet for the operator's receiver Deployments only. A pod there
is one process on loopback, so three things differ from a node, and each is a rule here:

- Volumes (ConfigMap, Secret, projected, emptyDir) are written under the pod's directory,
  and every path under a `mountPath` — in the command, the args, the env and the
  receiver's config file — is rewritten to where that volume was written.
- Pods share the host's network: each `containerPort` gets its own loopback port, and the
  receiver's config file (the `listen`/`internal` sections of its documented format) is
  rewritten to bind those ports on 127.0.0.1; so are the operator's port flags
  (`--metrics-port=N`, the port of `--liveness=URL`) when N is a `containerPort`.
- Nothing else is emulated: no image (the command runs from this virtualenv, whose
  binaries come first on the pod's PATH, as the image's do), no resource limits, no
  security context (the process runs as the sandbox's user).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

JSON = dict[str, Any]
# (kind, namespace, name) -> the object's string data, or None when it does not exist.
Lookup = Callable[[str, str, str], Mapping[str, str] | None]

IMAGE_ENTRYPOINT = ("gemini-webhooks",)  # the Dockerfile's ENTRYPOINT
CONFIG_FLAG = "--config"
# The operator's flags that bind a port: given as a number, or as the port of a URL.
PORT_FLAGS = ("--metrics-port",)
URL_PORT_FLAGS = ("--liveness",)
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class PodPlanError(ValueError):
    """The pod cannot start as specified (e.g. a required Secret is missing)."""


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str
    host_port: int


@dataclass(frozen=True)
class Probe:
    kind: str  # "http" or "tcp"
    port: int  # host port
    path: str = "/"


@dataclass
class PodPlan:
    argv: list[str]
    env: dict[str, str]
    files: dict[Path, bytes]  # absolute path -> content
    dirs: list[Path]
    cwd: Path
    ports: list[ContainerPort]
    readiness: Probe | None
    warnings: list[str] = field(default_factory=list)

    def host_port(self, port: int | str) -> int | None:
        """The loopback port of a container port given by number or name."""
        for p in self.ports:
            if port in (p.container_port, p.name):
                return p.host_port
        return None


def template_hash(deployment: JSON) -> str:
    """What decides a restart: the pod template, as Kubernetes rolls on its change."""
    template = deployment.get("spec", {}).get("template", {})
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


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


class _Mounts:
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


def _volume_files(
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


def _env(container: JSON, namespace: str, pod: Mapping[str, str], lookup: Lookup) -> dict[str, str]:
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


def _rewrite_receiver_config(
    text: str, ports: list[ContainerPort], mounts: _Mounts
) -> tuple[str, list[str]]:
    """Bind the receiver's `listen`/`internal` ports to their loopback ports; rewrite paths."""
    warnings: list[str] = []
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return text, ["the --config file is not YAML; ports and paths left as written"]
    if not isinstance(document, dict):
        return text, warnings
    document = mounts.rewrite_tree(document)
    by_container_port = {p.container_port: p.host_port for p in ports}
    for section, default_port in (("listen", 8080), ("internal", 9090)):
        settings = dict(document.get(section) or {})
        container_port = int(settings.get("port", default_port))
        host_port = by_container_port.get(container_port)
        if host_port is None:
            warnings.append(
                f"config {section}.port {container_port} is not a containerPort; "
                "it is not reachable through a Service"
            )
            continue
        settings["host"] = "127.0.0.1"
        settings["port"] = host_port
        document[section] = settings
    return yaml.safe_dump(document, sort_keys=False), warnings


def _rewrite_port_flags(argv: list[str], ports: list[ContainerPort]) -> list[str]:
    """`--metrics-port=9090` and `--liveness=http://0.0.0.0:8080/healthz` (or the flag and
    its value as two arguments) bind the loopback ports of those containerPorts."""
    by_container_port = {p.container_port: p.host_port for p in ports}

    def rewrite(flag: str, value: str) -> str:
        if flag in PORT_FLAGS:
            host_port = by_container_port.get(int(value)) if value.isdigit() else None
            return value if host_port is None else str(host_port)
        parts = urllib.parse.urlsplit(value)
        try:
            container_port = parts.port
        except ValueError:
            return value
        host_port = by_container_port.get(container_port) if container_port else None
        if host_port is None or parts.hostname is None:
            return value
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{host_port}"))

    flags = PORT_FLAGS + URL_PORT_FLAGS
    out = list(argv)
    for index, arg in enumerate(out):
        flag, sep, value = arg.partition("=")
        if sep and flag in flags:
            out[index] = f"{flag}={rewrite(flag, value)}"
        elif arg in flags and index + 1 < len(out):
            out[index + 1] = rewrite(arg, out[index + 1])
    return out


def plan_pod(
    deployment: JSON,
    *,
    lookup: Lookup,
    pod_dir: Path,
    host_ports: Mapping[int, int],
    executables: Callable[[str], str],
    base_env: Mapping[str, str],
) -> PodPlan:
    """Everything needed to run the Deployment's pod as one local process.

    `host_ports` maps each containerPort to its loopback port; `executables` resolves a
    command name (the image's binaries are this virtualenv's); `base_env` is what every
    pod gets from the sandbox (KUBECONFIG, HTTP_PROXY and NO_PROXY, PATH).
    """
    metadata = deployment["metadata"]
    namespace = metadata.get("namespace", "default")
    template = deployment["spec"]["template"]
    pod_spec = template.get("spec") or {}
    pod_name = f"{metadata['name']}-{template_hash(deployment)[:10]}"
    pod_fields = {
        "metadata.name": pod_name,
        "metadata.namespace": namespace,
        "metadata.uid": pod_name,
        "spec.nodeName": "sandbox",
        "spec.serviceAccountName": pod_spec.get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    for key, value in (template.get("metadata", {}).get("labels") or {}).items():
        pod_fields[f"metadata.labels['{key}']"] = value
    return _plan_spec(
        namespace,
        pod_spec,
        pod_fields,
        lookup=lookup,
        tokens=None,
        pod_dir=pod_dir,
        host_ports=host_ports,
        executables=executables,
        base_env=base_env,
    )


def plan_pod_object(
    pod: JSON,
    *,
    lookup: Lookup,
    tokens: Mapping[str, str],
    pod_dir: Path,
    host_ports: Mapping[int, int],
    executables: Callable[[str], str],
    base_env: Mapping[str, str],
    pod_ip: str = "127.0.0.1",
) -> PodPlan:
    """The same for a Pod a node was given: its own name and uid, the node it is bound to,
    its address (`pod_ip`), the downward API and the projected service-account tokens
    (`tokens`, by audience)."""
    metadata = pod["metadata"]
    namespace = metadata.get("namespace", "default")
    pod_spec = pod.get("spec") or {}
    pod_fields = {
        "metadata.name": metadata["name"],
        "metadata.namespace": namespace,
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": pod_spec.get("nodeName", ""),
        "spec.serviceAccountName": pod_spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.hostIP": "127.0.0.1",
    }
    for key, value in (metadata.get("labels") or {}).items():
        pod_fields[f"metadata.labels['{key}']"] = value
    return _plan_spec(
        namespace,
        pod_spec,
        pod_fields,
        lookup=lookup,
        tokens=tokens,
        pod_dir=pod_dir,
        host_ports=host_ports,
        executables=executables,
        base_env=base_env,
    )


def _plan_spec(
    namespace: str,
    pod_spec: JSON,
    pod_fields: Mapping[str, str],
    *,
    lookup: Lookup,
    tokens: Mapping[str, str] | None,
    pod_dir: Path,
    host_ports: Mapping[int, int],
    executables: Callable[[str], str],
    base_env: Mapping[str, str],
) -> PodPlan:
    containers = pod_spec.get("containers") or []
    if not containers:
        raise PodPlanError("the pod template has no containers")
    container = containers[0]
    warnings = [
        f"container {c.get('name')} is not run (the sandbox runs the first container only)"
        for c in containers[1:]
    ]

    ports = []
    for port in container.get("ports") or []:
        number = int(port["containerPort"])
        if number not in host_ports:
            raise PodPlanError(f"no loopback port allocated for containerPort {number}")
        ports.append(ContainerPort(number, port.get("name", ""), host_ports[number]))

    files: dict[Path, bytes] = {}
    dirs: list[Path] = []
    mounts = _Mounts()
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    volume_files: dict[str, dict[str, str] | None] = {}
    for name, volume in volumes.items():
        content, volume_warnings = _volume_files(volume, namespace, lookup, pod_fields, tokens)
        volume_files[name] = content
        warnings.extend(volume_warnings)
    for index, mount in enumerate(container.get("volumeMounts") or []):
        name = mount["name"]
        if name not in volumes:
            raise PodPlanError(f"volumeMount {name}: no such volume")
        host = pod_dir / "volumes" / f"{index}-{name}"
        content = volume_files[name]
        sub_path = mount.get("subPath", "")
        if content is None:
            dirs.append(host)
        else:
            for relative, text in content.items():
                files[host / relative] = text.encode()
            dirs.append(host)
        mounts.add(mount["mountPath"], host / sub_path if sub_path else host)

    env = dict(base_env)
    image_bin = os.path.dirname(executables(IMAGE_ENTRYPOINT[0]))
    if image_bin:  # a shell in the command finds the image's binaries by name
        rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != image_bin]
        env["PATH"] = os.pathsep.join([image_bin, *rest])
    container_env = _env(container, namespace, pod_fields, lookup)
    env.update({k: mounts.rewrite(v) for k, v in container_env.items()})

    command = list(container.get("command") or IMAGE_ENTRYPOINT)
    args = [] if "command" in container and "args" not in container else container.get("args")
    argv = [mounts.rewrite(expand(a, container_env)) for a in command + list(args or [])]
    argv[0] = executables(argv[0])
    argv = _rewrite_port_flags(argv, ports)

    if CONFIG_FLAG in argv[:-1]:
        config_path = Path(argv[argv.index(CONFIG_FLAG) + 1])
        if config_path in files:
            text, config_warnings = _rewrite_receiver_config(
                files[config_path].decode(), ports, mounts
            )
            files[config_path] = text.encode()
            warnings.extend(config_warnings)

    readiness = None
    probe = container.get("readinessProbe") or {}
    if "httpGet" in probe or "tcpSocket" in probe:
        kind = "http" if "httpGet" in probe else "tcp"
        target = probe.get("httpGet") or probe.get("tcpSocket") or {}
        host_port = next(
            (p.host_port for p in ports if target.get("port") in (p.container_port, p.name)),
            None,
        )
        if host_port is None:
            warnings.append(f"readinessProbe port {target.get('port')} is not a containerPort")
        else:
            readiness = Probe(kind, host_port, target.get("path", "/"))

    working_dir = container.get("workingDir")
    cwd = Path(mounts.rewrite(working_dir)) if working_dir else pod_dir
    if cwd == Path(working_dir or "") or not str(cwd).startswith(str(pod_dir)):
        cwd = pod_dir
    return PodPlan(
        argv=argv,
        env=env,
        files=files,
        dirs=dirs,
        cwd=cwd,
        ports=ports,
        readiness=readiness,
        warnings=warnings,
    )
