"""At most `max_concurrent_reconciles` reconciliations run at once; the rest wait for a
slot, and every resource still becomes Ready. The bound is what keeps a thousand resources
arriving together from holding all their requests and responses at the same time (bench/
operator --kube real measures the memory). `FaultProxy` (a test double in front of the
emulator) slows each WebhookService call and counts how many it holds at once. Likewise,
kopf's worker of a resource is let go soon after the resource's events stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gemini_webhook_operator import handlers
from gemini_webhook_operator.handlers import WORKER_IDLE_SECONDS
from tests.operator.api_proxy import FaultProxy
from tests.operator.harness import (
    Cluster,
    bound_beside_listed,
    is_ready,
    operator_running,
    resource,
    synced_reason,
)

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


def _kopf_workers_of(uid: str) -> list[asyncio.Task[Any]]:
    """kopf's worker tasks of the resource with `uid` (kopf names each `worker for <key>`,
    the key holding the uid)."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("worker for") and uid in task.get_name()
    ]


async def test_a_resources_kopf_worker_is_let_go_soon_after_its_events_stop(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    """kopf keeps an object's worker, and with it the last watch event it handled (the whole
    decoded object), until no event came for its idle timeout: 5 s by default, a thousand
    workers at the peak of a thousand resources created together. Ours is shorter."""
    created = await gemini.apply(resource("idle-worker", emulator.endpoint().url, api_proxy.url))
    uid = created["metadata"]["uid"]
    async with operator_running(kube, drift_interval=60.0):
        await gemini.wait_for("idle-worker", is_ready, timeout=30)
        ready_at = time.monotonic()
        while _kopf_workers_of(uid):
            # Ready is the resource's last event (its status write) or one shortly before it.
            assert time.monotonic() - ready_at < WORKER_IDLE_SECONDS + 2.5, "worker still held"
            await asyncio.sleep(0.05)


# Nothing listens on the discard port: every WebhookService call is refused at once.
UNREACHABLE_API = "http://127.0.0.1:9"


def _being_retried(obj: dict[str, Any]) -> bool:
    return synced_reason(obj) == "RemoteUnavailable"


async def test_resources_being_retried_leave_kopfs_workers_to_the_others(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy, monkeypatch: Any
) -> None:
    """With kopf's workers bounded, resources whose reconciliation keeps failing (their
    retries pending) hold none of them: a resource created after them becomes Ready at
    once. kopf sleeps out a handler's `TemporaryError` inside the worker; with that, the
    failing resources would hold every worker for good and the new one never start."""
    monkeypatch.setattr(handlers, "WORKER_LIMIT", await bound_beside_listed(gemini, 2))
    endpoint = emulator.endpoint()
    failing = [f"retrying-{index}" for index in range(2)]
    async with operator_running(kube, drift_interval=60.0):
        for name in failing:
            await gemini.apply(resource(name, endpoint.url, UNREACHABLE_API))
        for name in failing:
            await gemini.wait_for(name, _being_retried, timeout=30)
        await gemini.apply(resource("after-them", endpoint.url, api_proxy.url))
        await gemini.wait_for("after-them", is_ready, timeout=20)
        for name in failing:  # still retried, and still failing
            assert _being_retried(await gemini.get(name))


async def test_an_edit_supersedes_a_pending_retry(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    """A resource being retried (every 0.5 s here) and then fixed by an edit: the edit's
    reconciliation wins, and no retry of the old spec writes its failure after it."""
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=60.0):
        await gemini.apply(resource("fixed-by-edit", endpoint.url, UNREACHABLE_API))
        await gemini.wait_for("fixed-by-edit", _being_retried, timeout=30)
        await gemini.patch("fixed-by-edit", {"spec": {"apiBaseUrl": api_proxy.url}})
        await gemini.wait_for("fixed-by-edit", is_ready, timeout=30)
        deadline = time.monotonic() + 3.0  # six retry delays
        while time.monotonic() < deadline:
            assert is_ready(await gemini.get("fixed-by-edit"))
            await asyncio.sleep(0.1)


async def test_resources_whose_reconciliation_raises_leave_kopfs_workers_to_the_others(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy, monkeypatch: Any
) -> None:
    """An unexpected exception (a bug) is retried on the operator's scheduler, with kopf's
    error delays, not slept out in the resource's kopf worker: two resources that raise
    leave the two workers to a third, counted as errors; once the bug is gone they become
    Ready too."""
    monkeypatch.setattr(handlers, "WORKER_LIMIT", await bound_beside_listed(gemini, 2))
    fixed = asyncio.Event()
    reconcile = handlers.reconcile

    async def buggy(op: Any, body: Any, **kwargs: Any) -> Any:
        if body["metadata"]["name"].startswith("buggy") and not fixed.is_set():
            raise RuntimeError("a bug")
        return await reconcile(op, body, **kwargs)

    monkeypatch.setattr(handlers, "reconcile", buggy)
    endpoint = emulator.endpoint()
    failing = [f"buggy-{index}" for index in range(2)]
    async with operator_running(kube, drift_interval=60.0) as running:
        errors = running.metrics.reconciles.labels("change", "error", "RuntimeError")
        for name in failing:
            await gemini.apply(resource(name, endpoint.url, api_proxy.url))
        deadline = time.monotonic() + 30
        while errors._value.get() < 2 * len(failing):  # each retried once at least
            assert time.monotonic() < deadline, "the bug was not retried"
            await asyncio.sleep(0.05)
        await gemini.apply(resource("after-the-bug", endpoint.url, api_proxy.url))
        await gemini.wait_for("after-the-bug", is_ready, timeout=20)
        fixed.set()
        for name in failing:
            await gemini.wait_for(name, is_ready, timeout=30)
