"""Conditions per the Kubernetes API conventions: type, status, reason, message,
observedGeneration, and a lastTransitionTime that moves only when the status does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gemini_webhook_operator.conditions import condition, set_condition

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_a_new_condition_carries_every_convention_field() -> None:
    (ready,) = set_condition([], "Ready", True, "WebhookReady", "ok", generation=3, now=T0)
    assert ready == {
        "type": "Ready",
        "status": "True",
        "reason": "WebhookReady",
        "message": "ok",
        "lastTransitionTime": "2026-05-01T12:00:00Z",
        "observedGeneration": 3,
    }


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = set_condition([], "Synced", False, "QuotaExceeded", "a", generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    same = set_condition(first, "Synced", False, "RemoteUnavailable", "b", generation=2, now=later)
    assert condition(same, "Synced") == {
        "type": "Synced",
        "status": "False",
        "reason": "RemoteUnavailable",
        "message": "b",
        "lastTransitionTime": "2026-05-01T12:00:00Z",
        "observedGeneration": 2,
    }
    flipped = set_condition(same, "Synced", True, "ReconcileSuccess", "c", generation=2, now=later)
    assert condition(flipped, "Synced")["lastTransitionTime"] == "2026-05-01T12:05:00Z"


def test_unknown_status_and_other_conditions_kept_in_a_stable_order() -> None:
    both = set_condition([], "Synced", True, "ReconcileSuccess", "", generation=1, now=T0)
    both = set_condition(both, "DeliveryVerified", None, "Waiting", "", generation=1, now=T0)
    both = set_condition(both, "Ready", False, "SecretMissing", "", generation=1, now=T0)
    assert [c["type"] for c in both] == ["DeliveryVerified", "Ready", "Synced"]
    assert condition(both, "DeliveryVerified")["status"] == "Unknown"  # type: ignore[index]
