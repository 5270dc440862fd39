"""Steady state: with every resource Ready and nothing changing, the WebhookService sees
one shared listing per drift interval for all resources together — not one call each —
and nothing else (counted by `FaultProxy`, a recording test double, not a fake API)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.operator.api_proxy import FaultProxy
from tests.operator.harness import Cluster, is_ready, operator_running, resource

RESOURCES = 6
DRIFT = 1.0
WINDOW = 4.0


async def test_steady_state_costs_one_shared_listing_per_drift_interval(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    endpoint = emulator.endpoint()
    names = [f"steady-{index}" for index in range(RESOURCES)]
    async with operator_running(kube, drift_interval=DRIFT) as running:
        for name in names:
            await gemini.apply(resource(name, endpoint.url, api_proxy.url))
        for name in names:
            await gemini.wait_for(name, is_ready)
        await asyncio.sleep(2 * DRIFT)  # let the creation settle
        drift_before = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
        before = len(api_proxy.calls())
        await asyncio.sleep(WINDOW)
        calls = api_proxy.calls()[before:]
        drift_checks = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
    assert drift_checks - drift_before >= RESOURCES * (WINDOW / DRIFT - 1)  # they all ran
    assert all(c.method == "GET" and c.path.endswith("/webhooks") for c in calls), calls
    # One listing per interval for all six (plus one for an interval boundary in the window).
    assert len(calls) <= WINDOW / DRIFT + 1, len(calls)
