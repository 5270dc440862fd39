"""Several receiver replicas without Redis each deduplicate alone and know only their own
health pings: the `ReceiverStateShared` condition (False, and a Warning Event) says so;
with Redis it is True; one replica gets no such condition. The health verdict "not
received" from one of several such pods is Unknown (`PingsPerReplica`)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from gemini_webhook_operator import health, replica_state
from gemini_webhook_operator.health import Verdict, per_replica_caveat
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.crd_receiver import receiver_spec
from tests.operator.harness import Cluster, condition, is_ready, operator_running, resource

DEFAULT_ROUTE = {"targets": [{"url": "https://consumer.example.com/events"}]}
REDIS = {"url": "redis://redis.default.svc:6379/0"}


def _state(**receiver: Any) -> replica_state.SharedState | None:
    return replica_state.shared_state(receiver_spec({"receiver": receiver}))


def test_one_replica_has_nothing_to_share() -> None:
    assert _state(enabled=True, replicas=1) is None
    assert _state(enabled=True) is None  # the default is one


def test_no_condition_without_a_deployed_receiver() -> None:
    assert _state(enabled=False, replicas=3) is None


def test_several_replicas_without_redis_keep_state_per_pod() -> None:
    state = _state(enabled=True, replicas=3)
    assert state is not None
    assert (state.status, state.reason) == (False, replica_state.REASON_PER_POD)
    assert "3 replicas" in state.message and "spec.receiver.redis" in state.message


def test_several_replicas_with_redis_share_it() -> None:
    state = _state(enabled=True, replicas=2, redis=REDIS)
    assert state is not None
    assert (state.status, state.reason) == (True, replica_state.REASON_SHARED)
    assert "redis.default.svc" not in state.message  # the URL may carry a password


NOT_RECEIVED = Verdict(False, health.REASON_NOT_RECEIVED, "not received", None, "not_verified")
VERIFIED = Verdict(True, health.REASON_VERIFIED, "ok", timedelta(seconds=1), "verified")
PREVIOUS = Verdict(False, health.REASON_PREVIOUS_SECRET, "previous", None, "not_verified")


def test_not_received_from_one_of_several_memory_pods_is_unknown() -> None:
    verdict = per_replica_caveat(NOT_RECEIVED, replicas=3, shared_pings=False)
    assert (verdict.status, verdict.reason) == (None, health.REASON_PINGS_PER_REPLICA)
    assert verdict.ping_result == "not_verified"


@pytest.mark.parametrize(
    ("verdict", "replicas", "shared"),
    [
        (NOT_RECEIVED, 1, False),  # the only pod took every ping
        (NOT_RECEIVED, 3, True),  # every pod answers from Redis
        (VERIFIED, 3, False),  # a pod that saw it verified is proof enough
        (PREVIOUS, 3, False),  # that pod does lack the current secret
    ],
)
def test_other_verdicts_stand(verdict: Verdict, replicas: int, shared: bool) -> None:
    assert per_replica_caveat(verdict, replicas=replicas, shared_pings=shared) is verdict


def _shared(obj: dict[str, Any]) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == crd.CONDITION_RECEIVER_STATE_SHARED:
            return dict(item)
    return None


async def _warnings(gemini: Cluster) -> list[tuple[str, int]]:
    return [
        (e["metadata"]["name"], int(e.get("count") or 1))
        for e in await gemini.events(about="fleet")
        if e.get("reason") == replica_state.REASON_PER_POD
    ]


async def test_the_condition_and_its_warning_follow_the_spec(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    receiver = {"enabled": True, "replicas": 3, "defaultRoute": DEFAULT_ROUTE}
    body = resource("fleet", "unused", emulator.base_url, receiver=receiver)
    del body["spec"]["url"]
    async with operator_running(kube, drift_interval=0.5):
        await gemini.apply(body)
        obj = await gemini.wait_for("fleet", lambda o: is_ready(o) and bool(_shared(o)))
        shared = _shared(obj)
        assert shared is not None
        assert (shared["status"], shared["reason"]) == ("False", replica_state.REASON_PER_POD)
        assert condition(obj, "Ready")["status"] == "True"  # a warning, not a failure
        event = await gemini.wait_event("fleet", {replica_state.REASON_PER_POD})
        assert event["type"] == "Warning"
        # Once it is reported, later reconciliations (the drift check runs every 0.5 s)
        # post no more such Events.
        await asyncio.sleep(1.0)
        before = await _warnings(gemini)
        await asyncio.sleep(2.0)
        assert await _warnings(gemini) == before

        await gemini.patch("fleet", {"spec": {"receiver": {"redis": REDIS}}})
        obj = await gemini.wait_for(
            "fleet", lambda o: (_shared(o) or {}).get("reason") == replica_state.REASON_SHARED
        )
        assert _shared(obj)["status"] == "True"  # type: ignore[index]

        await gemini.patch("fleet", {"spec": {"receiver": {"replicas": 1}}})
        await gemini.wait_for("fleet", lambda o: _shared(o) is None)


def test_not_received_from_every_ready_pod_stands() -> None:
    assert per_replica_caveat(NOT_RECEIVED, replicas=3, shared_pings=False, asked=3) is NOT_RECEIVED


def test_not_received_from_fewer_pods_than_replicas_is_unknown() -> None:
    verdict = per_replica_caveat(NOT_RECEIVED, replicas=3, shared_pings=False, asked=2)
    assert (verdict.status, verdict.reason) == (None, health.REASON_PINGS_PER_REPLICA)
    assert "the 2 ready receiver pods asked" in verdict.message


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([None, VERIFIED, None], VERIFIED),  # the pod that took it decides at once
        ([NOT_RECEIVED, NOT_RECEIVED, VERIFIED], VERIFIED),
        ([PREVIOUS, VERIFIED, None], VERIFIED),  # a retry reached a pod that has the secret
        ([None, PREVIOUS, NOT_RECEIVED], PREVIOUS),
        ([NOT_RECEIVED, NOT_RECEIVED, NOT_RECEIVED], NOT_RECEIVED),
        ([NOT_RECEIVED, None, NOT_RECEIVED], None),  # one pod still to answer
        ([None, None, None], None),
    ],
)
def test_the_pods_verdicts_combine(
    verdicts: list[Verdict | None], expected: Verdict | None
) -> None:
    assert health.combine(verdicts) is expected
