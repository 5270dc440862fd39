"""The chart's monitoring objects: ServiceMonitor, PodMonitor, PrometheusRule and the Grafana
dashboard ConfigMap — wired to the labels the dashboard and alerts select on, shipping the
generated files verbatim, and valid against the prometheus-operator CRD schemas (compiled
into the npm package `@kubernetes-models/prometheus-operator`, installed on first use)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhook_operator import receiver_resources
from gemini_webhooks.contracts.signing_secret import LABEL_WEBHOOK
from gemini_webhooks.observability import __main__ as generator
from gemini_webhooks.observability import series
from tests.chart.rendering import (
    COMBINATIONS,
    MONITORING_ON,
    RELEASE_NAMESPACE,
    ROOT,
    find,
    manifests,
)
from tests.operator import receiver_rendering

VALIDATOR_SOURCE = Path(__file__).resolve().parent / "prometheus_operator"
VALIDATOR_DIR = ROOT / ".state" / "npm" / "prometheus-operator"
MONITORING = {"monitoring": MONITORING_ON}


def _one(kind: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
    (obj,) = find(manifests(MONITORING if values is None else values), kind)
    return obj


def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {o["kind"] for o in manifests()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [
        c for c in find(manifests(), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]


def test_service_monitor_scrapes_the_operator_as_the_job_the_rules_select() -> None:
    monitor = _one("ServiceMonitor")
    (service,) = find(manifests(MONITORING), "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == series.OPERATOR_JOB
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["honorLabels"] is True, "per-webhook namespace labels must survive the scrape"


def test_pod_monitor_selects_the_receivers_the_operator_deploys() -> None:
    monitor = _one("PodMonitor")
    pod_labels = receiver_resources.labels("orders")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[monitor["spec"]["jobLabel"]] == series.RECEIVER_JOB
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    deployment = next(
        o
        for o in receiver_rendering.render(
            _example_resource(), receiver_resources.ReceiverSettings()
        )
        if o["kind"] == "Deployment"
    )
    ports = {
        p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    assert endpoint["port"] in ports


def test_pod_monitor_labels_receiver_series_with_their_webhook() -> None:
    (endpoint,) = _one("PodMonitor")["spec"]["podMetricsEndpoints"]
    sanitized = "".join(c if c.isalnum() else "_" for c in LABEL_WEBHOOK)
    assert {
        "sourceLabels": [f"__meta_kubernetes_pod_label_{sanitized}"],
        "targetLabel": "webhook",
    } in endpoint["relabelings"]


def test_pod_monitor_follows_watch_namespaces() -> None:
    monitor = _one("PodMonitor", COMBINATIONS["everything"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_prometheus_rule_ships_the_promtool_checked_rules_file_verbatim() -> None:
    rule = _one("PrometheusRule")
    assert rule["spec"] == yaml.safe_load(generator.RULES_FILE.read_text())


def test_dashboard_config_map_carries_the_grafana_sidecar_label_and_the_dashboard() -> None:
    config_map = _one("ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (document,) = config_map["data"].values()
    assert json.loads(document) == json.loads(generator.DASHBOARD_FILE.read_text())


def test_dashboard_config_map_can_go_to_grafanas_namespace_with_a_folder() -> None:
    values = {
        "monitoring": {
            "dashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "Gemini"},
            }
        }
    }
    config_map = _one("ConfigMap", values)
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Gemini"}


def test_monitor_labels_let_a_prometheus_select_them() -> None:
    values = {
        "monitoring": {
            key: {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}
            for key in ("serviceMonitor", "receiverPodMonitor", "prometheusRule")
        }
    }
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert _one(kind, values)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert _one(kind, values)["metadata"]["namespace"] == RELEASE_NAMESPACE


def _example_resource() -> dict[str, Any]:
    return {
        "apiVersion": "gemini.webhooks.dev/v1alpha1",
        "kind": "GeminiWebhook",
        "metadata": {"name": "orders", "namespace": "team-a", "uid": "0000-1111"},
        "spec": {
            "url": "https://hooks.example.com/gemini",
            "events": ["batch.succeeded"],
            "apiKeySecretRef": {"name": "gemini-api-key"},
            "receiver": {
                "enabled": True,
                "defaultRoute": {"targets": [{"url": "http://consumer.team-a.svc:8080/"}]},
            },
        },
    }


# --- the prometheus-operator schemas ---------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_operator_validator() -> Path:
    """The npm package, installed once into .state/ (node and npm are on the machine)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed to validate against prometheus-operator schemas"
    VALIDATOR_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "validate.mjs"):
        shutil.copy2(VALIDATOR_SOURCE / name, VALIDATOR_DIR / name)
    if not (VALIDATOR_DIR / "node_modules" / "@kubernetes-models" / "prometheus-operator").exists():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent"],
            cwd=VALIDATOR_DIR,
            check=True,
            capture_output=True,
            timeout=180,
        )
    return VALIDATOR_DIR / "validate.mjs"


def _validate(script: Path, objects: list[dict[str, Any]]) -> list[str | None]:
    result = subprocess.run(
        ["node", str(script)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    errors: list[str | None] = json.loads(result.stdout)
    return errors


@pytest.mark.real_component
def test_monitors_and_rules_validate_against_the_prometheus_operator_schemas(
    prometheus_operator_validator: Path,
) -> None:
    objects = [
        o
        for values in (MONITORING, COMBINATIONS["everything"])
        for o in manifests(values)
        if o["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    ]
    assert len(objects) == 6
    assert _validate(prometheus_operator_validator, objects) == [None] * len(objects)


@pytest.mark.real_component
def test_prometheus_operator_schemas_catch_a_bad_interval(
    prometheus_operator_validator: Path,
) -> None:
    broken = json.loads(json.dumps(_one("PodMonitor")))
    broken["spec"]["podMetricsEndpoints"][0]["interval"] = "thirty seconds"
    (error,) = _validate(prometheus_operator_validator, [broken])
    assert error and "interval" in error
