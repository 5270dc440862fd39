"""The receiver's route from the internet and its NetworkPolicy, rendered — pure.

`spec.receiver.expose` becomes an Ingress (networking.k8s.io/v1; TLS from a named Secret
or from a cert-manager issuer through its annotations) or a Gateway API HTTPRoute
(gateway.networking.k8s.io/v1), both in front of the receiver's public Service and both
matching exactly the path the receiver serves. `admission(route)` says whether the
controller has taken the route — the Ingress has a load-balancer address, a parent of the
HTTPRoute reports `Accepted` for its current generation — and, if not, what it waits for;
the reconciler registers the URL with Gemini only once it is admitted.

`network_policy(...)` limits the receiver's pods: the public port only from the configured
peers (the ingress controller's namespace by default), the internal port only from the
operator and Prometheus; egress only to the route targets, Redis, DNS, the Kubernetes API
(the receiver watches its signing Secret), the JWKS host and the OTLP endpoint spans go to
(with `spec.receiver.tracing`). A NetworkPolicy cannot name
a host: external destinations (URL targets, the JWKS host, an external Redis, the API
server, which is not a pod) are allowed by port, to any address. A NetworkPolicy sees the
API server's traffic after kube-proxy rewrote the `kubernetes` Service's 443 to the API
server's own port, so that port comes from the settings (`--api-server-port`, which the
chart fills from the `kubernetes` EndpointSlice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gemini_webhooks.contracts.crd_receiver import ReceiverSpec, RedisSpec, TargetSpec
from gemini_webhooks.contracts.crd_receiver_exposure import ExposeSpec, PeerSpec
from gemini_webhooks.contracts.egress_proxy import DIRECT, ProxySettings

JSON = dict[str, Any]

INGRESS_API_VERSION = "networking.k8s.io/v1"
HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
NETWORK_POLICY_API_VERSION = "networking.k8s.io/v1"
ROUTE_KINDS = {
    "Ingress": INGRESS_API_VERSION,
    "HTTPRoute": HTTPROUTE_API_VERSION,
}  # kind: apiVersion
TLS_SUFFIX = "-tls"
CERT_MANAGER_ANNOTATION = {
    "Issuer": "cert-manager.io/issuer",
    "ClusterIssuer": "cert-manager.io/cluster-issuer",
}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace
OPERATOR_COMPONENT = {"app.kubernetes.io/component": "operator"}
ANY_IPV4, ANY_IPV6 = "0.0.0.0/0", "::/0"
DNS_PORT = 53
KUBERNETES_SERVICE_PORT = 443  # the `kubernetes` Service's port
DEFAULT_API_SERVER_PORTS = (6443,)  # where API servers usually listen (kubeadm's default)
DEFAULT_REDIS_PORT = 6379

# Condition reasons while the route is not admitted.
REASON_WAITING_FOR_ADDRESS = "WaitingForIngressAddress"
REASON_WAITING_FOR_ACCEPTED = "WaitingForRouteAccepted"
REASON_ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
REASON_ROUTE_NOT_SERVED = "RouteKindNotServed"


@dataclass(frozen=True)
class NetworkPolicySettings:
    """Operator-wide defaults of the receivers' NetworkPolicy."""

    enabled: bool = True
    ingress_controller_namespace: str = "ingress-nginx"
    operator_namespace: str | None = None  # None: operator pods in any namespace
    prometheus_namespace: str = "monitoring"
    # The ports the API servers listen on: the `kubernetes` Service's endpoint ports.
    api_server_ports: tuple[int, ...] = DEFAULT_API_SERVER_PORTS


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str
    message: str


# --- Routes ----------------------------------------------------------------------------


def tls_secret_name(receiver: str) -> str:
    return receiver + TLS_SUFFIX


def route(expose: ExposeSpec, metadata: JSON, *, service: str, service_port: int) -> JSON:
    """The Ingress or HTTPRoute of `expose`, named and labelled by `metadata`."""
    if expose.ingress is not None:
        return _ingress(expose, metadata, service=service, service_port=service_port)
    return _http_route(expose, metadata, service=service, service_port=service_port)


def _ingress(expose: ExposeSpec, metadata: JSON, *, service: str, service_port: int) -> JSON:
    ingress = expose.ingress
    assert ingress is not None
    annotations = dict(ingress.annotations)
    if ingress.tls.issuer is not None:
        annotations[CERT_MANAGER_ANNOTATION[ingress.tls.issuer.kind]] = ingress.tls.issuer.name
    secret = ingress.tls.secret_name or tls_secret_name(metadata["name"])
    spec: JSON = {
        "tls": [{"hosts": [ingress.host], "secretName": secret}],
        "rules": [
            {
                "host": ingress.host,
                "http": {
                    "paths": [
                        {
                            "path": ingress.path,
                            "pathType": "Exact",
                            "backend": {
                                "service": {"name": service, "port": {"number": service_port}}
                            },
                        }
                    ]
                },
            }
        ],
    }
    if ingress.ingress_class_name:
        spec = {"ingressClassName": ingress.ingress_class_name, **spec}
    meta = dict(metadata)
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": INGRESS_API_VERSION, "kind": "Ingress", "metadata": meta, "spec": spec}


