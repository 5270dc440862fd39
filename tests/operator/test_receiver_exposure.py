"""`spec.receiver.expose` and the receiver's NetworkPolicy — pure: the rendered Ingress,
HTTPRoute and NetworkPolicy, the admission decision, and which URLs Google can reach."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from gemini_webhook_operator import model, receiver_exposure
from gemini_webhook_operator.receiver_exposure import NetworkPolicySettings, admission
from gemini_webhook_operator.receiver_names import receiver_name
from gemini_webhook_operator.receiver_resources import ReceiverRenderError, ReceiverSettings
from gemini_webhooks.contracts.egress_proxy import ProxySettings
from tests.operator.receiver_rendering import receiver_config, render

K8S_VERSION = "1.33.0"
UID = "6f1d2a3b-0000-4000-8000-123456789abc"
INGRESS = {
    "ingressClassName": "nginx",
    "host": "hooks.example.com",
    "path": "/gemini",
    "tls": {"issuer": {"name": "letsencrypt"}},
    "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"},
}
HTTP_ROUTE = {
    "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
    "hostnames": ["hooks.example.com", "alt.example.com"],
    "path": "/hook",
}


def webhook(api_base_url: str | None = None, url: str | None = None, **receiver: Any) -> Any:
    section: dict[str, Any] = {
        "enabled": True,
        "routes": [
            {
                "name": "batches",
                "targets": [
                    {"service": {"name": "loader", "namespace": "etl", "port": 8080}},
                    {"url": "https://consumer.example.com:8443/in"},
                ],
            }
        ],
        "defaultRoute": {"targets": [{"service": {"name": "catch-all", "port": 80}}]},
    }
    section.update(receiver)
    spec: dict[str, Any] = {
        "events": ["batch.succeeded"],
        "apiKeySecretRef": {"name": "key"},
        "receiver": section,
    }
    if api_base_url:
        spec["apiBaseUrl"] = api_base_url
    if url:
        spec["url"] = url
    return {
        "apiVersion": "gemini.webhooks.dev/v1alpha1",
        "kind": "GeminiWebhook",
        "metadata": {"name": "orders", "namespace": "team-a", "uid": UID, "generation": 1},
        "spec": spec,
    }


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


# --- Routes --------------------------------------------------------------------------


def test_ingress_routes_the_exact_path_to_the_public_service_with_cert_manager_tls() -> None:
    ingress = one(render(webhook(expose={"ingress": INGRESS}), ReceiverSettings()), "Ingress")
    name = receiver_name("orders")
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-body-size": "1m",
        "cert-manager.io/cluster-issuer": "letsencrypt",
    }
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["hooks.example.com"], "secretName": f"{name}-tls"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/gemini",
            "pathType": "Exact",
            "backend": {"service": {"name": name, "port": {"number": 80}}},
        }
    ]
    kubernetes_validate.validate(ingress, K8S_VERSION, strict=True)


def test_ingress_with_a_namespaced_issuer_or_a_named_secret() -> None:
    issuer = {**INGRESS, "tls": {"issuer": {"name": "team-ca", "kind": "Issuer"}}}
    ingress = one(render(webhook(expose={"ingress": issuer}), ReceiverSettings()), "Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/issuer"] == "team-ca"
    named = {"host": "hooks.example.com", "tls": {"secretName": "hooks-tls"}}
    ingress = one(render(webhook(expose={"ingress": named}), ReceiverSettings()), "Ingress")
    assert "annotations" not in ingress["metadata"]
    assert "ingressClassName" not in ingress["spec"]
    assert ingress["spec"]["tls"][0]["secretName"] == "hooks-tls"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/"


def test_http_route_attaches_to_the_parents_and_matches_the_exact_path() -> None:
    route = one(render(webhook(expose={"httpRoute": HTTP_ROUTE}), ReceiverSettings()), "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "gateways",
            "sectionName": "https",
        }
    ]
    assert route["spec"]["hostnames"] == ["hooks.example.com", "alt.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "Exact", "value": "/hook"}, "method": "POST"}]
    assert rule["backendRefs"] == [{"name": receiver_name("orders"), "port": 80}]


def test_the_receiver_serves_the_exposed_path() -> None:
    config = receiver_config(webhook(expose={"httpRoute": HTTP_ROUTE}), ReceiverSettings())
    assert config.listen.path == "/hook"
    assert receiver_config(webhook(), ReceiverSettings()).listen.path == "/"


def test_without_expose_no_route_is_rendered() -> None:
    kinds = {o["kind"] for o in render(webhook(), ReceiverSettings())}
    assert not kinds & set(receiver_exposure.ROUTE_KINDS)


@pytest.mark.parametrize(
    ("expose", "field"),
    [
        ({}, "spec.receiver.expose"),
        ({"ingress": INGRESS, "httpRoute": HTTP_ROUTE}, "spec.receiver.expose"),
        ({"ingress": {**INGRESS, "host": "Not A Host"}}, "spec.receiver.expose.ingress.host"),
        ({"ingress": {**INGRESS, "host": "single-label"}}, "spec.receiver.expose.ingress.host"),
        ({"ingress": {**INGRESS, "path": "no-slash"}}, "spec.receiver.expose.ingress.path"),
        ({"ingress": {**INGRESS, "path": "/a?b=1"}}, "spec.receiver.expose.ingress.path"),
        ({"ingress": {**INGRESS, "tls": {}}}, "spec.receiver.expose.ingress.tls"),
        (
            {"ingress": {**INGRESS, "tls": {"secretName": "s", "issuer": {"name": "i"}}}},
            "spec.receiver.expose.ingress.tls",
        ),
        (
            {"ingress": {**INGRESS, "tls": {"issuer": {"name": "i", "kind": "Vault"}}}},
            "spec.receiver.expose.ingress.tls.issuer.kind",
        ),
        ({"ingress": {k: v for k, v in INGRESS.items() if k != "tls"}}, "ingress.tls"),
        ({"ingress": {**INGRESS, "hots": "typo"}}, "spec.receiver.expose.ingress.hots"),
        ({"httpRoute": {**HTTP_ROUTE, "parentRefs": []}}, "httpRoute.parentRefs"),
        ({"httpRoute": {**HTTP_ROUTE, "hostnames": []}}, "httpRoute.hostnames"),
        ({"httpRoute": {**HTTP_ROUTE, "parentRefs": [{}]}}, "httpRoute.parentRefs[0].name"),
    ],
)
def test_an_invalid_expose_is_an_invalid_spec_naming_the_field(
    expose: dict[str, Any], field: str
) -> None:
    with pytest.raises(model.InvalidSpecError, match=re.escape(field)):
        model.parse(webhook("http://emulator:8000", expose=expose))
    with pytest.raises(ReceiverRenderError):
        render(webhook(expose=expose), ReceiverSettings())


def test_url_and_expose_together_are_an_invalid_spec() -> None:
    body = webhook(url="https://hooks.example.com/x", expose={"ingress": INGRESS})
    with pytest.raises(model.InvalidSpecError, match=r"spec\.url: leave it unset"):
        model.parse(body)


def test_the_exposed_url_is_https_host_and_path() -> None:
    assert model.parse(webhook(expose={"ingress": INGRESS})).exposed_url == (
        "https://hooks.example.com/gemini"
    )
    assert model.parse(webhook(expose={"httpRoute": HTTP_ROUTE})).exposed_url == (
        "https://hooks.example.com/hook"
    )


# --- Which URLs Google's API can deliver to ------------------------------------------


def problem(body: dict[str, Any], default_api_base_url: str | None = None) -> str | None:
    return model.registration_problem(model.parse(body), default_api_base_url=default_api_base_url)


def test_google_without_expose_or_url_is_told_what_to_set() -> None:
    message = problem(webhook())
    assert message is not None
    assert "spec.receiver.expose" in message and "spec.url" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "https://orders-receiver.team-a.svc.cluster.local/",
        "https://orders-receiver.team-a.svc/",
        "https://orders-receiver/",
        "https://localhost:8443/",
        "https://127.0.0.1/",
        "https://10.1.2.3/",
        "https://[fd00::1]/",
        "https://printer.local/",
        "https://api.corp.internal/",
    ],
)
def test_google_refuses_plain_http_and_cluster_internal_urls(url: str) -> None:
    message = problem(webhook(url=url))
    assert message is not None and message.startswith("spec.url: ")


def test_a_public_name_with_a_svc_label_is_not_mistaken_for_a_cluster_name() -> None:
    assert problem(webhook(url="https://hooks.svc.example.com/")) is None
    assert model.cluster_internal("orders.team-a.svc.corp.example", "corp.example")


def test_google_refuses_an_exposed_cluster_internal_host() -> None:
    inside = {**INGRESS, "host": "orders.team-a.svc.cluster.local"}
    message = problem(webhook(expose={"ingress": inside}))
    assert message is not None and message.startswith("spec.receiver.expose: ")


@pytest.mark.parametrize(
    "base", [None, "https://generativelanguage.googleapis.com", "https://x.googleapis.com/v1"]
)
def test_google_accepts_a_public_https_url_or_an_exposed_receiver(base: str | None) -> None:
    assert problem(webhook(base, url="https://hooks.example.com/x")) is None
    assert problem(webhook(base, expose={"ingress": INGRESS})) is None
    assert problem(webhook(base, url="https://203.0.113.10/x")) is not None  # documentation net


def test_an_emulator_keeps_its_cluster_internal_and_loopback_urls() -> None:
    assert problem(webhook("http://127.0.0.1:8000")) is None
    assert problem(webhook("http://127.0.0.1:8000", url="http://127.0.0.1:9999/")) is None
    assert problem(webhook(), default_api_base_url="http://gemini-emulator.gemini:8000") is None


def test_a_resource_naming_google_is_checked_even_when_the_operator_default_is_an_emulator() -> (
    None
):
    body = webhook("https://generativelanguage.googleapis.com")
    assert problem(body, default_api_base_url="http://emulator:8000") is not None


# --- Admission -----------------------------------------------------------------------


def _route(generation: int, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "r", "generation": generation},
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "public"},
                    "controllerName": "x/y",
                    "conditions": list(conditions),
                }
            ]
        },
    }


def test_an_ingress_is_admitted_once_it_has_an_address() -> None:
    waiting = admission("Ingress", {"metadata": {"name": "r"}, "status": {"loadBalancer": {}}})
    assert (waiting.admitted, waiting.reason) == (False, "WaitingForIngressAddress")
    empty = {"metadata": {"name": "r"}, "status": {"loadBalancer": {"ingress": [{}]}}}
    assert not admission("Ingress", empty).admitted
    for address in ({"ip": "203.0.113.7"}, {"hostname": "lb.example.net"}):
        lb = {"metadata": {"name": "r"}, "status": {"loadBalancer": {"ingress": [address]}}}
        assert admission("Ingress", lb).admitted


def test_an_http_route_is_admitted_once_a_parent_accepts_its_current_generation() -> None:
    accepted = {"type": "Accepted", "status": "True", "observedGeneration": 2}
    assert admission("HTTPRoute", _route(2, accepted)).admitted
    stale = admission("HTTPRoute", _route(3, accepted))
    assert (stale.admitted, stale.reason) == (False, "WaitingForRouteAccepted")
    none = admission("HTTPRoute", {"metadata": {"name": "r", "generation": 1}})
    assert none.reason == "WaitingForRouteAccepted"
    resolved_only = {"type": "ResolvedRefs", "status": "True", "observedGeneration": 2}
    assert not admission("HTTPRoute", _route(2, resolved_only)).admitted


def test_a_refused_http_route_says_why() -> None:
    refused = {
        "type": "Accepted",
        "status": "False",
        "observedGeneration": 1,
        "reason": "NotAllowedByListeners",
        "message": "hostname does not match",
    }
    verdict = admission("HTTPRoute", _route(1, refused))
    assert verdict.reason == "RouteNotAccepted"
    assert "NotAllowedByListeners" in verdict.message and "public" in verdict.message


def test_a_route_kind_the_api_does_not_serve_is_reported() -> None:
    verdict = admission("HTTPRoute", None)
    assert verdict.reason == "RouteKindNotServed" and "Gateway API CRDs" in verdict.message


# --- NetworkPolicy -------------------------------------------------------------------


def policy(body: dict[str, Any], **settings: Any) -> dict[str, Any]:
    objects = render(body, ReceiverSettings(network_policy=NetworkPolicySettings(**settings)))
    return one(objects, "NetworkPolicy")


def _ns(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def test_network_policy_is_on_by_default_and_selects_the_receiver_pods() -> None:
    objects = render(webhook(), ReceiverSettings())
    netpol = one(objects, "NetworkPolicy")
    deployment = one(objects, "Deployment")
    assert netpol["spec"]["podSelector"] == deployment["spec"]["selector"]
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    kubernetes_validate.validate(netpol, K8S_VERSION, strict=True)


def test_public_port_from_ingress_controller_internal_port_from_operator_and_prometheus() -> None:
    netpol = policy(
        webhook(expose={"ingress": INGRESS}),
        ingress_controller_namespace="ingress",
        operator_namespace="gemini-system",
        prometheus_namespace="prom",
    )
    public, internal = netpol["spec"]["ingress"]
    assert public == {"ports": [{"protocol": "TCP", "port": "http"}], "from": [_ns("ingress")]}
    assert internal["ports"] == [{"protocol": "TCP", "port": "internal"}]
    operator = {
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
        **_ns("gemini-system"),
    }
    assert internal["from"] == [operator, _ns("prom")]


def test_public_peers_are_configurable() -> None:
    peers = [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.1/32"]}}, _ns("edge")]
    netpol = policy(webhook(networkPolicy={"publicFrom": peers}))
    assert netpol["spec"]["ingress"][0]["from"] == peers
    kubernetes_validate.validate(netpol, K8S_VERSION, strict=True)


def test_a_load_balancer_service_without_expose_is_open_to_anyone() -> None:
    netpol = policy(webhook(service={"type": "LoadBalancer"}))
    assert "from" not in netpol["spec"]["ingress"][0]


def test_egress_only_to_targets_redis_dns_the_api_server_and_the_jwks_host() -> None:
    body = webhook(
        redis={"url": "redis://redis.data.svc:6380/0"},
        dynamic={
            "enabled": True,
            "audiences": ["https://hooks.example.com/"],
            "jwksUri": "https://keys.example.com/jwks.json",
        },
    )
    egress = policy(body)["spec"]["egress"]
    anywhere = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
    assert egress == [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {
            "to": anywhere,
            "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
        },
        {"to": [_ns("etl")]},  # a Service target: its namespace
        {"to": anywhere, "ports": [{"protocol": "TCP", "port": 8443}]},  # a URL target
        {"to": [_ns("team-a")]},  # the default route's Service
        {"to": [_ns("data")], "ports": [{"protocol": "TCP", "port": 6380}]},  # Redis
        {"to": anywhere, "ports": [{"protocol": "TCP", "port": 443}]},  # the JWKS host
    ]


def test_egress_to_the_api_server_at_the_ports_it_listens_on() -> None:
    """A NetworkPolicy sees the API server's own port (after kube-proxy's rewrite of the
    `kubernetes` Service's 443), which the operator is told (`--api-server-port`)."""
    egress = policy(webhook(), api_server_ports=(41357,))["spec"]["egress"]
    assert [p["port"] for p in egress[1]["ports"]] == [443, 41357]
    egress = policy(webhook(), api_server_ports=(443,))["spec"]["egress"]
    assert [p["port"] for p in egress[1]["ports"]] == [443]


