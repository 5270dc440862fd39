"""Conditions are merged per type: the reconciler and the health timer each write their own
condition types with server-side apply under their own field manager, so neither puts back
the other's condition as it last read it (a whole-list write from a stale copy did)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gemini_webhook_operator.conditions import (
    MANAGER_HEALTH,
    MANAGER_RECONCILER,
    applies,
    removals,
    set_condition,
)
from gemini_webhook_operator.write_back import write_status
from gemini_webhooks.contracts.times import parse_rfc3339
from tests.operator.harness import Cluster, condition, is_ready, operator_running, resource
from tests.operator.test_delivery_verified_timer import NAME, RECEIVER_SPEC, receiver

__all__ = ["receiver"]  # the fixture, shared with the DeliveryVerified tests

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _set(conds: list[dict[str, Any]], type_: str, status: bool | None, reason: str) -> Any:
    return set_condition(conds, type_, status, reason, reason.lower(), generation=1, now=T0)


BASE = _set(
    _set(_set([], "Ready", True, "WebhookReady"), "Synced", True, "Ok"),
    "DeliveryVerified",
    None,
    "NotYet",
)


def test_nothing_changed_is_nothing_to_apply() -> None:
    assert applies(BASE, [dict(c) for c in reversed(BASE)]) == []


def test_each_manager_applies_only_when_its_own_types_changed() -> None:
    synced = _set(BASE, "Synced", False, "RemoteUnavailable")
    ((manager, intent),) = applies(BASE, synced)
    assert manager == MANAGER_RECONCILER
    assert [c["type"] for c in intent] == ["Ready", "Synced"]  # its whole intent, no other
    verified = _set(BASE, "DeliveryVerified", True, "PingVerified")
    ((manager, intent),) = applies(BASE, verified)
    assert manager == MANAGER_HEALTH
    assert [c["type"] for c in intent] == ["DeliveryVerified"]


def test_a_type_the_manager_dropped_is_removed_by_guarded_index_last_first() -> None:
    by_type = {c["type"]: c for c in [*BASE, *_set([], "ReceiverStateShared", False, "X")]}
    order = ("Ready", "ReceiverStateShared", "Synced", "DeliveryVerified")
    stored = [by_type[t] for t in order]
    intent = [by_type["Ready"], by_type["Synced"]]
    assert removals({"conditions": stored}, MANAGER_RECONCILER, {"conditions": intent}) == [
        {"op": "test", "path": "/status/conditions/1/type", "value": "ReceiverStateShared"},
        {"op": "remove", "path": "/status/conditions/1"},
    ]
    assert removals({"conditions": stored}, MANAGER_HEALTH, {"conditions": [stored[3]]}) == []
    both = [*stored, *_set([], "Stale", True, "X")]
    ops = removals({"conditions": both}, MANAGER_RECONCILER, {"conditions": intent})
    assert [op["path"] for op in ops] == [
        "/status/conditions/4/type",
        "/status/conditions/4",
        "/status/conditions/1/type",
        "/status/conditions/1",
    ]


def _by_type(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    assert obj is not None
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


async def test_a_write_from_a_stale_copy_keeps_the_other_writers_condition(
    cluster: Cluster,
) -> None:
    await cluster.apply(resource("stale", "https://example.com/hook", "http://127.0.0.1:9"))
    fresh = await cluster.get("stale")
    assert fresh is not None
    await write_status(cluster.client, fresh, BASE)
    stale = await cluster.get("stale")  # the reconciler's copy, read now
    assert stale is not None and set(_by_type(stale)) == {"Ready", "Synced", "DeliveryVerified"}

    # The health timer records a verdict; then the reconciler writes Synced from its copy,
    # which still shows the old DeliveryVerified.
    await write_status(cluster.client, stale, _set(BASE, "DeliveryVerified", True, "PingVerified"))
    stale_conditions = list(stale["status"]["conditions"])
    await write_status(
        cluster.client, stale, _set(stale_conditions, "Synced", False, "RemoteUnavailable")
    )
    shown = _by_type(await cluster.get("stale"))
    assert shown["DeliveryVerified"]["reason"] == "PingVerified"
    assert shown["Synced"]["reason"] == "RemoteUnavailable"
    assert shown["Ready"]["reason"] == "WebhookReady"

    # What earlier versions wrote, the whole list from the same stale copy, reverts it.
    await cluster.client.request(
        "PATCH",
        cluster.path("stale") + "/status",
        {"status": {"conditions": stale_conditions}},
        content_type="application/merge-patch+json",
    )
    assert _by_type(await cluster.get("stale"))["DeliveryVerified"]["reason"] == "NotYet"


async def test_a_type_written_by_an_earlier_whole_list_patch_is_removed(
    cluster: Cluster,
) -> None:
    await cluster.apply(resource("legacy", "https://example.com/hook", "http://127.0.0.1:9"))
    legacy = [*BASE, *_set([], "ReceiverStateShared", False, "PerPodMemory")]
    await cluster.client.request(
        "PATCH",
        cluster.path("legacy") + "/status",
        {"status": {"conditions": legacy}},
        content_type="application/merge-patch+json",
    )
    body = await cluster.get("legacy")
    assert body is not None and "ReceiverStateShared" in _by_type(body)
    # One replica again: the reconciler no longer wants ReceiverStateShared.
    await write_status(cluster.client, body, _set(BASE, "Synced", False, "RemoteUnavailable"))
    shown = _by_type(await cluster.get("legacy"))
    assert set(shown) == {"Ready", "Synced", "DeliveryVerified"}
    assert shown["Synced"]["reason"] == "RemoteUnavailable"


def test_a_field_the_reconciler_no_longer_applies_is_removed_by_a_guarded_patch() -> None:
    stored = {"webhookId": "w1", "nextRotationTime": "x", "lastPing": {"request": "1"}}
    payload = {"conditions": [], "webhookId": "w1"}
    assert removals(stored, MANAGER_RECONCILER, payload) == [
        {"op": "test", "path": "/status/nextRotationTime", "value": "x"},
        {"op": "remove", "path": "/status/nextRotationTime"},
    ]
    assert removals(stored, MANAGER_HEALTH, {"conditions": []}) == []


async def test_a_field_written_by_an_earlier_merge_patch_is_removed_when_no_longer_wanted(
    cluster: Cluster,
) -> None:
    await cluster.apply(resource("legacyf", "https://example.com/hook", "http://127.0.0.1:9"))
    await cluster.client.request(  # what earlier versions wrote: a merge patch of the fields
        "PATCH",
        cluster.path("legacyf") + "/status",
        {"status": {"webhookId": "w1", "nextRotationTime": "2026-06-01T00:00:00Z"}},
        content_type="application/merge-patch+json",
        params={"fieldManager": MANAGER_RECONCILER},
    )
    body = await cluster.get("legacyf")
    assert body is not None and body["status"]["nextRotationTime"]
    # Rotation paused: the reconciler no longer wants nextRotationTime.
    await write_status(
        cluster.client, body, BASE, fields={"webhookId": "w1", "nextRotationTime": None}
    )
    shown = await cluster.get("legacyf")
    assert shown is not None
    assert "nextRotationTime" not in shown["status"]
    assert shown["status"]["webhookId"] == "w1"
    assert set(_by_type(shown)) == {"Ready", "Synced", "DeliveryVerified"}


async def _watch_conditions(
    cluster: Cluster, name: str, seen: list[dict[str, dict[str, Any]]]
) -> None:
    """Record every distinct set of conditions the object shows (polled every 20 ms)."""
    while True:
        obj = await cluster.get(name)
        if obj is not None:
            shown = _by_type(obj)
            if not seen or seen[-1] != shown:
                seen.append(shown)
        await asyncio.sleep(0.02)


def _sent_at(verified: dict[str, Any]) -> datetime | None:
    found = re.search(r"a ping sent at (\S+) ", verified.get("message") or "")
    return parse_rfc3339(found.group(1)) if found else None


def _verified_after_rotation(previous: datetime | None) -> Callable[[dict[str, Any]], bool]:
    """A rotation newer than `previous` happened, and a ping sent after it verified."""

    def check(obj: dict[str, Any]) -> bool:
        rotated = parse_rfc3339((obj.get("status") or {}).get("lastRotationTime"))
        verified = condition(obj, "DeliveryVerified")
        sent = _sent_at(verified)
        return (
            rotated is not None
            and (previous is None or rotated > previous)
            and verified.get("reason") == "PingVerified"
            and sent is not None
            and sent >= rotated
        )

    return check


async def test_the_health_timer_and_the_reconciler_running_together_never_flap(
    gemini: Cluster, emulator: Any, receiver: Any
) -> None:
    url = f"http://127.0.0.1:{receiver.public_port}/"
    body = resource(NAME, url, emulator.base_url, receiver=RECEIVER_SPEC)
    seen: list[dict[str, dict[str, Any]]] = []
    async with operator_running(
        kube=gemini.kube, health_tick=0.3, health_retry=0.3, drift_interval=0.5
    ) as running:
        await gemini.apply(body)
        await gemini.wait_for(NAME, is_ready)
        await gemini.patch(NAME, {"spec": {"healthCheck": {"enabled": True, "interval": "1h"}}})
        await gemini.wait_for(
            NAME,
            lambda o: condition(o, "DeliveryVerified").get("reason") == "PingVerified",
            timeout=20,
        )
        watcher = asyncio.create_task(_watch_conditions(gemini, NAME, seen))
        try:
            # Each rotation has both writers at work: the reconciler resets DeliveryVerified
            # and reports Synced; the health timer pings, at 0.3 s, with the new secret.
            rotated: datetime | None = None
            for round_ in range(3):
                await asyncio.sleep(1.1)  # conditions tell time in whole seconds
                annotations = {"gemini.webhooks.dev/rotate": str(round_)}
                await gemini.patch(NAME, {"metadata": {"annotations": annotations}})
                done = await gemini.wait_for(NAME, _verified_after_rotation(rotated), timeout=20)
                rotated = parse_rfc3339(done["status"]["lastRotationTime"])
            await asyncio.sleep(2.0)  # several drift checks and health ticks more
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        # One rotation per request, also when a drift check is handed a copy older than the
        # rotation's own writes (behind a write of the health timer's).
        assert running.metrics.rotations.labels("RequestedByAnnotation")._value.get() == 3

    # No condition ever went back to a value it had left (each writer's values are unique:
    # DeliveryVerified names the ping's send time, Ready the last rotation). Ready and
    # Synced stayed True throughout; pings verified in the order they were sent.
    assert len(seen) > 3, seen  # both writers were at work
    for type_ in ("Ready", "Synced", "DeliveryVerified"):
        values = [(s[type_]["status"], s[type_]["reason"], s[type_]["message"]) for s in seen]
        runs = [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]
        assert len(runs) == len(set(runs)), f"{type_} flapped: {runs}"
    assert all(s["Ready"]["status"] == "True" and s["Synced"]["status"] == "True" for s in seen)
    assert len({s["Ready"]["lastTransitionTime"] for s in seen}) == 1
    sent = [t for t in (_sent_at(s["DeliveryVerified"]) for s in seen) if t is not None]
    assert sent == sorted(sent)
