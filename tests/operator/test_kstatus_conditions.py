"""kstatus's `Reconciling` and `Stalled` (abnormal-true), derived purely from `Ready` and
`Synced`, and written with `observedGeneration` in the reconciler's one apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gemini_webhook_operator.conditions import (
    MANAGER_HEALTH,
    MANAGER_RECONCILER,
    condition,
    set_condition,
    status_applies,
    with_progress,
)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _set(conds: list[dict[str, Any]], type_: str, status: bool | None, reason: str) -> Any:
    return set_condition(conds, type_, status, reason, reason.lower(), generation=1, now=T0)


def _types(conds: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conds}


READY = _set(_set([], "Ready", True, "WebhookReady"), "Synced", True, "ReconcileSuccess")


def test_ready_and_synced_carry_neither() -> None:
    assert _types(with_progress(READY, stalled=False, generation=1, now=T0)) == {
        "Ready": ("True", "WebhookReady"),
        "Synced": ("True", "ReconcileSuccess"),
    }


def test_a_retried_failure_is_reconciling_with_synceds_reason() -> None:
    failing = _set(READY, "Synced", False, "RemoteUnavailable")  # Ready kept True
    shown = with_progress(failing, stalled=False, generation=1, now=T0)
    assert condition(shown, "Reconciling") == {
        "type": "Reconciling",
        "status": "True",
        "reason": "RemoteUnavailable",
        "message": "remoteunavailable",
        "lastTransitionTime": "2026-05-01T12:00:00Z",
        "observedGeneration": 1,
    }
    assert condition(shown, "Stalled") is None


def test_a_permanent_failure_is_stalled_and_no_longer_reconciling() -> None:
    converging = with_progress(
        _set(READY, "Synced", False, "RemoteUnavailable"), stalled=False, generation=1, now=T0
    )
    invalid = _set(_set(converging, "Synced", False, "InvalidSpec"), "Ready", False, "InvalidSpec")
    shown = _types(with_progress(invalid, stalled=True, generation=2, now=T0))
    assert shown["Stalled"] == ("True", "InvalidSpec")
    assert "Reconciling" not in shown


def test_ready_not_true_with_synced_true_names_readys_reason() -> None:
    disabled = _set(READY, "Ready", False, "DisabledDueToFailedDeliveries")
    shown = _types(with_progress(disabled, stalled=True, generation=1, now=T0))
    assert shown["Stalled"] == ("True", "DisabledDueToFailedDeliveries")
    pending = _set(READY, "Ready", False, "RemoteStateDiffers")
    assert _types(with_progress(pending, stalled=False, generation=1, now=T0))["Reconciling"] == (
        "True",
        "RemoteStateDiffers",
    )


def test_reconciling_keeps_its_transition_time_while_it_lasts_and_goes_when_done() -> None:
    failing = _set(READY, "Synced", False, "RemoteUnavailable")
    first = with_progress(failing, stalled=False, generation=1, now=T0)
    later = with_progress(
        _set(first, "Synced", False, "QuotaExceeded"),
        stalled=False,
        generation=1,
        now=T0 + timedelta(minutes=3),
    )
    reconciling = condition(later, "Reconciling")
    assert reconciling is not None and reconciling["reason"] == "QuotaExceeded"
    assert reconciling["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    healed = _set(later, "Synced", True, "ReconcileSuccess")
    done = with_progress(healed, stalled=False, generation=1, now=T0)
    assert condition(done, "Reconciling") is None


def test_observed_generation_rides_on_the_reconcilers_apply_only() -> None:
    status = {"observedGeneration": 1, "conditions": READY}
    moved = [dict(c, observedGeneration=2) for c in READY]
    ((manager, payload),) = status_applies(status, moved, observed_generation=2)
    assert manager == MANAGER_RECONCILER
    assert payload == {"conditions": moved, "observedGeneration": 2}
    verified = _set(READY, "DeliveryVerified", True, "PingVerified")
    ((manager, payload),) = status_applies(status, verified)
    assert manager == MANAGER_HEALTH
    assert payload == {"conditions": [condition(verified, "DeliveryVerified")]}


def test_a_generation_behind_is_applied_even_when_the_conditions_are_unchanged() -> None:
    status = {"observedGeneration": 1, "conditions": READY}
    assert status_applies(status, READY, observed_generation=1) == []
    ((manager, payload),) = status_applies(status, READY, observed_generation=3)
    assert manager == MANAGER_RECONCILER
    assert payload["observedGeneration"] == 3


FIELDS = {
    "webhookId": "w1",
    "url": "https://a.example.com/",
    "nextRotationTime": "2026-06-01T00:00:00Z",
}


def test_the_reconcilers_fields_conditions_and_generation_are_one_apply() -> None:
    status = {"observedGeneration": 1, "conditions": READY}
    moved = [dict(c, observedGeneration=2) for c in READY]
    ((manager, payload),) = status_applies(status, moved, observed_generation=2, fields=FIELDS)
    assert manager == MANAGER_RECONCILER
    assert payload == {"conditions": moved, "observedGeneration": 2, **FIELDS}


def test_a_changed_field_alone_is_applied_with_the_whole_intent_and_an_unchanged_one_not() -> None:
    status = {"observedGeneration": 1, "conditions": READY, "lastPing": {"request": "1"}, **FIELDS}
    assert status_applies(status, READY, observed_generation=1, fields=FIELDS) == []
    later = dict(FIELDS, url="https://b.example.com/", nextRotationTime=None)
    ((manager, payload),) = status_applies(status, READY, observed_generation=1, fields=later)
    assert manager == MANAGER_RECONCILER
    # An apply states the whole intent: the shown fields stay, None leaves the field out (the
    # API server removes it), and the ping answer is not the reconciler's.
    assert payload == {
        "conditions": READY,
        "observedGeneration": 1,
        "webhookId": "w1",
        "url": "https://b.example.com/",
    }


def test_a_failure_without_fields_keeps_the_shown_ones() -> None:
    status = {"observedGeneration": 1, "conditions": READY, **FIELDS}
    failed = _set(READY, "Synced", False, "RemoteUnavailable")
    ((manager, payload),) = status_applies(status, failed, observed_generation=1, fields={})
    assert manager == MANAGER_RECONCILER
    assert {k: payload[k] for k in FIELDS} == FIELDS