@pytest.mark.parametrize(
    ("url", "to"),
    [
        ("redis://redis:6379/0", [_ns("team-a")]),
        ("rediss://cache.example.com:7000", "anywhere"),
        ("unix:///run/redis.sock", None),
    ],
)
def test_redis_egress_follows_its_url(url: str, to: Any) -> None:
    egress = policy(webhook(redis={"url": url}))["spec"]["egress"]
    redis_rules = [r for r in egress if r.get("ports", [{}])[0].get("port") in (6379, 7000)]
    if to is None:
        assert redis_rules == []
    elif to == "anywhere":
        assert redis_rules[0]["to"][0] == {"ipBlock": {"cidr": "0.0.0.0/0"}}
    else:
        assert redis_rules[0]["to"] == to


def test_network_policy_is_off_by_the_resource_or_by_the_operator() -> None:
    off = webhook(networkPolicy={"enabled": False})
    assert "NetworkPolicy" not in {o["kind"] for o in render(off, ReceiverSettings())}
    settings = ReceiverSettings(network_policy=NetworkPolicySettings(enabled=False))
    assert "NetworkPolicy" not in {o["kind"] for o in render(webhook(), settings)}


@pytest.mark.parametrize(
    "section",
    [
        {"publicFrom": [{"ipBlock": {}}]},
        {"publicFrom": [{"namespaceSelector": {"matchExpressions": []}}]},
        {"enabled": "sometimes"},
    ],
)
def test_an_invalid_network_policy_section_is_rejected(section: dict[str, Any]) -> None:
    with pytest.raises(ReceiverRenderError, match=r"spec\.receiver\.networkPolicy"):
        render(webhook(networkPolicy=section), ReceiverSettings())


