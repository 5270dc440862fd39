"""The operator's health scheduler (`drift.py`) runs the health module for resources with
`spec.healthCheck.enabled` and reports the `DeliveryVerified` condition.

The full loop runs for real: the operator (kopf, our handlers) creates the webhook and
writes its Secret; the real receiver watches that Secret through the Kubernetes API (as
its Deployment would) and verifies the pings the emulator delivers; the operator learns
the verdict from the receiver's ping status. The receiver runs in this process instead of
a Pod, so its internal Service is served by it through the test's cluster proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import generate_latest

from gemini_webhooks.contracts.times import parse_rfc3339
from tests.fixtures.cluster_proxy import ClusterProxy
from tests.operator.harness import Cluster, condition, is_ready, operator_running, resource
from tests.operator.local_receiver import local_receiver


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


NAME = "verified"
RECEIVER_SPEC = {
    "enabled": True,
    "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
}


@pytest.fixture
async def receiver(
    kube: Any, monkeypatch: pytest.MonkeyPatch, cluster_proxy: ClusterProxy
) -> AsyncIterator[Any]:
    """The real receiver, reading `verified`'s signing Secret through the Kubernetes API."""
    async with local_receiver(kube, NAME, monkeypatch, cluster_proxy) as running:
        yield running


def _sent_at(verified: dict[str, Any]) -> datetime:
    found = re.search(r"a ping sent at (\S+) ", verified.get("message") or "")
    assert found, verified
    sent = parse_rfc3339(found.group(1))
    assert sent is not None
    return sent


async def _verified_pings(metrics: Any, *, at_least: int, timeout: float) -> None:
    """Wait until the operator counted `at_least` health pings verified."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        verified = metrics.registry.get_sample_value(
            "gemini_webhook_operator_delivery_pings_total", {"result": "verified"}
        )
        if (verified or 0) >= at_least:
            return
        assert loop.time() < deadline, f"{verified} health pings verified within {timeout}s"
        await asyncio.sleep(0.1)


def _verified_since(since: datetime | None) -> Any:
    def check(obj: dict[str, Any]) -> bool:
        verified = condition(obj, "DeliveryVerified")
        if verified.get("reason") != "PingVerified" or verified.get("status") != "True":
            return False
        return since is None or _sent_at(verified) >= since

    return check


async def test_delivery_verified_after_creation_after_rotation_and_after_a_restart(
    gemini: Cluster, emulator: Any, kube: Any, receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{receiver.public_port}/"
    body = resource(NAME, url, emulator.base_url, receiver=RECEIVER_SPEC)
    checks = {"healthCheck": {"enabled": True, "interval": "1h"}}
    async with operator_running(kube, health_tick=0.5, health_retry=1.0) as running:
        await gemini.apply(body)
        await gemini.wait_for(NAME, is_ready)
        # Health checks on once the receiver holds the Secret (it is watching it already).
        await gemini.patch(NAME, {"spec": checks})
        first = await gemini.wait_for(NAME, _verified_since(None), timeout=20)
        assert "with the current signing secret" in condition(first, "DeliveryVerified")["message"]
        state = running.metrics.webhooks.record("default", NAME)
        assert state is not None and state.delivery_verified is True

        original = await gemini.signing_secrets(NAME)
        assert original is not None

        # A rotation counts only once a ping signed after it verified with the new secret.
        first_sent = _sent_at(condition(first, "DeliveryVerified"))
        await asyncio.sleep(1.1)  # the condition tells times in whole seconds
        await gemini.patch(NAME, {"metadata": {"annotations": {"gemini.webhooks.dev/rotate": "1"}}})
        rotated = await gemini.wait_for(
            NAME, lambda o: o["status"].get("lastRotationReason") == "RequestedByAnnotation"
        )
        rotated_at = parse_rfc3339(rotated["status"]["lastRotationTime"])
        assert rotated_at is not None and rotated_at > first_sent
        # The health timer's next tick no longer claims the old verdict: it says the
        # rotation is unverified until its ping after the rotation verifies.
        await gemini.wait_for(
            NAME,
            lambda o: (
                condition(o, "DeliveryVerified")["reason"] == "RotationNotYetVerified"
                or _verified_since(rotated_at)(o)
            ),
        )
        after = await gemini.wait_for(NAME, _verified_since(rotated_at), timeout=20)
        exposition = generate_latest(running.metrics.registry).decode()
        await asyncio.sleep(1.1)

    # The operator keeps when it last pinged in memory only: a restart (or a new leader)
    # pings again at its first tick, although the 1 h interval has not passed. That ping
    # verifies, as the last one did: the condition says so already, and is not written
    # again (a healthy resource's periodic pings cost no write).
    async with operator_running(kube, health_tick=0.5, health_retry=1.0) as restarted:
        await _verified_pings(restarted.metrics, at_least=1, timeout=20)
        await asyncio.sleep(1.0)  # what the tick would write, given time to land
        again = await gemini.get(NAME)
    assert again is not None
    assert condition(again, "DeliveryVerified") == condition(after, "DeliveryVerified")

    # Pings, verdicts and the receiver's own logs carry no secret (scanned).
    held = await gemini.signing_secrets(NAME)
    assert held is not None
    secrets = {s.secret for s in (*original.secrets, *held.secrets)}
    assert len(secrets) == 2
    haystack = "\n".join(
        [
            *(r.getMessage() + (r.exc_text or "") for r in caplog.records),
            json.dumps(await gemini.events()),
            json.dumps(again["status"]),
            exposition,
        ]
    )
    for value in (*secrets, emulator.api_key):
        assert value not in haystack