def _parent_ref(ref: Any) -> JSON:
    parent: JSON = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": ref.name}
    if ref.namespace:
        parent["namespace"] = ref.namespace
    if ref.section_name:
        parent["sectionName"] = ref.section_name
    return parent


def _http_route(expose: ExposeSpec, metadata: JSON, *, service: str, service_port: int) -> JSON:
    http_route = expose.http_route
    assert http_route is not None
    return {
        "apiVersion": HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {
            "parentRefs": [_parent_ref(ref) for ref in http_route.parent_refs],
            "hostnames": list(http_route.hostnames),
            "rules": [
                {
                    "matches": [
                        {"path": {"type": "Exact", "value": http_route.path}, "method": "POST"}
                    ],
                    "backendRefs": [{"name": service, "port": service_port}],
                }
            ],
        },
    }


def admission(kind: str, observed: JSON | None) -> Admission:
    """Whether the controller behind the route has taken it; if not, what we wait for."""
    if observed is None:
        return Admission(
            False,
            REASON_ROUTE_NOT_SERVED,
            f"the API server does not serve {kind} objects"
            + (" — install the Gateway API CRDs" if kind == "HTTPRoute" else ""),
        )
    name = (observed.get("metadata") or {}).get("name", "")
    status = observed.get("status") or {}
    if kind == "Ingress":
        addresses = [
            a.get("hostname") or a.get("ip")
            for a in (status.get("loadBalancer") or {}).get("ingress") or []
            if isinstance(a, dict) and (a.get("hostname") or a.get("ip"))
        ]
        if addresses:
            return Admission(True, "Admitted", f"Ingress {name} has address {addresses[0]}")
        return Admission(
            False,
            REASON_WAITING_FOR_ADDRESS,
            f"waiting for the ingress controller to give Ingress {name} an address "
            "(status.loadBalancer.ingress); the URL is registered with Gemini then",
        )
    return _route_admission(name, observed, status)


def _route_admission(name: str, observed: JSON, status: JSON) -> Admission:
    generation = int((observed.get("metadata") or {}).get("generation") or 0)
    refused: list[str] = []
    for parent in status.get("parents") or []:
        gateway = (parent.get("parentRef") or {}).get("name", "?")
        for cond in parent.get("conditions") or []:
            if cond.get("type") != "Accepted":
                continue
            if int(cond.get("observedGeneration") or generation) < generation:
                continue  # about an earlier spec
            if cond.get("status") == "True":
                return Admission(True, "Admitted", f"Gateway {gateway} accepted HTTPRoute {name}")
            refused.append(f"{gateway}: {cond.get('reason', '')} {cond.get('message', '')}".strip())
    if refused:
        return Admission(
            False,
            REASON_ROUTE_NOT_ACCEPTED,
            f"no parent accepted HTTPRoute {name} ({'; '.join(refused)[:500]})",
        )
    return Admission(
        False,
        REASON_WAITING_FOR_ACCEPTED,
        f"waiting for a parent Gateway to report Accepted for HTTPRoute {name} "
        f"(generation {generation}); the URL is registered with Gemini then",
    )


# --- NetworkPolicy ---------------------------------------------------------------------


def _namespace_peer(namespace: str) -> JSON:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}


def _anywhere() -> list[JSON]:
    return [{"ipBlock": {"cidr": ANY_IPV4}}, {"ipBlock": {"cidr": ANY_IPV6}}]


def _peer(peer: PeerSpec) -> JSON:
    return peer.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False)


def _public_from(spec: ReceiverSpec, settings: NetworkPolicySettings) -> list[JSON] | None:
    """The peers allowed on the public port; None: anyone."""
    if spec.network_policy.public_from is not None:
        return [_peer(p) for p in spec.network_policy.public_from]
    if spec.expose is None and spec.service.type != "ClusterIP":
        return None  # a NodePort or LoadBalancer Service is reached from outside the cluster
    return [_namespace_peer(settings.ingress_controller_namespace)]


def _url_destination(url: str) -> tuple[list[JSON] | None, int]:
    parts = urlsplit(url)
    return _anywhere(), parts.port or (443 if parts.scheme == "https" else 80)


