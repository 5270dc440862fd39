"""A signature matching no loaded secret, right after deliveries verified, is answered 503
`secret_reload_pending` (Gemini retries) for a bounded time: the pure rule, then a receiver."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gemini_webhook_receiver import reasons
from gemini_webhook_receiver.static import ReloadSuspicion, has_candidates, unknown_signature

from .conftest import (
    RecordingTarget,
    StartReceiver,
    base_config,
    envelope,
    new_secret,
    signed_headers,
    write_secrets,
)

HOLD = 60.0
PENDING, BAD = reasons.SECRET_RELOAD_PENDING, reasons.BAD_SIGNATURE


def test_rule_off_is_always_bad_signature() -> None:
    state = ReloadSuspicion(last_verified=99.0)
    assert unknown_signature(state, 100.0, 0) == (BAD, state)
    assert unknown_signature(state, 100.0, -1) == (BAD, state)


def test_nothing_verified_is_bad_signature() -> None:
    """A receiver that never verified anything has no reason to suspect a rotation."""
    state = ReloadSuspicion()
    assert unknown_signature(state, 100.0, HOLD) == (BAD, state)


def test_verified_long_ago_is_bad_signature() -> None:
    state = ReloadSuspicion(last_verified=100.0 - HOLD)
    assert unknown_signature(state, 100.0, HOLD) == (BAD, state)


def test_verified_recently_opens_a_window() -> None:
    answer, state = unknown_signature(ReloadSuspicion(last_verified=90.0), 100.0, HOLD)
    assert answer is PENDING
    assert state == ReloadSuspicion(last_verified=90.0, opened=100.0)


def test_window_stays_open_until_hold_then_is_spent() -> None:
    state = ReloadSuspicion(last_verified=99.0, opened=100.0)
    assert unknown_signature(state, 100.0 + HOLD - 0.01, HOLD) == (PENDING, state)
    # Spent: 401 even though deliveries kept verifying meanwhile; the window never reopens
    # by itself — a forgery cannot keep Gemini retrying.
    later = ReloadSuspicion(last_verified=100.0 + HOLD, opened=100.0)
    assert unknown_signature(later, 100.0 + HOLD, HOLD) == (BAD, later)
    assert unknown_signature(later, 100.0 + 10 * HOLD, HOLD) == (BAD, later)


def test_a_reload_rearms_the_rule() -> None:
    spent = ReloadSuspicion(last_verified=300.0, last_reload=200.0, opened=100.0)
    answer, state = unknown_signature(spent, 301.0, HOLD)
    assert answer is PENDING
    assert state.opened == 301.0
    # A window opened at the reload's instant belongs to the new generation.
    same = ReloadSuspicion(last_verified=300.0, last_reload=200.0, opened=200.0)
    assert unknown_signature(same, 200.0 + HOLD, HOLD) == (BAD, same)


def test_a_rearmed_rule_still_needs_a_recent_verification() -> None:
    state = ReloadSuspicion(last_verified=100.0, last_reload=500.0, opened=90.0)
    assert unknown_signature(state, 501.0, HOLD) == (BAD, state)


def test_the_reason_is_retryable_and_closed() -> None:
    assert (PENDING.reason, PENDING.status) == ("secret_reload_pending", 503)
    assert "whsec_" not in PENDING.message


@pytest.mark.parametrize(
    ("header", "expected"),
    [("v1,abc", True), ("v2,abc v1,x", True), ("", False), ("v2,abc", False), ("v1", False)],
)
def test_has_candidates(header: str, expected: bool) -> None:
    assert has_candidates(header) is expected


# --- a receiver ----------------------------------------------------------------------


async def test_immediate_rotation_before_the_reload_gets_503_then_verifies(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, old = secrets_file
    client = await start_receiver(base_config(target.url, path))
    assert (await client.deliver([old]))[0] == 200
    new = new_secret()
    # Gemini switched to `new`; this replica has not reloaded yet.
    status, answer, msg_id = await client.deliver([new])
    assert (status, answer["error"]) == (503, "secret_reload_pending")
    counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="secret_reload_pending"
    )
    assert counted == 1
    write_secrets(path, new)  # revoked immediately
    await asyncio.sleep(0.6)
    status, _, _ = await client.deliver([new], msg_id=msg_id)  # Gemini's retry
    assert status == 200
    assert len(target.requests) == 2


async def test_unknown_signature_on_an_idle_receiver_is_bad_signature(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, _ = secrets_file
    client = await start_receiver(base_config(target.url, path))
    status, answer, _ = await client.deliver([new_secret()])
    assert (status, answer["error"]) == (401, "bad_signature")


async def test_the_window_is_bounded_and_rearmed_by_a_changed_secret(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, old = secrets_file
    config = base_config(target.url, path, replay={"reload_pending_seconds": 1})
    client = await start_receiver(config)
    assert (await client.deliver([old]))[0] == 200
    forged = new_secret()
    assert (await client.deliver([forged]))[0] == 503
    await asyncio.sleep(1.1)
    assert (await client.deliver([old]))[0] == 200
    status, answer, _ = await client.deliver([forged])
    assert (status, answer["error"]) == (401, "bad_signature")  # spent, though verifying
    new = new_secret()
    write_secrets(path, new, (old, None))  # a changed Secret: a new generation
    await asyncio.sleep(0.6)
    assert (await client.deliver([old]))[0] == 200
    assert (await client.deliver([forged]))[0] == 503


async def test_stale_timestamp_or_no_v1_signature_is_never_retryable(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, old = secrets_file
    client = await start_receiver(base_config(target.url, path))
    assert (await client.deliver([old]))[0] == 200
    status, answer, _ = await client.deliver([new_secret()], timestamp=int(time.time()) - 301)
    assert (status, answer["error"]) == (401, "bad_signature")
    body = json.dumps(envelope()).encode()
    headers = signed_headers([new_secret()], body)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
    status, answer = await client.post(body, headers)
    assert status in (400, 401) and answer["error"] != "secret_reload_pending"


async def test_rule_off_in_config(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, old = secrets_file
    client = await start_receiver(
        base_config(target.url, path, replay={"reload_pending_seconds": 0})
    )
    assert (await client.deliver([old]))[0] == 200
    status, answer, _ = await client.deliver([new_secret()])
    assert (status, answer["error"]) == (401, "bad_signature")


def test_reload_pending_seconds_is_bounded() -> None:
    from gemini_webhooks.contracts import receiver_config as rc

    base = base_config("http://127.0.0.1:1/", Path("/nonexistent"))
    for bad in (-1, 3601, "soon"):
        with pytest.raises(rc.ReceiverConfigError):
            rc.from_dict({**base, "replay": {"reload_pending_seconds": bad}})
    assert rc.from_dict(base).replay.reload_pending_seconds == 60
