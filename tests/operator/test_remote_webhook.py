"""The external client on its own, against the emulator: observing only reads (duplicates
are reported for the reconciler to delete and report), and deleting removes the known
webhook and every one carrying the resource's marker."""

from __future__ import annotations

from typing import Any

from gemini_webhook_operator.metrics import OperatorMetrics
from gemini_webhook_operator.model import parse
from gemini_webhook_operator.remote_webhook import RemoteClient
from gemini_webhook_operator.webhookservice import WebhookService
from tests.operator.harness import resource

UID = "0b6e1f0a-6a57-4b43-9d3a-5f1d2c3b4a59"


def _spec(emulator: Any) -> Any:
    body = resource("w", "https://x.example.com/", emulator.base_url)
    body["metadata"]["uid"] = UID
    return parse(body)


async def test_observe_finds_by_marker_and_reports_duplicates_without_deleting(
    emulator: Any,
) -> None:
    spec = _spec(emulator)
    client = emulator.client()
    ids = sorted(
        client.webhooks.create(
            name=spec.remote_name, uri="https://x.example.com/", subscribed_events=["batch.failed"]
        ).id
        for _ in range(3)
    )
    other = client.webhooks.create(
        name="someone else's", uri="https://y.example.com/", subscribed_events=["batch.failed"]
    )
    remote = RemoteClient(
        WebhookService(emulator.api_key, emulator.base_url, metrics=OperatorMetrics())
    )
    try:
        seen = await remote.observe(spec, (None, None), max_age=0)
        assert seen.remote is not None and seen.remote.id == ids[0]
        assert seen.found_by_marker and seen.duplicates == tuple(ids[1:])
        assert len(client.webhooks.list().webhooks) == 4  # observing deleted nothing

        by_id = await remote.observe(spec, (None, ids[2]), max_age=0)
        assert by_id.remote is not None and by_id.remote.id == ids[2]
        assert not by_id.found_by_marker and by_id.duplicates == ()

        await remote.delete(UID, other.id, max_age=0)
        assert client.webhooks.list().webhooks in (None, [])
    finally:
        await remote.service.close()
