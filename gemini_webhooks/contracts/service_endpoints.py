"""How a Kubernetes Service reference becomes a URL — the one rule every component uses.

In a cluster, `Service name/namespace/port` resolves through cluster DNS to
`http://name.namespace.svc.<cluster domain>:port`. Outside one (the local sandbox, which
plays the kubelet for our own Deployments and has no cluster DNS), the environment
variable `GEMINI_WEBHOOKS_SERVICE_ENDPOINTS` maps `namespace/name:port` to a loopback
`host:port`, e.g. `{"default/orders:8080": "127.0.0.1:41234"}`. A single Pod's port is
reached at its Pod IP in a cluster; outside one, where every Pod shares the loopback
address, the same mapping holds `pod:namespace/name:port` keys for the Pods that the local
node runs (`pod_url`).

A process's environment is fixed when it starts, but the sandbox learns of Services while
it runs; so `GEMINI_WEBHOOKS_SERVICE_ENDPOINTS_FILE` may name a JSON file of the same
shape that the sandbox rewrites (atomically) as Services come and go. `overrides_from_env`
merges it over the variable, re-reading it only when it changed (one `stat` per call), so
a component that calls it at use time sees new Services without a restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

ENV_VAR = "GEMINI_WEBHOOKS_SERVICE_ENDPOINTS"
FILE_ENV_VAR = "GEMINI_WEBHOOKS_SERVICE_ENDPOINTS_FILE"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"


class ServiceEndpointsError(ValueError):
    """The override variable is not a JSON object of strings."""


def _parse(raw: str, what: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise ServiceEndpointsError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ServiceEndpointsError(f"{what} must be a JSON object of strings")
    return value


_file_cache: dict[str, tuple[tuple[int, int, int], dict[str, str]]] = {}


def _from_file(path: str) -> dict[str, str]:
    what = f"{FILE_ENV_VAR} ({path})"
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return {}  # not written yet: no Services known
    except OSError as error:
        raise ServiceEndpointsError(f"{what}: {error.strerror}") from None
    # A rewrite replaces the file (new inode), so equal mtime and size cannot hide it.
    stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _file_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return dict(cached[1])
    try:
        with open(path, encoding="utf-8") as file:
            raw = file.read()
    except OSError as error:
        raise ServiceEndpointsError(f"{what}: {error.strerror}") from None
    value = _parse(raw, what) if raw.strip() else {}
    _file_cache[path] = (stamp, value)
    return dict(value)


def overrides_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The loopback overrides: the variable's, with the file's (if named) merged over them."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_VAR, "")
    overrides = _parse(raw, ENV_VAR) if raw.strip() else {}
    path = env.get(FILE_ENV_VAR, "")
    if path.strip():
        overrides.update(_from_file(path))
    return overrides


def service_key(name: str, namespace: str, port: int) -> str:
    return f"{namespace}/{name}:{port}"


def service_url(
    name: str,
    namespace: str,
    port: int,
    path: str = "/",
    *,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """The URL of `path` on a Service port, honouring the sandbox's overrides."""
    address = (overrides or {}).get(service_key(name, namespace, port))
    return _http(address or f"{name}.{namespace}.svc.{cluster_domain}:{port}", path)


def _http(address: str, path: str) -> str:
    return f"http://{address}{path if path.startswith('/') else '/' + path}"


def pod_key(name: str, namespace: str, port: int) -> str:
    return f"pod:{namespace}/{name}:{port}"


def pod_url(
    name: str,
    namespace: str,
    address: str,
    port: int,
    path: str = "/",
    *,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """The URL of `path` on one Pod's port: its address (Pod IP) in a cluster, or the
    loopback override of the local node that runs it."""
    override = (overrides or {}).get(pod_key(name, namespace, port))
    host = f"[{address}]" if ":" in address else address
    return _http(override or f"{host}:{port}", path)
