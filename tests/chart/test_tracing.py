"""The chart's `tracing` values: the operator's standard OTEL_* environment, and its
NetworkPolicy's egress to the OTLP endpoint."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from gemini_webhooks.contracts.crd_receiver import TRACES_SAMPLERS
from gemini_webhooks.tracing import check, configured
from tests.chart.rendering import chart, find, manifests

ENDPOINT = "http://otel-collector.observability.svc:4318"


def _env(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = find(manifests(values), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _otel(env: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name.startswith("OTEL_")}


def test_tracing_is_off_by_default() -> None:
    assert _otel(_env({})) == {}
    assert not configured(_otel(_env({})))


def test_an_otlp_endpoint_turns_the_operators_tracing_on() -> None:
    values = {"tracing": {"otlpEndpoint": ENDPOINT, "sampler": "traceidratio", "samplerArg": "0.5"}}
    env = _env(values)
    otel = _otel(env)
    assert otel == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": otel["OTEL_SERVICE_NAME"],
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
    }
    assert otel["OTEL_SERVICE_NAME"]  # the release's full name
    names = list(env)
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")  # expanded
    assert names.index("POD_NAMESPACE") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert configured(otel)
    check(otel)
    named = _otel(_env({"tracing": {"otlpEndpoint": ENDPOINT, "serviceName": "gwo"}}))
    assert named["OTEL_SERVICE_NAME"] == "gwo"


@pytest.mark.parametrize(
    ("endpoint", "port"), [(ENDPOINT, 4318), ("https://otlp.example.com/otlp", 443)]
)
def test_the_network_policy_lets_spans_reach_the_endpoints_port(endpoint: str, port: int) -> None:
    (policy,) = find(manifests({"tracing": {"otlpEndpoint": endpoint}}), "NetworkPolicy")
    rules = [
        r for r in policy["spec"]["egress"] if r.get("ports") == [{"protocol": "TCP", "port": port}]
    ]
    assert rules and rules[0]["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0"}},
        {"ipBlock": {"cidr": "::/0"}},
    ]
    (default,) = find(manifests({}), "NetworkPolicy")
    assert len(policy["spec"]["egress"]) == len(default["spec"]["egress"]) + 1


def test_the_samplers_are_the_crds() -> None:
    schema = chart().schema["properties"]["tracing"]["properties"]["sampler"]
    assert tuple(schema["enum"]) == TRACES_SAMPLERS


@pytest.mark.parametrize(
    "tracing",
    [
        {"otlpEndpoint": "collector:4318"},
        {"otlpEndpoint": ENDPOINT, "sampler": "sometimes"},
        {"otlpEndpoint": ENDPOINT, "samplerArg": "2"},
        {"otlpEndpoint": ENDPOINT, "headers": "x"},
    ],
)
def test_the_schema_refuses_bad_tracing_values(tracing: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(chart().merge_values({"tracing": tracing}))
