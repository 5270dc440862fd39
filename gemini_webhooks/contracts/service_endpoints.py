"""How a Kubernetes Service port or a Pod's port becomes a URL — the one rule every
component uses, as any in-cluster client does.

A Service port is `http://name.namespace.svc.<cluster domain>:port`, resolved by cluster
DNS; a single Pod's port is `http://<Pod IP>:port`. Whether the request then goes
through an HTTP proxy is `contracts.egress_proxy`'s decision (the local sandbox names its
own there, which serves these names on loopback: `sandbox.proxy`).
"""

from __future__ import annotations

DEFAULT_CLUSTER_DOMAIN = "cluster.local"


def _http(address: str, path: str) -> str:
    return f"http://{address}{path if path.startswith('/') else '/' + path}"


def service_url(
    name: str,
    namespace: str,
    port: int,
    path: str = "/",
    *,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> str:
    """The URL of `path` on a Service port, by its cluster DNS name."""
    return _http(f"{name}.{namespace}.svc.{cluster_domain}:{port}", path)


def pod_url(address: str, port: int, path: str = "/") -> str:
    """The URL of `path` on one Pod's port, at its address (`status.podIP`)."""
    host = f"[{address}]" if ":" in address else address
    return _http(f"{host}:{port}", path)