def test_sentinel_egress_reaches_each_sentinel_and_the_primary_it_names() -> None:
    sentinel = {"addresses": ["sentinel.data.svc:26379", "10.0.0.9:26380"], "masterName": "m"}
    egress = policy(webhook(redis={"sentinel": sentinel}))["spec"]["egress"]
    anywhere = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
    for to, port in [
        ([_ns("data")], 26379),
        ([_ns("data")], 6379),
        (anywhere, 26380),
        (anywhere, 6379),
    ]:
        assert {"to": to, "ports": [{"protocol": "TCP", "port": port}]} in egress


@pytest.mark.parametrize(
    ("endpoint", "to", "port"),
    [
        ("http://otel-collector.observability.svc:4318", [_ns("observability")], 4318),
        ("http://otel-collector:4318", [_ns("team-a")], 4318),
        ("https://otlp.example.com", "anywhere", 443),
    ],
)
def test_tracing_egress_reaches_the_otlp_endpoint(endpoint: str, to: Any, port: int) -> None:
    egress = policy(webhook(tracing={"otlpEndpoint": endpoint}))["spec"]["egress"]
    [rule] = [r for r in egress if r.get("ports") == [{"protocol": "TCP", "port": port}]]
    assert rule["to"] == (
        [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
        if to == "anywhere"
        else to
    )
    assert not [r for r in policy(webhook())["spec"]["egress"] if r.get("ports") == rule["ports"]]


def test_egress_reaches_the_receivers_proxy_when_the_operator_names_one() -> None:
    proxy = ProxySettings.parse("http://squid.proxy.svc:3128", "https://egress.corp.example", "")
    objects = render(webhook(), ReceiverSettings(proxy=proxy))
    egress = one(objects, "NetworkPolicy")["spec"]["egress"]
    anywhere = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
    assert egress[-2:] == [
        {"to": [_ns("proxy")], "ports": [{"protocol": "TCP", "port": 3128}]},
        {"to": anywhere, "ports": [{"protocol": "TCP", "port": 443}]},
    ]
    kubernetes_validate.validate(one(objects, "NetworkPolicy"), K8S_VERSION, strict=True)
    without = one(render(webhook(), ReceiverSettings()), "NetworkPolicy")["spec"]["egress"]
    assert egress[: len(without)] == without and len(egress) == len(without) + 2
