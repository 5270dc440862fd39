"""How a Kubernetes Service reference becomes a URL — the one rule every component uses.

In a cluster, `Service name/namespace/port` resolves through cluster DNS to
`http://name.namespace.svc.<cluster domain>:port`. Outside one (the local sandbox, which
plays the kubelet for our own Deployments and has no cluster DNS), the environment
variable `GEMINI_WEBHOOKS_SERVICE_ENDPOINTS` maps `namespace/name:port` to a loopback
`host:port`, e.g. `{"default/orders:8080": "127.0.0.1:41234"}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

ENV_VAR = "GEMINI_WEBHOOKS_SERVICE_ENDPOINTS"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"


class ServiceEndpointsError(ValueError):
    """The override variable is not a JSON object of strings."""


def overrides_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    raw = (os.environ if environ is None else environ).get(ENV_VAR, "")
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ServiceEndpointsError(f"{ENV_VAR} is not valid JSON") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ServiceEndpointsError(f"{ENV_VAR} must be a JSON object of strings")
    return value


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
    if not path.startswith("/"):
        path = "/" + path
    address = (overrides or {}).get(service_key(name, namespace, port))
    if address is None:
        address = f"{name}.{namespace}.svc.{cluster_domain}:{port}"
    return f"http://{address}{path}"
