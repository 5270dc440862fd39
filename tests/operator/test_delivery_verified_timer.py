"""The operator's kopf timer runs the health module for resources with
`spec.healthCheck.enabled` and reports the `DeliveryVerified` condition."""

from __future__ import annotations

from typing import Any

from tests.operator.harness import Cluster, condition, is_ready, operator_running, resource


async def test_health_check_reports_delivery_verified_through_the_timer(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    endpoint = emulator.endpoint()
    body = resource("pinged", endpoint.url, emulator.base_url, healthCheck={"enabled": True})
    async with operator_running(kube, health_tick=0.5):
        await gemini.apply(body)
        await gemini.wait_for("pinged", is_ready)
        obj = await gemini.wait_for("pinged", lambda o: bool(condition(o, "DeliveryVerified")))
        verified = condition(obj, "DeliveryVerified")
        assert verified["status"] == "Unknown"
        assert verified["reason"] == "ReceiverNotDeployed"
        assert is_ready(obj)  # the health condition sits beside Ready and Synced
