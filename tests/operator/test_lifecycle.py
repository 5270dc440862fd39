"""The full lifecycle of every example in examples/: create, verify a delivery, update,
delete — kopf and our handlers for real, the emulator through the SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
import yaml

from gemini_webhook_operator.model import marker_uid
from gemini_webhooks.contracts.signing_secret import LABEL_MANAGED_BY, MANAGED_BY
from tests.operator.harness import Cluster, is_ready, operator_running

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def _load(path: Path, url: str, base_url: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(path.read_text())
    body["spec"]["url"] = url
    body["spec"]["apiBaseUrl"] = base_url
    body["metadata"]["namespace"] = "default"
    return body


def _verify(secret: str, request: Any) -> None:
    headers = {k.lower(): v for k, v in request.headers.items()}
    standardwebhooks.Webhook(secret).verify(request.body, headers)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
async def test_example_is_created_verified_updated_and_deleted(
    example: Path, gemini: Cluster, emulator: Any, kube: Any
) -> None:
    endpoint = emulator.endpoint()
    client = emulator.client()
    body = _load(example, endpoint.url, emulator.base_url)
    name = body["metadata"]["name"]
    spec = body["spec"]
    if "webhookId" in spec:  # the adoption example: the webhook exists beforehand
        existing = client.webhooks.create(
            name="made by hand", uri=endpoint.url, subscribed_events=spec["events"]
        )
        spec["webhookId"] = existing.id
    async with operator_running(kube):
        created = await gemini.apply(body)
        obj = await gemini.wait_for(name, is_ready)
        status = obj["status"]
        remote = client.webhooks.get(id=status["webhookId"])
        assert marker_uid(remote.name) == created["metadata"]["uid"]
        assert sorted(remote.subscribed_events) == sorted(spec["events"])
        assert remote.state == ("disabled" if spec.get("state") == "Disabled" else "enabled")
        assert len(client.webhooks.list().webhooks) == 1
        await gemini.wait_event(name, {"Adopted" if "webhookId" in spec else "Created"})

        secret_name = spec.get("signingSecretName", f"{name}-signing-secret")
        secret = await gemini.client.get("v1", "Secret", "default", secret_name)
        assert secret is not None
        assert secret["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGED_BY
        assert secret["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
        held = await gemini.signing_secrets(secret_name=secret_name)
        assert held is not None and held.current is not None

        if remote.state == "enabled":
            emulator.fire(spec["events"][0])
            (request,) = endpoint.wait_for(1)
            _verify(held.current.secret, request)

        await gemini.patch(name, {"spec": {"events": ["batch.failed"]}})
        await gemini.wait_for(
            name, lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"]
        )
        assert client.webhooks.get(id=status["webhookId"]).subscribed_events == ["batch.failed"]

        await gemini.delete(name)
        await gemini.wait_gone(name)
        remaining = client.webhooks.list().webhooks or []
        if spec.get("deletionPolicy") == "Orphan":
            assert [w.id for w in remaining] == [status["webhookId"]]
        else:
            assert remaining == []
