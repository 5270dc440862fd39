"""Events about our resources carry the operator's name — `From:` in `kubectl describe`,
`reportingController`/`reportingComponent` and `source.component` — not kopf's."""

from __future__ import annotations

from typing import Any

from gemini_webhooks.contracts.signing_secret import MANAGED_BY
from tests.operator.harness import Cluster, is_ready, kubectl, operator_running, resource


async def test_events_about_a_webhook_say_they_come_from_the_operator(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    name = "event-source"
    async with operator_running(kube):
        await gemini.apply(resource(name, emulator.endpoint().url, emulator.base_url))
        await gemini.wait_for(name, is_ready, timeout=60)
        event = await gemini.wait_event(name, {"Created"}, timeout=30)
        described = kubectl(kube, "describe", "geminiwebhook", name)
    assert event["reportingComponent"] == MANAGED_BY
    assert event["source"]["component"] == MANAGED_BY
    assert event["reportingInstance"] not in ("", "dev")  # this replica's identity
    assert event["metadata"]["name"].startswith(f"{MANAGED_BY}-")
    # kubectl describe's Events table: Type, Reason, Age, From, Message.
    table = described.rsplit("Events:", 1)[1]
    (row,) = [line.split() for line in table.splitlines() if " Created " in line]
    assert row[3] == MANAGED_BY, table
