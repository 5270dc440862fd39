"""End-to-end health: the pure decisions (when to ping, what the receiver's answer means)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gemini_webhook_operator import conditions, health, health_checker
from gemini_webhook_operator.health import (
    HealthMemo,
    PingObservation,
    blocked_reason,
    judge,
    parse_pings,
    ping_reason,
    rotation_complete,
)
from tests.operator.receiver_rendering import PARSEABLE, parsed

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
INTERVAL = timedelta(minutes=10)
RETRY = timedelta(minutes=1)
CURRENT = "whsec_abcd...wxyz"
PREVIOUS = "whsec_0000...9999"


def reason(memo: HealthMemo, now: datetime, last_rotation: datetime | None = None) -> str | None:
    return ping_reason(
        memo, interval=INTERVAL, retry_after=RETRY, last_rotation=last_rotation, now=now
    )


def test_first_tick_pings() -> None:
    assert reason(HealthMemo(), T0) == health.PING_FIRST


def test_verified_ping_is_not_repeated_before_the_interval() -> None:
    memo = HealthMemo(last_sent_at=T0, last_verified_sent_at=T0)
    assert reason(memo, T0 + INTERVAL - timedelta(seconds=1)) is None


def test_ping_repeats_once_the_interval_has_passed() -> None:
    memo = HealthMemo(last_sent_at=T0, last_verified_sent_at=T0)
    assert reason(memo, T0 + INTERVAL) == health.PING_PERIODIC


def test_a_rotation_after_the_last_ping_triggers_one_at_once() -> None:
    memo = HealthMemo(last_sent_at=T0, last_verified_sent_at=T0)
    rotated = T0 + timedelta(seconds=5)
    assert reason(memo, rotated + timedelta(seconds=1), rotated) == health.PING_AFTER_ROTATION


def test_after_rotation_comes_first_even_on_the_first_tick() -> None:
    assert reason(HealthMemo(), T0, T0 - timedelta(days=3)) == health.PING_AFTER_ROTATION


def test_an_unverified_check_is_retried_sooner_than_the_interval() -> None:
    memo = HealthMemo(last_sent_at=T0, last_verified_sent_at=None)
    assert reason(memo, T0 + RETRY - timedelta(seconds=1)) is None
    assert reason(memo, T0 + RETRY) == health.PING_RETRY


def test_rotation_is_complete_only_after_a_later_ping_verified() -> None:
    rotated = T0 + timedelta(minutes=1)
    assert not rotation_complete(HealthMemo(last_verified_sent_at=T0), rotated)
    assert rotation_complete(HealthMemo(last_verified_sent_at=rotated), rotated)
    assert not rotation_complete(HealthMemo(), rotated)
    assert rotation_complete(HealthMemo(), None)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"health_enabled": False}, health.REASON_DISABLED),
        ({"receiver_enabled": False}, health.REASON_NO_RECEIVER),
        ({"webhook_id": None}, health.REASON_NO_WEBHOOK),
        ({"remote_state": "disabled_due_to_failed_deliveries"}, health.REASON_NOT_ENABLED),
        ({"current_fingerprint": None}, health.REASON_NO_SECRET),
    ],
)
def test_a_check_that_cannot_run_says_why_as_unknown(kwargs: dict, expected: str) -> None:
    arguments = {
        "health_enabled": True,
        "receiver_enabled": True,
        "webhook_id": "wh_1",
        "remote_state": "enabled",
        "current_fingerprint": CURRENT,
    } | kwargs
    verdict = blocked_reason(**arguments)
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (None, expected)


def test_nothing_blocks_a_check_of_an_enabled_webhook_with_a_secret() -> None:
    assert (
        blocked_reason(
            health_enabled=True,
            receiver_enabled=True,
            webhook_id="wh_1",
            remote_state="enabled",
            current_fingerprint=CURRENT,
        )
        is None
    )


def decide(observation: PingObservation | None, now: datetime) -> health.Verdict | None:
    return judge(
        sent_at=T0,
        observation=observation,
        current_fingerprint=CURRENT,
        now=now,
        timeout=timedelta(seconds=30),
    )


def test_ping_verified_with_the_current_secret_is_true_with_its_round_trip() -> None:
    verdict = decide(PingObservation(T0 + timedelta(milliseconds=250), CURRENT), T0)
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (True, health.REASON_VERIFIED)
    assert verdict.round_trip == timedelta(milliseconds=250)


def test_ping_verified_only_with_a_previous_secret_is_false() -> None:
    verdict = decide(PingObservation(T0 + timedelta(seconds=1), PREVIOUS), T0)
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (False, health.REASON_PREVIOUS_SECRET)


def test_a_previous_secret_verdict_is_pinged_again_only_while_a_rotation_settles() -> None:
    previous = decide(PingObservation(T0 + timedelta(seconds=1), PREVIOUS), T0)
    current = decide(PingObservation(T0 + timedelta(seconds=1), CURRENT), T0)
    unheard = decide(None, T0 + timedelta(seconds=30))
    assert previous is not None and current is not None and unheard is not None
    settle = health.SECRET_SETTLE
    just_now = T0 - timedelta(seconds=1)
    assert health.still_settling(previous, last_rotation=just_now, now=T0)
    assert not health.still_settling(previous, last_rotation=T0 - settle, now=T0)
    assert not health.still_settling(previous, last_rotation=None, now=T0)
    for other in (current, unheard):
        assert not health.still_settling(other, last_rotation=just_now, now=T0)


def test_an_older_ping_does_not_count_and_we_keep_waiting() -> None:
    assert decide(PingObservation(T0 - timedelta(minutes=5), CURRENT), T0) is None


def test_no_ping_within_the_timeout_is_false() -> None:
    verdict = decide(None, T0 + timedelta(seconds=30))
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (False, health.REASON_NOT_RECEIVED)


def test_messages_never_carry_secret_fingerprints() -> None:
    for observation in (PingObservation(T0, CURRENT), PingObservation(T0, PREVIOUS)):
        verdict = decide(observation, T0)
        assert verdict is not None
        assert "whsec_" not in verdict.message


def _verified_at(sent_at: datetime) -> health.Verdict:
    verdict = judge(
        sent_at=sent_at,
        observation=PingObservation(sent_at + timedelta(seconds=0.2), CURRENT),
        current_fingerprint=CURRENT,
        now=sent_at + timedelta(seconds=1),
        timeout=timedelta(seconds=30),
    )
    assert verdict is not None and verdict.verified
    return verdict


def _condition(verdict: health.Verdict, generation: int) -> dict:
    [written] = conditions.set_condition(
        [],
        "DeliveryVerified",
        verdict.status,
        verdict.reason,
        verdict.message,
        generation=generation,
        now=T0,
    )
    return written


def test_a_periodic_ping_that_verifies_again_repeats_the_condition() -> None:
    shown = _condition(_verified_at(T0), generation=3)
    assert health.repeats(shown, _verified_at(T0 + INTERVAL), 3)


@pytest.mark.parametrize(
    "later",
    [
        health.Verdict(False, health.REASON_NOT_RECEIVED, "not received"),
        health.Verdict(None, health.REASON_ROTATION_UNVERIFIED, "rotated"),
        health.Verdict(None, health.REASON_RECEIVER_UNREACHABLE, "unreachable"),
    ],
)
def test_another_status_or_reason_does_not_repeat_the_condition(later: health.Verdict) -> None:
    assert not health.repeats(_condition(_verified_at(T0), generation=3), later, 3)


def test_a_verdict_at_a_new_generation_does_not_repeat_the_condition() -> None:
    shown = _condition(_verified_at(T0), generation=3)
    assert not health.repeats(shown, _verified_at(T0 + INTERVAL), 4)


def test_a_first_verdict_repeats_nothing() -> None:
    assert not health.repeats(None, _verified_at(T0), 1)


def test_receiver_ping_status_is_parsed_for_the_static_source() -> None:
    document = {
        "pings": {
            "static": {
                "source": "static",
                "webhook_id": "msg_1",
                "received_at": "2026-11-25T10:00:00.250000Z",
                "scheme": "hmac",
                "secret_index": 0,
                "secret_fingerprint": CURRENT,
            }
        }
    }
    assert parse_pings(document) == PingObservation(
        T0 + timedelta(milliseconds=250), CURRENT, "msg_1"
    )
    assert parse_pings({"pings": {}}) is None


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"pings": []},
        {"pings": {"static": "x"}},
        {"pings": {"static": {"received_at": "yesterday"}}},
        {"pings": {"static": {"received_at": "2026-11-25T10:00:00"}}},
        {"pings": {"static": {"received_at": "2026-11-25T10:00:00Z", "secret_fingerprint": 1}}},
    ],
)
def test_malformed_ping_status_is_a_clear_error(document: object) -> None:
    with pytest.raises(ValueError, match="ping status"):
        parse_pings(document)


def test_the_ping_seen_before_sending_is_not_taken_for_ours() -> None:
    before = PingObservation(T0 - timedelta(seconds=1), PREVIOUS, "msg_1")
    verdict = judge(
        sent_at=T0,
        observation=before,
        current_fingerprint=CURRENT,
        now=T0,
        timeout=timedelta(seconds=30),
        baseline=before,
    )
    assert verdict is None
    ours = PingObservation(T0 + timedelta(seconds=1), CURRENT, "msg_2")
    verdict = judge(
        sent_at=T0,
        observation=ours,
        current_fingerprint=CURRENT,
        now=T0,
        timeout=timedelta(seconds=30),
        baseline=before,
    )
    assert verdict is not None and verdict.verified


class RecordingPing:
    """Test double for the WebhookService ping: records calls, succeeds."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


