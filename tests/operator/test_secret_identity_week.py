"""Secret identity as the real API might report it (issue 12, point 3): for each way the
emulator can show `signing_secrets` (other visible lengths, too short to tell, fully
masked, an empty list, no field), a simulated week with a 72-hour rotation interval has
exactly the two scheduled rotations — no healing rotation — the previous secret leaves
the Secret when the grace Gemini reports ends, and every delivery verifies. The operator's
FakeClock also drives the emulator's WebhookService time (its grace expiries)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks

from gemini_webhooks.contracts import crd
from tests.operator.harness import (
    Cluster,
    FakeClock,
    Reconciliations,
    condition,
    is_ready,
    operator_running,
    patch_reconciled,
)
from tests.operator.harness import resource as webhook_resource

TICK = "test.gemini.webhooks.dev/tick"

# (mode, head, tail) -> the reason Ready gives while the list cannot identify our secret
MODES: dict[str, tuple[str, int, int, str]] = {
    "truncated-4-4": ("truncated", 4, 4, "WebhookReady"),
    "truncated-8-0": ("truncated", 8, 0, "WebhookReady"),
    "truncated-0-8": ("truncated", 0, 8, "WebhookReady"),
    "truncated-12-12": ("truncated", 12, 12, "WebhookReady"),
    "truncated-2-2": ("truncated", 2, 2, "RemoteSecretsUnreadable"),
    "masked": ("masked", 4, 4, "RemoteSecretsUnreadable"),
    "empty": ("empty", 4, 4, "RemoteSecretsNotReported"),
    "absent": ("absent", 4, 4, "RemoteSecretsNotReported"),
}


def _verifies(held: Any, request: Any) -> bool:
    headers = {k.lower(): v for k, v in request.headers.items()}
    for secret in held.secrets:
        try:
            standardwebhooks.Webhook(secret.secret).verify(request.body, headers)
            return True
        except standardwebhooks.WebhookVerificationError:
            continue
    return False


async def _tick(
    gemini: Cluster, reconciled: Reconciliations, name: str, step: int
) -> dict[str, Any]:
    return await patch_reconciled(
        gemini, reconciled, name, {"metadata": {"annotations": {TICK: str(step)}}}
    )


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_a_simulated_week_has_only_the_scheduled_rotations(
    mode: tuple[str, int, int, str], gemini: Cluster, emulator: Any, kube: Any
) -> None:
    reporting, head, tail, ready_reason = mode
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = FakeClock(start)
    emulator.emulator.service_clock = clock
    emulator.control.set_secret_reporting(reporting, head=head, tail=tail)
    endpoint = emulator.endpoint()
    body = webhook_resource(
        "week", endpoint.url, emulator.base_url, rotation={"interval": "72h", "revocation": "Grace"}
    )
    reconciled = Reconciliations()
    async with operator_running(
        kube, clock=clock, drift_interval=3600, tracer=reconciled.tracer
    ) as running:
        await gemini.apply(body)
        await gemini.wait_for("week", is_ready)
        await reconciled.past("week", 0)  # its creation, counted
        for step in range(1, 15):  # 14 steps of 12 hours = 7 days
            clock.advance(timedelta(hours=12))
            obj = await _tick(gemini, reconciled, "week", step)
            ready = condition(obj, "Ready")
            assert ready["status"] == "True", f"step {step}: {ready}"
            held = await gemini.signing_secrets("week")
            assert held is not None and held.current is not None
            last = datetime.fromisoformat(obj["status"]["lastRotationTime"].replace("Z", "+00:00"))
            if last > start and clock.now() - last < timedelta(hours=24):
                assert len(held.secrets) == 2, f"grace secret missing at step {step}"
                assert held.secrets[1].expire_time == last + timedelta(hours=24)
            else:
                assert len(held.secrets) == 1, f"expired secret kept at step {step}"
                assert ready["reason"] == ready_reason, f"step {step}: {ready}"
            emulator.fire("batch.succeeded")
            requests = endpoint.wait_for(step)
            assert _verifies(held, requests[-1]), f"verification gap at step {step}"
        rotations = running.metrics.rotations
        assert rotations.labels("DueByPolicy")._value.get() == 2
        for reason in ("SecretMissing", "SecretUnknownToRemote"):
            assert rotations.labels(reason)._value.get() == 0
            assert running.metrics.heals.labels(reason)._value.get() == 0
        holds = running.metrics.heal_holds.labels(ready_reason)._value.get()
        assert (holds > 0) == (ready_reason != "WebhookReady")
    assert obj["status"]["lastRotationTime"] == "2026-01-07T00:00:00Z"


@pytest.mark.emulator_config(secret_grace=timedelta(hours=6))
async def test_the_previous_secret_leaves_when_the_grace_gemini_reports_ends(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = FakeClock(start)
    emulator.emulator.service_clock = clock
    endpoint = emulator.endpoint()
    body = webhook_resource("short", endpoint.url, emulator.base_url, rotation={"interval": "720h"})
    reconciled = Reconciliations()
    async with operator_running(kube, clock=clock, drift_interval=3600, tracer=reconciled.tracer):
        await gemini.apply(body)
        await gemini.wait_for("short", is_ready)
        await reconciled.past("short", 0)  # its creation, counted
        clock.advance(timedelta(hours=1))
        before = reconciled.of("short")
        await gemini.patch("short", {"metadata": {"annotations": {crd.ANNOTATION_ROTATE: "now"}}})
        # The request, then its annotation's removal (a change too): both reconciled before
        # a tick, so that a tick's reconciliation is the one counted.
        await reconciled.past("short", before + 1)
        rotated = await gemini.get("short")
        assert rotated is not None
        assert rotated["status"].get("lastRotationReason") == "RequestedByAnnotation"
        held = await gemini.signing_secrets("short")
        assert held is not None and len(held.secrets) == 2
        rotated_at = clock.now()
        assert held.secrets[1].expire_time == rotated_at + timedelta(hours=6)  # not 24 h
        clock.advance(timedelta(hours=5, minutes=59))
        await _tick(gemini, reconciled, "short", 1)
        held = await gemini.signing_secrets("short")
        assert held is not None and len(held.secrets) == 2
        clock.advance(timedelta(minutes=1))
        await _tick(gemini, reconciled, "short", 2)
        held = await gemini.signing_secrets("short")
        assert held is not None and len(held.secrets) == 1
