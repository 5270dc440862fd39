"""WebhookService faults — 401, 403, 429 with Retry-After, 500, timeouts, 400 — each with
its own condition reason, recovery when the fault clears, and no hot loop meanwhile.
Faults are injected by `FaultProxy` (a test double) in front of the emulator."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from tests.operator.api_proxy import FaultProxy
from tests.operator.harness import (
    API_KEY_SECRET,
    Cluster,
    condition,
    is_ready,
    operator_running,
    resource,
    synced_reason,
)

MANY = 10**6


async def _calls_during(proxy: FaultProxy, seconds: float) -> int:
    before = len(proxy.calls())
    await asyncio.sleep(seconds)
    return len(proxy.calls()) - before


async def test_invalid_api_key_is_reported_without_a_hot_loop_and_recovers(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    await gemini.create_api_key("not-a-valid-key")
    endpoint = emulator.endpoint()
    async with operator_running(kube, auth_retry=2.0):
        await gemini.apply(resource("badkey", endpoint.url, api_proxy.url))
        await gemini.wait_for(
            "badkey", lambda o: synced_reason(o) in ("InvalidAPIKey", "PermissionDenied")
        )
        assert await _calls_during(api_proxy, 2.0) <= 2
        await gemini.client.merge_patch(
            "v1",
            "Secret",
            "default",
            API_KEY_SECRET,
            {"data": {"api-key": base64.b64encode(emulator.api_key.encode()).decode()}},
        )
        await gemini.wait_for("badkey", is_ready, timeout=20)


async def test_permission_denied_has_its_own_reason(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    api_proxy.fail(403, count=MANY)
    async with operator_running(kube, auth_retry=1.0):
        await gemini.apply(resource("denied", "https://hooks.example.com/x", api_proxy.url))
        await gemini.wait_for("denied", lambda o: synced_reason(o) == "PermissionDenied")
        api_proxy.clear()
        await gemini.wait_for("denied", is_ready, timeout=20)


async def test_quota_429_pauses_calls_for_retry_after(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    api_proxy.fail(429, count=1, method="GET", retry_after=2)
    async with operator_running(kube):
        await gemini.apply(resource("quota", "https://hooks.example.com/x", api_proxy.url))
        await gemini.wait_for("quota", is_ready, timeout=20)
    calls = api_proxy.calls()
    limited = next(i for i, c in enumerate(calls) if c.status == 429)
    assert calls[limited + 1].at - calls[limited].at >= 1.9
    assert len(emulator.client().webhooks.list().webhooks) == 1


async def test_quota_error_is_reported_with_its_reason(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    api_proxy.fail(429, count=MANY, retry_after=1)
    async with operator_running(kube):
        await gemini.apply(resource("quota2", "https://hooks.example.com/x", api_proxy.url))
        await gemini.wait_for("quota2", lambda o: synced_reason(o) == "QuotaExceeded")
        assert await _calls_during(api_proxy, 2.0) <= 4
        events = await gemini.events(about="quota2")
        warnings = [e for e in events if e.get("type") == "Warning"]
        assert [e["reason"] for e in warnings] == ["QuotaExceeded"]  # once, not per retry
        api_proxy.clear()
        await gemini.wait_for("quota2", is_ready, timeout=20)


async def test_server_errors_are_retried_to_exactly_one_webhook(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    api_proxy.fail(500, count=2, method="POST")
    async with operator_running(kube):
        await gemini.apply(resource("five", "https://hooks.example.com/x", api_proxy.url))
        await gemini.wait_for("five", is_ready, timeout=30)
    assert len(emulator.client().webhooks.list().webhooks) == 1


async def test_timeout_after_the_api_acted_still_leaves_one_webhook(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    api_proxy.fail(-1, count=1, method="POST", stall=3.0)  # create happens, answer never comes
    async with operator_running(kube, api_timeout=1.0):
        await gemini.apply(resource("slow", "https://hooks.example.com/x", api_proxy.url))
        obj = await gemini.wait_for("slow", is_ready, timeout=30)
    webhooks = emulator.client().webhooks.list().webhooks
    assert [w.id for w in webhooks] == [obj["status"]["webhookId"]]


async def test_remote_validation_error_waits_for_a_spec_change(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    api_proxy.fail(400, count=MANY, method="POST")
    async with operator_running(kube, drift_interval=60):
        await gemini.apply(resource("invalid", "https://hooks.example.com/x", api_proxy.url))
        await gemini.wait_for("invalid", lambda o: synced_reason(o) == "RemoteValidationError")
        assert await _calls_during(api_proxy, 2.0) == 0
        api_proxy.clear()
        await gemini.patch("invalid", {"spec": {"url": "https://hooks.example.com/fixed"}})
        await gemini.wait_for("invalid", is_ready)


async def test_missing_api_key_secret_has_its_own_reason_no_calls_and_recovers(
    cluster: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    async with operator_running(kube):
        await cluster.apply(resource("keyless", "https://hooks.example.com/x", api_proxy.url))
        obj = await cluster.wait_for("keyless", lambda o: synced_reason(o) == "APIKeySecretMissing")
        synced = condition(obj, "Synced")
        assert synced["status"] == "False" and "gemini-api-key" in synced["message"]
        assert synced["observedGeneration"] == obj["metadata"]["generation"]
        assert synced["lastTransitionTime"]
        assert condition(obj, "Ready")["status"] == "False"
        assert await _calls_during(api_proxy, 1.5) == 0  # nothing to call the API with
        events = await cluster.events(about="keyless")
        assert [e["reason"] for e in events if e.get("type") == "Warning"] == [
            "APIKeySecretMissing"
        ]  # once, not per retry
        await cluster.create_api_key(emulator.api_key)
        ready = await cluster.wait_for("keyless", is_ready, timeout=20)
    synced = condition(ready, "Synced")
    assert (synced["status"], synced["reason"]) == ("True", "ReconcileSuccess")
    assert synced["lastTransitionTime"] >= condition(obj, "Synced")["lastTransitionTime"]