def body(health_check: dict, remote_state: str = "enabled") -> dict:
    return {
        "metadata": {"name": "orders", "namespace": "team-a", "uid": "u1"},
        "spec": {**PARSEABLE, "healthCheck": health_check, "receiver": {"enabled": True}},
        "status": {"webhookId": "wh_1", "remoteState": remote_state},
    }


async def test_invalid_health_check_is_reported_without_pinging() -> None:
    ping = RecordingPing()
    checker = health_checker.HealthChecker()
    verdict = await checker.tick(
        *parsed(body({"enabled": True, "interval": "30s"})),
        HealthMemo(),
        ping=ping,
        current_fingerprint=CURRENT,
    )
    await checker.close()
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (None, health.REASON_INVALID)
    assert "spec.healthCheck" in verdict.message and ping.calls == 0


async def test_webhook_disabled_remotely_is_unknown_without_pinging() -> None:
    ping = RecordingPing()
    checker = health_checker.HealthChecker()
    verdict = await checker.tick(
        *parsed(body({"enabled": True}, remote_state="disabled_due_to_failed_deliveries")),
        HealthMemo(),
        ping=ping,
        current_fingerprint=CURRENT,
    )
    await checker.close()
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (None, health.REASON_NOT_ENABLED)
    assert ping.calls == 0


async def test_nothing_is_sent_between_intervals() -> None:
    ping = RecordingPing()
    now = datetime.now(UTC)
    checker = health_checker.HealthChecker()
    memo = HealthMemo(last_sent_at=now, last_verified_sent_at=now)
    verdict = await checker.tick(
        *parsed(body({"enabled": True})), memo, ping=ping, current_fingerprint=CURRENT
    )
    await checker.close()
    assert verdict is None and ping.calls == 0
