"""Transitions of the signing-secret set: grace keeps the previous secret, expiry drops it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gemini_webhook_operator import signing
from gemini_webhooks.contracts.signing_secret import truncate_secret

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
OLD = "whsec_" + "o" * 32
NEW = "whsec_" + "n" * 32


def test_grace_rotation_keeps_the_previous_secret_for_24_hours() -> None:
    held = signing.fresh("wh1", OLD, NOW - timedelta(days=30))
    after = signing.rotated(
        held, "wh1", NEW, NOW, immediate=False, remote_truncated=(truncate_secret(OLD),)
    )
    assert [s.secret for s in after.secrets] == [NEW, OLD]
    assert after.secrets[1].expire_time == NOW + timedelta(hours=24)
    assert after.current is not None and after.current.expire_time is None


def test_immediate_rotation_keeps_only_the_new_secret() -> None:
    held = signing.fresh("wh1", OLD, NOW)
    after = signing.rotated(held, "wh1", NEW, NOW, immediate=True, remote_truncated=())
    assert [s.secret for s in after.secrets] == [NEW]


def test_rotation_drops_a_held_secret_the_remote_does_not_know() -> None:
    held = signing.fresh("wh1", OLD, NOW)
    after = signing.rotated(held, "wh1", NEW, NOW, immediate=False, remote_truncated=())
    assert [s.secret for s in after.secrets] == [NEW]


def test_expired_previous_secret_is_pruned() -> None:
    held = signing.rotated(
        signing.fresh("wh1", OLD, NOW),
        "wh1",
        NEW,
        NOW,
        immediate=False,
        remote_truncated=(truncate_secret(OLD),),
    )
    assert signing.pruned(held, NOW + timedelta(hours=23), None) is None
    later = signing.pruned(held, NOW + timedelta(hours=24), None)
    assert later is not None and [s.secret for s in later.secrets] == [NEW]


def test_pruning_never_removes_the_newest_secret() -> None:
    held = signing.fresh("wh1", NEW, NOW)
    assert signing.pruned(held, NOW + timedelta(days=400), ()) is None


def test_revocation_behaviours_use_the_sdk_spelling() -> None:
    assert signing.revocation_behavior(False) == "revoke_previous_secrets_after_h24"
    assert signing.revocation_behavior(True) == "revoke_previous_secrets_immediately"
