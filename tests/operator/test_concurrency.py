"""At most `max_concurrent_reconciles` reconciliations run at once; the rest wait for a
slot, and every resource still becomes Ready. The bound is what keeps a thousand resources
arriving together from holding all their requests and responses at the same time (bench/
operator --kube real measures the memory). `FaultProxy` (a test double in front of the
emulator) slows each WebhookService call and counts how many it holds at once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.api_proxy import FaultProxy
from tests.operator.harness import Cluster, is_ready, operator_running, resource

RESOURCES = 6


async def _most_calls_at_once(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy, slots: int, prefix: str
) -> int:
    api_proxy.latency = 0.4
    endpoint = emulator.endpoint()
    names = [f"{prefix}-{index}" for index in range(RESOURCES)]
    async with operator_running(kube, drift_interval=60.0, max_concurrent_reconciles=slots):
        for name in names:
            await gemini.apply(resource(name, endpoint.url, api_proxy.url))
        for name in names:
            await gemini.wait_for(name, is_ready, timeout=30)
    return api_proxy.most_in_flight


@pytest.mark.parametrize(("slots", "most"), [(1, 1), (2, 2)])
async def test_reconciliations_beyond_the_bound_wait_for_a_slot(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy, slots: int, most: int
) -> None:
    assert await _most_calls_at_once(gemini, emulator, kube, api_proxy, slots, "slot") == most


async def test_without_a_tight_bound_the_same_resources_reconcile_together(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    """The control: what the bound prevents happens without it."""
    assert await _most_calls_at_once(gemini, emulator, kube, api_proxy, RESOURCES, "wide") > 2
