"""Crash the operator at every step boundary of create and rotate; after a restart there
is exactly one remote webhook and the Secret verifies the next delivery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import standardwebhooks

from tests.operator.harness import Cluster, is_ready, operator_running, resource

ROTATE = {"metadata": {"annotations": {"gemini.webhooks.dev/rotate": "crash-test"}}}


def _verifies(held: Any, request: Any) -> bool:
    headers = {k.lower(): v for k, v in request.headers.items()}
    for secret in held.secrets:
        try:
            standardwebhooks.Webhook(secret.secret).verify(request.body, headers)
            return True
        except standardwebhooks.WebhookVerificationError:
            continue
    return False


def _hang_at(step: str) -> tuple[asyncio.Event, Any]:
    reached = asyncio.Event()

    async def hook(name: str) -> None:
        if name == step and not reached.is_set():
            reached.set()
            await asyncio.Event().wait()  # stuck here until the "process" is killed

    return reached, hook


@pytest.mark.parametrize(
    ("step", "revocation"),
    [
        ("create.called", "Grace"),
        ("create.secret_written", "Grace"),
        ("rotate.called", "Grace"),
        ("rotate.called", "Immediate"),
        ("rotate.secret_written", "Grace"),
    ],
)
async def test_crash_at_step_boundary_heals_to_one_webhook_and_a_verifying_secret(
    step: str, revocation: str, gemini: Cluster, emulator: Any, kube: Any
) -> None:
    client = emulator.client()
    endpoint = emulator.endpoint()
    body = resource("crashy", endpoint.url, emulator.base_url, rotation={"revocation": revocation})
    if step.startswith("rotate"):
        async with operator_running(kube):
            await gemini.apply(body)
            await gemini.wait_for("crashy", is_ready)

    reached, hook = _hang_at(step)
    async with operator_running(kube, step=hook) as running:
        if step.startswith("rotate"):
            await gemini.patch("crashy", ROTATE)
        else:
            await gemini.apply(body)
        await asyncio.wait_for(reached.wait(), timeout=15)
        await running.kill()

    async with operator_running(kube, drift_interval=1.0) as restarted:
        obj = await gemini.wait_for(
            "crashy",
            lambda o: (
                is_ready(o)
                and "gemini.webhooks.dev/rotate" not in (o["metadata"].get("annotations") or {})
            ),
        )
        webhooks = client.webhooks.list().webhooks or []
        assert [w.id for w in webhooks] == [obj["status"]["webhookId"]]
        held = await gemini.signing_secrets("crashy")
        assert held is not None and held.webhook_id == obj["status"]["webhookId"]
        emulator.fire("batch.succeeded")
        requests = endpoint.wait_for(1)
        assert _verifies(held, requests[-1])
        if step == "create.called":  # the ID was recorded nowhere: found by its marker
            assert restarted.metrics.heals.labels("FoundByMarker")._value.get() == 1
            healed = await gemini.wait_event("crashy", {"Healed"})
            assert obj["status"]["webhookId"] in healed["message"]
