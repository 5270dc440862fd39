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

What the pod reads (its volumes' files, its env) is resolved in `pod_inputs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gemini_webhooks.contracts import egress_proxy
from gemini_webhooks.contracts.receiver_config import DEFAULT_INTERNAL_PORT, DEFAULT_LISTEN_PORT
from gemini_webhooks.sandbox import pod_inputs
from gemini_webhooks.sandbox.pod_inputs import (
    JSON,
    Lookup,
    Mounts,
    PodPlanError,
    expand,
)

IMAGE_ENTRYPOINT = ("gemini-webhooks",)  # the Dockerfile's ENTRYPOINT
CONFIG_FLAG = "--config"
# The operator's flags that bind a port: given as a number, or as the port of a URL.
PORT_FLAGS = ("--metrics-port",)
URL_PORT_FLAGS = ("--liveness",)
# The proxy variables our components read (either case; the lower case wins).
PROXY_VARIABLES = {name.lower() for name in egress_proxy.VARIABLES}


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


def _rewrite_receiver_config(
    text: str, ports: list[ContainerPort], mounts: Mounts
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
    defaults = (("listen", DEFAULT_LISTEN_PORT), ("internal", DEFAULT_INTERNAL_PORT))
    for section, default_port in defaults:
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
    template = deployment["spec"]["template"]
    pod_name = f"{metadata['name']}-{template_hash(deployment)[:10]}"
    pod = {  # the Pod the Deployment's ReplicaSet would make, bound to the sandbox
        "metadata": {
            "name": pod_name,
            "namespace": metadata.get("namespace", "default"),
            "uid": pod_name,
            "labels": (template.get("metadata") or {}).get("labels") or {},
        },
        "spec": {**(template.get("spec") or {}), "nodeName": "sandbox"},
    }
    return plan_pod_object(
        pod,
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
    tokens: Mapping[str, str] | None,
    pod_dir: Path,
    host_ports: Mapping[int, int],
    executables: Callable[[str], str],
    base_env: Mapping[str, str],
    pod_ip: str = "127.0.0.1",
) -> PodPlan:
    """The same for a Pod a node was given: its own name and uid, the node it is bound to,
    its address (`pod_ip`), the downward API and the projected service-account tokens
    (`tokens`, by audience; None where no token is asked for, as in the sandbox)."""
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
    mounts = Mounts()
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    volume_files: dict[str, dict[str, str] | None] = {}
    for name, volume in volumes.items():
        content, volume_warnings = pod_inputs.volume_files(
            volume, namespace, lookup, pod_fields, tokens
        )
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
    container_env = pod_inputs.container_env(container, namespace, pod_fields, lookup)
    # A container that names its own proxy variable goes through that proxy, as on a node:
    # the sandbox's (which lower case, winning, would keep) gives way in both cases.
    for name in {k.lower() for k in container_env} & PROXY_VARIABLES:
        env.pop(name, None)
        env.pop(name.upper(), None)
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