def _targets(spec: ReceiverSpec) -> list[TargetSpec]:
    found: list[TargetSpec] = []
    for route_spec in spec.routes:
        found += route_spec.targets
    if spec.default_route is not None:
        found += spec.default_route.targets
    if spec.dead_letter is not None:
        found.append(spec.dead_letter.target)
    return found


def _host_peers(hostname: str, namespace: str) -> list[JSON] | None:
    labels = hostname.split(".")
    if len(labels) == 1:  # a Service of this namespace
        return [_namespace_peer(namespace)]
    if len(labels) >= 3 and labels[2] == "svc":  # <service>.<namespace>.svc[.<domain>]
        return [_namespace_peer(labels[1])]
    return _anywhere()


def _endpoint_destination(endpoint: str, namespace: str) -> tuple[list[JSON] | None, int]:
    """Where an endpoint the receiver sends to (the OTLP collector, the proxy) is: its
    host (a Service's namespace when it names one) and port."""
    parts = urlsplit(endpoint)
    assert parts.hostname is not None  # the spec's pattern requires one
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return _host_peers(parts.hostname, namespace), port


def _redis_destinations(redis: RedisSpec, namespace: str) -> list[tuple[list[JSON] | None, int]]:
    if redis.sentinel is not None:
        # Each sentinel, and the primary it names (an address known only at run time:
        # assumed in the sentinel's namespace, on Redis's default port).
        found: list[tuple[list[JSON] | None, int]] = []
        for address in redis.sentinel.addresses:
            host, _, port = address.rpartition(":")
            peers = _host_peers(host, namespace)
            found += [(peers, int(port)), (peers, DEFAULT_REDIS_PORT)]
        return found
    assert redis.url is not None  # the spec requires one of the two
    parts = urlsplit(redis.url)
    if parts.scheme == "unix" or not parts.hostname:
        return []
    return [(_host_peers(parts.hostname, namespace), parts.port or DEFAULT_REDIS_PORT)]


def network_policy(
    spec: ReceiverSpec,
    metadata: JSON,
    *,
    selector: dict[str, str],
    settings: NetworkPolicySettings,
    public_port: str,
    internal_port: str,
    proxy: ProxySettings = DIRECT,
) -> JSON | None:
    """The receiver's NetworkPolicy; None when the resource or the operator turns it off.
    With a `proxy`, egress to it too: the receiver's outside requests go there."""
    if not (settings.enabled and spec.network_policy.enabled):
        return None
    namespace = metadata["namespace"]
    public: JSON = {"ports": [{"protocol": "TCP", "port": public_port}]}
    public_from = _public_from(spec, settings)
    if public_from is not None:
        public["from"] = public_from
    operator: JSON = {"podSelector": {"matchLabels": dict(OPERATOR_COMPONENT)}}
    operator["namespaceSelector"] = (
        _namespace_peer(settings.operator_namespace)["namespaceSelector"]
        if settings.operator_namespace
        else {}
    )
    internal = {
        "ports": [{"protocol": "TCP", "port": internal_port}],
        "from": [operator, _namespace_peer(settings.prometheus_namespace)],
    }

    api_ports = dict.fromkeys((KUBERNETES_SERVICE_PORT, *settings.api_server_ports))
    egress: list[JSON] = [
        {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]},
        {"to": _anywhere(), "ports": [{"protocol": "TCP", "port": p} for p in api_ports]},
    ]
    destinations: list[tuple[list[JSON] | None, int | None]] = []
    for target in _targets(spec):
        if target.service is not None:
            # The Service's target port is known only from the Service itself: any port of
            # the target's namespace.
            destinations.append(([_namespace_peer(target.service.namespace or namespace)], None))
        elif target.url is not None:
            destinations.append(_url_destination(target.url))
    if spec.redis is not None:
        destinations += _redis_destinations(spec.redis, namespace)
    if spec.dynamic.enabled:
        destinations.append(_url_destination(spec.dynamic.jwks_uri))
    if spec.tracing is not None:
        destinations.append(_endpoint_destination(spec.tracing.otlp_endpoint, namespace))
    for proxy_url in (proxy.http, proxy.https):
        if proxy_url is not None:  # a URL with a host: ProxySettings validated it
            destinations.append(_endpoint_destination(proxy_url, namespace))
    for to, port in destinations:
        rule: JSON = {}
        if to is not None:
            rule["to"] = to
        if port is not None:
            rule["ports"] = [{"protocol": "TCP", "port": port}]
        if rule not in egress:
            egress.append(rule)
    return {
        "apiVersion": NETWORK_POLICY_API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": dict(selector)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [public, internal],
            "egress": egress,
        },
    }
