"""Truthful accounting (issue 12, point 5), through kopf and our handlers: a permanent
failure counts as `error` with its reason, not as success; the per-resource gauge shows
Ready and Synced as the conditions say."""

from __future__ import annotations

from typing import Any

from gemini_webhook_operator import metrics
from tests.operator.harness import Cluster, is_ready, operator_running, resource, synced_reason


def _gauge(running: Any, name: str, type_: str) -> float | None:
    value = running.metrics.registry.get_sample_value(
        metrics.RESOURCE_CONDITION, {"namespace": "default", "name": name, "type": type_}
    )
    return None if value is None else float(value)


async def test_an_invalid_spec_is_counted_as_an_error_with_its_reason(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    endpoint = emulator.endpoint()
    async with operator_running(kube) as running:
        await gemini.apply(
            resource("broken", endpoint.url, emulator.base_url, rotation={"interval": "0h"})
        )
        await gemini.wait_for("broken", lambda o: synced_reason(o) == "InvalidSpec")
        reconciles = running.metrics.reconciles
        assert reconciles.labels("change", "error", "InvalidSpec")._value.get() >= 1
        assert reconciles.labels("change", "success", "ReconcileSuccess")._value.get() == 0
        assert _gauge(running, "broken", "Synced") == 0
        assert _gauge(running, "broken", "Ready") == 0

        await gemini.patch("broken", {"spec": {"rotation": {"interval": "720h"}}})
        await gemini.wait_for("broken", is_ready)
        assert reconciles.labels("change", "success", "ReconcileSuccess")._value.get() >= 1
        assert _gauge(running, "broken", "Synced") == 1
        assert _gauge(running, "broken", "Ready") == 1


async def test_a_missing_api_key_is_counted_as_a_retry_with_its_reason(
    cluster: Cluster, emulator: Any, kube: Any
) -> None:
    async with operator_running(kube) as running:
        await cluster.apply(resource("keyless", "https://consumer.example/hook", emulator.base_url))
        await cluster.wait_for("keyless", lambda o: synced_reason(o) == "APIKeySecretMissing")
        retries = running.metrics.reconciles.labels("change", "retry", "APIKeySecretMissing")
        assert retries._value.get() >= 1
        assert _gauge(running, "keyless", "Synced") == 0
