"""A signature matching no loaded secret, right after deliveries verified and before any
reload, is answered 503 `secret_reload_pending` (Gemini retries): the pure rule, then a
receiver. Only evidence an unauthenticated request cannot produce opens it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gemini_webhook_receiver import reasons
from gemini_webhook_receiver.static import ReloadEvidence, has_candidates, unknown_signature

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
    evidence = ReloadEvidence(last_verified=99.0)
    assert unknown_signature(evidence, 100.0, 0) is BAD
    assert unknown_signature(evidence, 100.0, -1) is BAD


def test_nothing_verified_is_bad_signature() -> None:
    """A receiver that never verified anything has no reason to suspect a rotation."""
    assert unknown_signature(ReloadEvidence(), 100.0, HOLD) is BAD


def test_verified_long_ago_is_bad_signature() -> None:
    assert unknown_signature(ReloadEvidence(last_verified=100.0 - HOLD), 100.0, HOLD) is BAD


def test_verified_recently_without_a_reload_since_is_pending() -> None:
    assert unknown_signature(ReloadEvidence(last_verified=90.0), 100.0, HOLD) is PENDING
    earlier_reload = ReloadEvidence(last_verified=90.0, last_reload=80.0)
    assert unknown_signature(earlier_reload, 100.0, HOLD) is PENDING


def test_a_reload_after_the_last_verification_ends_the_window() -> None:
    """The reload a rotation would explain has come; the new secret does not match either."""
    reloaded = ReloadEvidence(last_verified=90.0, last_reload=95.0)
    assert unknown_signature(reloaded, 100.0, HOLD) is BAD
    at_once = ReloadEvidence(last_verified=90.0, last_reload=90.0)
    assert unknown_signature(at_once, 100.0, HOLD) is BAD


def test_the_answer_depends_only_on_evidence_a_forgery_cannot_change() -> None:
    """No state is returned: however many unknown signatures came before, the next one in
    the same evidence gets the same answer, so forgeries cannot spend a window in advance."""
    evidence = ReloadEvidence(last_verified=90.0)
    answers = {unknown_signature(evidence, 90.0 + t, HOLD) for t in range(1, 60)}
    assert answers == {PENDING}


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


async def test_forgeries_neither_open_nor_spend_the_window(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, old = secrets_file
    config = base_config(target.url, path, replay={"reload_pending_seconds": 1})
    client = await start_receiver(config)
    forged = new_secret()
    # Before anything verified, a forgery is a forgery, and opens nothing.
    assert (await client.deliver([forged]))[1]["error"] == "bad_signature"
    assert (await client.deliver([old]))[0] == 200
    for _ in range(5):  # forgeries right after a verified delivery
        assert (await client.deliver([forged]))[0] == 503
    await asyncio.sleep(1.1)
    status, answer, _ = await client.deliver([forged])
    assert (status, answer["error"]) == (401, "bad_signature")  # the window is bounded
    # A genuine rotation later still gets its window: the forgeries spent nothing.
    assert (await client.deliver([old]))[0] == 200
    new = new_secret()
    status, answer, msg_id = await client.deliver([new])
    assert (status, answer["error"]) == (503, "secret_reload_pending")
    write_secrets(path, new)
    await asyncio.sleep(0.6)
    assert (await client.deliver([new], msg_id=msg_id))[0] == 200


async def test_after_the_reload_an_unknown_signature_is_bad_signature(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, old = secrets_file
    client = await start_receiver(base_config(target.url, path))
    assert (await client.deliver([old]))[0] == 200
    write_secrets(path, new_secret())  # the rotation's secret arrived; `old` is revoked
    await asyncio.sleep(0.6)
    status, answer, _ = await client.deliver([new_secret()])
    assert (status, answer["error"]) == (401, "bad_signature")


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
