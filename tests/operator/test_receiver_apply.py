"""The receiver's rendered objects apply cleanly to a Kubernetes API (the kube sandbox, or
a real cluster with KUBECONFIG) with real kubectl; re-applying after a secret rotation
changes nothing, a config change changes the Deployment."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhook_operator.receiver_resources import ReceiverSettings
from gemini_webhooks.contracts import crd
from tests.fixtures.kube import KUBECTL
from tests.operator.receiver_rendering import render

ROOT = Path(__file__).resolve().parents[2]


class Kubectl:
    def __init__(self, kube: Any, tmp_path: Path) -> None:
        self.env = kube.kubectl_env(tmp_path / "kubectl-cache")

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [KUBECTL, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def apply(self, objects: list[dict[str, Any]]) -> str:
        return self("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))


@pytest.fixture
def kubectl(kube: Any, tmp_path: Path) -> Kubectl:
    return Kubectl(kube, tmp_path)


@pytest.fixture
def webhook(kubectl: Kubectl) -> dict[str, Any]:
    namespace = f"gwo-rcv-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-f", str(ROOT / "crds"))
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "orders", "namespace": namespace},
        "spec": {
            "url": "https://hooks.example.com/orders",
            "events": ["batch.succeeded"],
            "apiKeySecretRef": {"name": "gemini-api-key"},
            "receiver": {
                "enabled": True,
                "replicas": 2,
                "routes": [
                    {
                        "name": "batches",
                        "match": {"types": ["batch.*"]},
                        "targets": [{"service": {"name": "batch-handler", "port": 8080}}],
                    }
                ],
                "defaultRoute": {"targets": [{"url": "http://catch-all.example:8080/"}]},
            },
        },
    }
    namespace_object = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    kubectl.apply([namespace_object, body])
    stored: dict[str, Any] = json.loads(
        kubectl("get", crd.PLURAL, "orders", "-n", namespace, "-o", "json")
    )
    return stored


def test_rendered_receiver_objects_apply_and_are_owned_by_the_webhook(
    kubectl: Kubectl, webhook: dict[str, Any]
) -> None:
    objects = render(webhook, ReceiverSettings())
    kubectl.apply(objects)
    namespace = webhook["metadata"]["namespace"]
    for obj in objects:
        kind = obj["kind"].lower()
        stored = json.loads(
            kubectl("get", kind, obj["metadata"]["name"], "-n", namespace, "-o", "json")
        )
        (owner,) = stored["metadata"]["ownerReferences"]
        assert owner["uid"] == webhook["metadata"]["uid"]
        assert owner["kind"] == crd.KIND


def deployment_state(kubectl: Kubectl, webhook: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    stored = json.loads(
        kubectl(
            "get",
            "deployment",
            "orders-receiver",
            "-n",
            webhook["metadata"]["namespace"],
            "-o",
            "json",
        )
    )
    return stored["metadata"]["generation"], stored["spec"]["template"]


def test_reapplying_after_a_rotation_does_not_roll_the_deployment(
    kubectl: Kubectl, webhook: dict[str, Any]
) -> None:
    kubectl.apply(render(webhook, ReceiverSettings()))
    before = deployment_state(kubectl, webhook)
    status = {"webhookId": "wh_1", "lastRotationTime": "2026-11-25T10:00:00Z"}
    output = kubectl.apply(render(dict(webhook, status=status), ReceiverSettings()))
    assert "deployment.apps/orders-receiver unchanged" in output
    assert "configmap/orders-receiver unchanged" in output
    assert deployment_state(kubectl, webhook) == before


def test_reapplying_after_a_config_change_rolls_the_deployment(
    kubectl: Kubectl, webhook: dict[str, Any]
) -> None:
    kubectl.apply(render(webhook, ReceiverSettings()))
    generation, template = deployment_state(kubectl, webhook)
    changed = json.loads(json.dumps(webhook))
    changed["spec"]["receiver"]["replayTolerance"] = "1m"
    output = kubectl.apply(render(changed, ReceiverSettings()))
    assert "deployment.apps/orders-receiver configured" in output
    assert "configmap/orders-receiver configured" in output
    new_generation, new_template = deployment_state(kubectl, webhook)
    assert new_generation > generation
    key = "gemini.webhooks.dev/config-hash"
    assert new_template["metadata"]["annotations"][key] != template["metadata"]["annotations"][key]
