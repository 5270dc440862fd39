"""No signing secret and no API key in any log line, Event, status or metric — asserted by
scanning everything a create/rotate/deliver/delete cycle produced."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from prometheus_client import generate_latest

from gemini_webhook_operator.metrics import OperatorMetrics
from tests.operator.harness import Cluster, is_ready, operator_running, resource


async def test_secrets_never_reach_logs_events_status_or_metrics(
    gemini: Cluster, emulator: Any, kube: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    metrics = OperatorMetrics()
    endpoint = emulator.endpoint()
    seen: set[str] = set()
    statuses: list[dict[str, Any]] = []
    async with operator_running(kube, metrics=metrics, drift_interval=0.5):
        await gemini.apply(resource("quiet", endpoint.url, emulator.base_url))
        statuses.append(await gemini.wait_for("quiet", is_ready))
        held = await gemini.signing_secrets("quiet")
        assert held is not None
        seen.update(s.secret for s in held.secrets)
        await gemini.patch(
            "quiet", {"metadata": {"annotations": {"gemini.webhooks.dev/rotate": "1"}}}
        )
        statuses.append(
            await gemini.wait_for(
                "quiet", lambda o: o["status"].get("lastRotationReason") == "RequestedByAnnotation"
            )
        )
        held = await gemini.signing_secrets("quiet")
        assert held is not None
        seen.update(s.secret for s in held.secrets)
        emulator.fire("batch.succeeded")
        endpoint.wait_for(1)
        events = await gemini.events()
        await gemini.delete("quiet")
        await gemini.wait_gone("quiet")
    assert len(seen) == 2
    forbidden = [*seen, emulator.api_key]
    haystacks = {
        "logs": "\n".join(
            record.getMessage() + (record.exc_text or "") for record in caplog.records
        ),
        "events": json.dumps(events),
        "status": json.dumps([s.get("status") for s in statuses]),
        "metrics": generate_latest(metrics.registry).decode(),
    }
    assert haystacks["logs"] and haystacks["events"] and haystacks["metrics"]
    for where, text in haystacks.items():
        for value in forbidden:
            assert value not in text, f"a secret leaked into {where}"
