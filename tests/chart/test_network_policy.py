"""NetworkPolicies of the chart: the operator pod's own (rendered by the chart), and the
settings the chart hands the operator for the receivers' (rendered by the operator)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any
from unittest.mock import patch

import helm_python as helm
import pytest
import yaml

from gemini_webhook_operator.cli import config_from_args
from gemini_webhooks.cli import build_parser
from tests.chart.rendering import RELEASE_NAMESPACE, chart, find, manifests
from tests.fixtures.kube import KUBECTL


def _policy(values: dict[str, Any] | None = None) -> dict[str, Any]:
    (policy,) = find(manifests(values or {}), "NetworkPolicy")
    return policy


def _receiver_settings(values: dict[str, Any]) -> Any:
    (deployment,) = find(manifests(values), "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    with patch.dict(os.environ, {"POD_NAMESPACE": "gwo-system"}):  # as the Pod has it
        return config_from_args(build_parser().parse_args(args)).receiver.network_policy


def test_operator_network_policy_is_on_by_default_and_selects_the_operator_pods() -> None:
    policy = _policy()
    (deployment,) = find(manifests(), "Deployment")
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_metrics_only_from_the_release_namespace_and_the_configured_peers() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]
    metrics, health = _policy({"networkPolicy": {"metricsFrom": peers}})["spec"]["ingress"]
    assert metrics == {
        "ports": [{"protocol": "TCP", "port": 9090}],
        "from": [{"podSelector": {}}, *peers],
    }
    assert health == {"ports": [{"protocol": "TCP", "port": 8080}]}


def test_egress_only_to_dns_https_the_api_server_and_the_receivers_internal_port() -> None:
    egress = _policy()["spec"]["egress"]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in egress] == [
        [53, 53],
        [443, 6443],
        ["internal"],
    ]
    receivers = egress[2]["to"][0]
    assert receivers["namespaceSelector"] == {}
    assert receivers["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == (
        "gemini-webhook-receiver"
    )


def test_extra_egress_is_appended() -> None:
    extra = {
        "to": [{"podSelector": {"matchLabels": {"app": "emulator"}}}],
        "ports": [{"port": 8000}],
    }
    assert _policy({"networkPolicy": {"extraEgress": [extra]}})["spec"]["egress"][-1] == extra


def test_operator_network_policy_is_off_with_a_value() -> None:
    assert find(manifests({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def test_receiver_network_policy_settings_reach_the_operator() -> None:
    settings = _receiver_settings(
        {
            "receivers": {
                "networkPolicy": {
                    "ingressControllerNamespace": "traefik",
                    "prometheusNamespace": "prom",
                }
            }
        }
    )
    assert settings.enabled
    assert settings.ingress_controller_namespace == "traefik"
    assert settings.prometheus_namespace == "prom"
    off = _receiver_settings({"receivers": {"networkPolicy": {"enabled": False}}})
    assert not off.enabled


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"networkPolicy": {"enabled": "yes"}}, "enabled"),
        ({"networkPolicy": {"metricsFrom": [{"namespaceSelektor": {}}]}}, "namespaceSelektor"),
        ({"receivers": {"networkPolicy": {"ingressNamespace": "x"}}}, "ingressNamespace"),
        ({"receivers": {"networkPolicy": {"prometheusNamespace": "Not_A_Label"}}}, "prometheus"),
    ],
)
def test_schema_rejects_typos_in_the_network_policy_values(
    values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        chart().render(values, name="gwo", namespace=RELEASE_NAMESPACE)


def test_the_api_server_accepts_the_operator_network_policy(kube: Any, tmp_path: Path) -> None:
    policy = _policy()
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}}
    result = subprocess.run(
        [KUBECTL, "apply", "--validate=strict", "-f", "-"],
        input=yaml.safe_dump_all([namespace, policy]),
        capture_output=True,
        text=True,
        env=kube.kubectl_env(tmp_path / "kubectl-cache"),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_api_server_ports_value_reaches_the_operator_policy_and_the_receivers() -> None:
    """A NetworkPolicy sees the API server's own port (after kube-proxy's rewrite of the
    `kubernetes` Service's 443): the value names it for both policies."""
    values = {"networkPolicy": {"apiServerPorts": [7443, 8443]}}
    egress = _policy(values)["spec"]["egress"]
    assert sorted(p["port"] for p in egress[1]["ports"]) == [443, 7443, 8443]
    assert _receiver_settings(values).api_server_ports == (7443, 8443)
    # Unset and no cluster to read (`helm template`): the usual 6443.
    assert _receiver_settings({}).api_server_ports == (6443,)
