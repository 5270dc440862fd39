"""The rotation decision chain: each check, in order, naming its reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gemini_webhook_operator import rotation
from gemini_webhook_operator.model import RotationPolicy
from gemini_webhook_operator.rotation import Hold, Rotate, RotationInput, decide
from gemini_webhooks.contracts.signing_secret import (
    SigningSecret,
    SigningSecrets,
    truncate_secret,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SECRET = "whsec_" + "A" * 8 + "middlepart" + "Z" * 8


def _input(**changes: object) -> RotationInput:
    base: dict[str, object] = {
        "now": NOW,
        "policy": RotationPolicy(interval=timedelta(days=30)),
        "webhook_id": "wh1",
        "held": SigningSecrets("wh1", (SigningSecret(SECRET, NOW - timedelta(days=1)),)),
        "held_problem": None,
        "remote_truncated": (truncate_secret(SECRET),),
        "last_rotation": NOW - timedelta(days=1),
        "requested": None,
    }
    base.update(changes)
    return RotationInput(**base)  # type: ignore[arg-type]


def test_nothing_fires_before_the_interval_elapses() -> None:
    decision = decide(_input())
    assert isinstance(decision, Hold) and decision.reason == rotation.NOT_DUE
    assert decision.message == "next rotation at 2026-04-08T12:00:00Z"


def test_missing_secret_rotates_first() -> None:
    decision = decide(_input(held=None, held_problem="Secret not found", requested="x"))
    assert decision == Rotate(rotation.SECRET_MISSING, "Secret not found")


def test_secret_of_another_webhook_counts_as_missing() -> None:
    held = SigningSecrets("other", (SigningSecret(SECRET, NOW),))
    assert decide(_input(held=held)).reason == rotation.SECRET_MISSING


def test_secret_the_remote_no_longer_knows_rotates() -> None:
    decision = decide(_input(remote_truncated=("whsec_BBBB...YYYY",)))
    assert decision.reason == rotation.SECRET_UNKNOWN_TO_REMOTE


def test_annotation_requests_a_rotation_even_when_paused() -> None:
    policy = RotationPolicy(interval=timedelta(days=30), paused=True)
    decision = decide(_input(policy=policy, requested="now"))
    assert decision.reason == rotation.REQUESTED_BY_ANNOTATION


def test_paused_holds_a_due_rotation() -> None:
    policy = RotationPolicy(interval=timedelta(days=30), paused=True)
    decision = decide(_input(policy=policy, last_rotation=NOW - timedelta(days=31)))
    assert decision == Hold(rotation.PAUSED, decision.message)


def test_interval_elapsed_is_due() -> None:
    decision = decide(_input(last_rotation=NOW - timedelta(days=30)))
    assert isinstance(decision, Rotate) and decision.reason == rotation.DUE_BY_POLICY


def test_schedule_is_due_after_the_first_match_since_last_rotation() -> None:
    policy = RotationPolicy(schedule="0 3 1 * *")
    last = datetime(2026, 2, 15, tzinfo=UTC)
    assert rotation.next_rotation_time(policy, last) == datetime(2026, 3, 1, 3, tzinfo=UTC)
    assert decide(_input(policy=policy, last_rotation=last)).reason == rotation.DUE_BY_POLICY


def test_next_rotation_is_counted_from_the_last_rotation_so_restarts_never_repeat() -> None:
    policy = RotationPolicy(interval=timedelta(hours=720))
    last = NOW - timedelta(hours=100)
    assert rotation.next_rotation_time(policy, last) == last + timedelta(hours=720)


def test_no_policy_never_rotates_by_schedule() -> None:
    decision = decide(_input(policy=RotationPolicy(), last_rotation=NOW - timedelta(days=999)))
    assert isinstance(decision, Hold)


UNREADABLE_LISTS = {
    "absent-or-empty": (),
    "no-truncated-field": ("",),
    "fully-masked": ("whsec_********",),
    "too-short": ("whsec_AA...ZZ",),
    "other-prefix": ("AAAAAAAA...ZZZZZZZZ",),
}


@pytest.mark.parametrize("reported", UNREADABLE_LISTS.values(), ids=UNREADABLE_LISTS.keys())
def test_a_list_that_cannot_identify_the_secret_never_heals(reported: tuple[str, ...]) -> None:
    given = _input(remote_truncated=reported)
    decision = decide(given)
    assert isinstance(decision, Hold) and decision.reason == rotation.NOT_DUE
    note = rotation.held_heal(given, decision)
    assert note is not None and note.verified is None
    assert note.reason == (
        rotation.REMOTE_SECRETS_NOT_REPORTED if not reported else rotation.REMOTE_SECRETS_UNREADABLE
    )


def test_an_unreadable_list_still_lets_the_schedule_rotate() -> None:
    given = _input(remote_truncated=("whsec_********",), last_rotation=NOW - timedelta(days=30))
    decision = decide(given)
    assert decision.reason == rotation.DUE_BY_POLICY
    assert rotation.held_heal(given, decision) is None


def test_a_readable_list_that_knows_the_secret_holds_nothing_back() -> None:
    given = _input()
    assert rotation.held_heal(given, decide(given)) is None
    check = rotation.secret_check(given)
    assert check is not None and check.verified is True


def test_a_heal_within_the_interval_of_the_last_one_is_held() -> None:
    given = _input(
        remote_truncated=("whsec_BBBB...YYYY",),
        last_heal=NOW - timedelta(minutes=59),
        heal_interval=timedelta(hours=1),
    )
    decision = decide(given)
    assert isinstance(decision, Hold) and decision.reason == rotation.HEAL_RATE_LIMITED
    assert "the next is allowed at 2026-03-10T12:01:00Z" in decision.message
    note = rotation.held_heal(given, decision)
    assert note is not None and note.verified is False


def test_a_heal_after_the_interval_rotates() -> None:
    decision = decide(
        _input(remote_truncated=("whsec_BBBB...YYYY",), last_heal=NOW - timedelta(hours=1))
    )
    assert decision.reason == rotation.SECRET_UNKNOWN_TO_REMOTE


def test_a_rate_limited_missing_secret_is_still_regained_by_a_requested_rotation() -> None:
    given = _input(held=None, held_problem="Secret not found", requested="now", last_heal=NOW)
    assert decide(given).reason == rotation.REQUESTED_BY_ANNOTATION


def test_a_zero_heal_interval_turns_the_limit_off() -> None:
    given = _input(held=None, held_problem="gone", last_heal=NOW, heal_interval=timedelta(0))
    assert decide(given).reason == rotation.SECRET_MISSING
