"""The full lifecycle of the examples: create, verify a delivery, update, delete — kopf and
our handlers for real, the emulator through the SDK, the Kubernetes API through kubectl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import standardwebhooks
import yaml
from gemini_webhook_operator.model import marker_uid

from gemini_webhooks.contracts.signing_secret import LABEL_MANAGED_BY, MANAGED_BY
from tests.operator.harness import Cluster, is_ready, operator_running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example(name: str, url: str, base_url: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    body["spec"]["url"] = url
    body["spec"]["apiBaseUrl"] = base_url
    body["metadata"]["namespace"] = "default"
    return body


def _verify(secret: str, request: Any) -> None:
    headers = {k.lower(): v for k, v in request.headers.items()}
    standardwebhooks.Webhook(secret).verify(request.body, headers)


async def test_example_is_created_verified_updated_and_deleted(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    endpoint = emulator.endpoint()
    client = emulator.client()
    async with operator_running(kube):
        created = await gemini.apply(_example("basic.yaml", endpoint.url, emulator.base_url))
        obj = await gemini.wait_for("batch-results", is_ready)
        status = obj["status"]
        remote = client.webhooks.get(id=status["webhookId"])
        assert marker_uid(remote.name) == created["metadata"]["uid"]
        assert sorted(remote.subscribed_events) == sorted(obj["spec"]["events"])
        assert len(client.webhooks.list().webhooks) == 1

        secret = await gemini.client.get("Secret", "default", "batch-results-signing-secret")
        assert secret is not None
        assert secret["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGED_BY
        assert secret["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
        held = await gemini.signing_secrets("batch-results")
        assert held is not None and held.current is not None

        emulator.fire("batch.succeeded")
        (request,) = endpoint.wait_for(1)
        _verify(held.current.secret, request)

        await gemini.patch("batch-results", {"spec": {"events": ["batch.failed"]}})
        await gemini.wait_for(
            "batch-results",
            lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"],
        )
        assert client.webhooks.get(id=status["webhookId"]).subscribed_events == ["batch.failed"]

        await gemini.delete("batch-results")
        await gemini.wait_gone("batch-results")
        assert client.webhooks.list().webhooks in (None, [])
