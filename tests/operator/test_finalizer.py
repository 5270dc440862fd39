"""Deletions run on the operator's scheduler, held by our own finalizer, never inside kopf's
workers: a deletion that keeps failing (the Gemini API refusing, the API-key Secret gone
with its namespace) is retried there, completes once the cause is gone, survives an
operator restart, and holds none of kopf's `WORKER_LIMIT` workers. `FaultProxy` (a test
double in front of the emulator) refuses the WebhookService's DELETE calls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gemini_webhook_operator import finalizer, handlers
from tests.operator.api_proxy import FaultProxy
from tests.operator.harness import (
    API_KEY_SECRET,
    Cluster,
    bound_beside_listed,
    is_ready,
    operator_running,
    resource,
)

ALWAYS = 10**6  # a fault that lasts for the whole test


def _refused_deletes(api_proxy: FaultProxy) -> int:
    return len([c for c in api_proxy.calls("DELETE") if c.status >= 500])


def _deletes_done(api_proxy: FaultProxy) -> list[str]:
    return [c.path for c in api_proxy.calls("DELETE") if c.status < 300]


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _ready(gemini: Cluster, names: list[str], url: str, api: str) -> list[str]:
    """Create resources and wait until each is Ready; their remote webhooks' ids."""
    for name in names:
        await gemini.apply(resource(name, url, api))
    ids = []
    for name in names:
        ready = await gemini.wait_for(name, is_ready, timeout=30)
        ids.append(ready["status"]["webhookId"])
    return ids


async def _deleting_while_refused(
    gemini: Cluster, api_proxy: FaultProxy, name: str, url: str, tries: int
) -> str:
    """A Ready resource deleted while the WebhookService refuses every DELETE, once its
    deletion was tried `tries` times; its remote webhook's id."""
    (webhook_id,) = await _ready(gemini, [name], url, api_proxy.url)
    api_proxy.fail(503, count=ALWAYS, method="DELETE")
    await gemini.delete(name)
    await _until(lambda: _refused_deletes(api_proxy) >= tries, 30, "the deletion not tried")
    return webhook_id


async def test_deletions_that_keep_failing_leave_kopfs_workers_to_the_others(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy, monkeypatch: Any
) -> None:
    """With kopf's workers bounded, resources whose deletion keeps failing hold none of
    them: a resource created after them becomes Ready at once. kopf's own deletion handler
    slept out its 30 s retry inside the worker, holding every worker here."""
    monkeypatch.setattr(handlers, "WORKER_LIMIT", await bound_beside_listed(gemini, 2))
    endpoint = emulator.endpoint()
    failing = [f"undeletable-{index}" for index in range(2)]
    async with operator_running(kube, drift_interval=60.0):
        await _ready(gemini, failing, endpoint.url, api_proxy.url)
        api_proxy.fail(503, count=ALWAYS, method="DELETE")
        for name in failing:
            await gemini.delete(name)
        await _until(lambda: _refused_deletes(api_proxy) >= 2, 30, "no deletion was tried")
        await gemini.apply(resource("after-them", endpoint.url, api_proxy.url))
        await gemini.wait_for("after-them", is_ready, timeout=20)
        for name in failing:  # still held by our finalizer, their deletion still failing
            held = await gemini.get(name)
            assert held is not None and finalizer.FINALIZER in held["metadata"]["finalizers"]
        assert _deletes_done(api_proxy) == []


async def test_a_failing_deletion_is_retried_and_completes_once_the_api_is_back(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy, monkeypatch: Any
) -> None:
    monkeypatch.setattr(finalizer, "DELETE_RETRY_DELAY", 0.5)
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=60.0):
        webhook_id = await _deleting_while_refused(gemini, api_proxy, "api-down", endpoint.url, 2)
        assert await gemini.get("api-down") is not None
        api_proxy.clear()
        await gemini.wait_gone("api-down")
    assert [path.rsplit("/", 1)[-1] for path in _deletes_done(api_proxy)] == [webhook_id]
    assert (emulator.client().webhooks.list().webhooks or []) == []


async def test_a_deletion_without_its_api_key_completes_once_the_secret_is_back(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy, monkeypatch: Any
) -> None:
    """The namespace's deletion takes the API-key Secret with it, or someone removed it:
    the remote webhook cannot be deleted, and the resource waits, retried, for the key."""
    monkeypatch.setattr(finalizer, "DELETE_RETRY_DELAY", 0.3)
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=60.0):
        (webhook_id,) = await _ready(gemini, ["keyless"], endpoint.url, api_proxy.url)
        await gemini.client.delete("v1", "Secret", "default", API_KEY_SECRET)
        await gemini.delete("keyless")
        await asyncio.sleep(1.5)  # a few retries, each failing
        assert await gemini.get("keyless") is not None
        assert _deletes_done(api_proxy) == []
        await gemini.create_api_key(emulator.api_key)
        await gemini.wait_gone("keyless")
    assert [path.rsplit("/", 1)[-1] for path in _deletes_done(api_proxy)] == [webhook_id]


async def test_a_restarted_operator_picks_up_a_deletion_the_last_one_left(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    """kopf never calls a deletion handler again once its own finalizer is gone: the new
    process finds the resource being deleted and held by ours, and deletes it."""
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=60.0):
        webhook_id = await _deleting_while_refused(
            gemini, api_proxy, "left-behind", endpoint.url, 1
        )
    api_proxy.clear()
    assert await gemini.get("left-behind") is not None
    async with operator_running(kube, drift_interval=60.0):
        await gemini.wait_gone("left-behind")
    assert [path.rsplit("/", 1)[-1] for path in _deletes_done(api_proxy)] == [webhook_id]


async def test_an_orphaned_resource_is_let_go_without_a_call_or_a_retry(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=60.0):
        await gemini.apply(
            resource("orphaned", endpoint.url, api_proxy.url, deletionPolicy="Orphan")
        )
        await gemini.wait_for("orphaned", is_ready, timeout=30)
        api_proxy.fail(503, count=ALWAYS, method="DELETE")
        await gemini.delete("orphaned")
        await gemini.wait_gone("orphaned", timeout=5)
    assert api_proxy.calls("DELETE") == []
