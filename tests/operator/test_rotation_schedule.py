"""Rotation on schedule across 30 simulated days (an injectable clock, `FakeClock`): each
rotation happens when due, the previous secret stays through its 24 h grace and then
leaves the Secret, and every delivery on the way verifies with the Secret's contents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks

from tests.operator.harness import (
    Cluster,
    FakeClock,
    Reconciliations,
    is_ready,
    operator_running,
    patch_reconciled,
    resource,
)

TICK = "test.gemini.webhooks.dev/tick"


def _verifies_with_some(held: Any, request: Any) -> bool:
    headers = {k.lower(): v for k, v in request.headers.items()}
    for secret in held.secrets:
        try:
            standardwebhooks.Webhook(secret.secret).verify(request.body, headers)
            return True
        except standardwebhooks.WebhookVerificationError:
            continue
    return False


@pytest.mark.parametrize(
    "policy",
    [{"interval": "168h"}, {"schedule": "0 0 * * 4"}],  # 2026-01-01 is a Thursday
    ids=["interval", "cron-schedule"],
)
async def test_weekly_rotation_for_30_days_with_grace_and_no_verification_gap(
    policy: dict[str, str], gemini: Cluster, emulator: Any, kube: Any
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = FakeClock(start)
    emulator.emulator.service_clock = clock  # the grace Gemini reports runs on the same days
    endpoint = emulator.endpoint()
    body = resource(
        "weekly",
        endpoint.url,
        emulator.base_url,
        rotation={**policy, "revocation": "Grace"},
    )
    rotations: list[datetime] = []
    reconciled = Reconciliations()
    async with operator_running(kube, clock=clock, drift_interval=3600, tracer=reconciled.tracer):
        await gemini.apply(body)
        await gemini.wait_for("weekly", is_ready)
        await reconciled.past("weekly", 0)  # its creation, counted
        for step in range(1, 61):  # 60 steps of 12 hours = 30 days
            clock.advance(timedelta(hours=12))
            tick = {"metadata": {"annotations": {TICK: str(step)}}}
            obj = await patch_reconciled(gemini, reconciled, "weekly", tick)
            last = datetime.fromisoformat(obj["status"]["lastRotationTime"].replace("Z", "+00:00"))
            if last > start and (not rotations or last != rotations[-1]):
                rotations.append(last)
                assert obj["status"]["lastRotationReason"] == "DueByPolicy"
            held = await gemini.signing_secrets("weekly")
            assert held is not None and held.current is not None
            since_rotation = clock.now() - (rotations[-1] if rotations else start)
            if rotations and since_rotation < timedelta(hours=24):
                assert len(held.secrets) == 2, f"grace secret missing at step {step}"
                assert held.secrets[1].expire_time == rotations[-1] + timedelta(hours=24)
            else:
                assert len(held.secrets) == 1, f"expired secret kept at step {step}"
            emulator.fire("batch.succeeded")
            requests = endpoint.wait_for(step)
            assert _verifies_with_some(held, requests[-1]), f"verification gap at step {step}"
    assert rotations == [start + timedelta(days=7 * n) for n in range(1, 5)]
