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


def test_rotation_drops_a_held_secret_the_remote_provably_does_not_know() -> None:
    held = signing.fresh("wh1", OLD, NOW)
    stranger = (truncate_secret("whsec_" + "x" * 32),)
    after = signing.rotated(held, "wh1", NEW, NOW, immediate=False, remote_truncated=stranger)
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


MASKED = "whsec_********"


def test_a_rotation_keeps_the_previous_secret_when_the_remote_list_is_unreadable() -> None:
    held = signing.fresh("wh1", OLD, NOW)
    for reported in ((), (MASKED,), ("whsec_oo...oo",)):
        after = signing.rotated(held, "wh1", NEW, NOW, immediate=False, remote_truncated=reported)
        assert [s.secret for s in after.secrets] == [NEW, OLD], reported


def test_pruning_never_drops_a_previous_secret_an_unreadable_list_might_still_hold() -> None:
    held = signing.rotated(
        signing.fresh("wh1", OLD, NOW), "wh1", NEW, NOW, immediate=False, remote_truncated=()
    )
    assert signing.pruned(held, NOW + timedelta(hours=1), (MASKED, MASKED)) is None
    assert signing.pruned(held, NOW + timedelta(hours=1), ()) is None
    proven = signing.pruned(held, NOW + timedelta(hours=1), (truncate_secret(NEW),))
    assert proven is not None and [s.secret for s in proven.secrets] == [NEW]


def _rotated() -> signing.SigningSecrets:
    return signing.rotated(
        signing.fresh("wh1", OLD, NOW), "wh1", NEW, NOW, immediate=False, remote_truncated=()
    )


def test_the_previous_secret_expires_when_the_remote_says() -> None:
    reported_end = NOW + timedelta(hours=6)
    dated = signing.with_remote_expiries(
        _rotated(), (truncate_secret(NEW), truncate_secret(OLD)), (None, reported_end)
    )
    assert dated is not None and dated.secrets[1].expire_time == reported_end
    assert dated.current is not None and dated.current.expire_time is None
    assert signing.pruned(dated, reported_end - timedelta(seconds=1), None) is None
    gone = signing.pruned(dated, reported_end, None)
    assert gone is not None and [s.secret for s in gone.secrets] == [NEW]


def test_a_masked_list_still_gives_the_grace_end_it_reports() -> None:
    reported_end = NOW + timedelta(hours=30)
    dated = signing.with_remote_expiries(_rotated(), (MASKED, MASKED), (None, reported_end))
    assert dated is not None and dated.secrets[1].expire_time == reported_end


def test_without_a_reported_expiry_the_operators_own_24_hours_stand() -> None:
    held = _rotated()
    assert signing.with_remote_expiries(held, (), ()) is None
    assert signing.with_remote_expiries(held, (MASKED,), (None,)) is None
    assert held.secrets[1].expire_time == NOW + timedelta(hours=24)


def test_an_expiry_the_remote_already_reports_changes_nothing() -> None:
    held = _rotated()
    same = (None, NOW + timedelta(hours=24))
    assert (
        signing.with_remote_expiries(held, (truncate_secret(NEW), truncate_secret(OLD)), same)
        is None
    )


# -- merging over a concurrent write (signing.merged) -----------------------------------------

OTHER = "whsec_" + "t" * 32


def test_two_rotations_from_one_read_keep_both_new_secrets_newest_first() -> None:
    base = signing.fresh("wh1", OLD, NOW - timedelta(days=30))
    ours = signing.rotated(base, "wh1", NEW, NOW, immediate=False, remote_truncated=())
    theirs = signing.rotated(
        base, "wh1", OTHER, NOW + timedelta(seconds=1), immediate=False, remote_truncated=()
    )
    merged = signing.merged(base, ours, theirs)
    assert [s.secret for s in merged.secrets] == [OTHER, NEW, OLD]
    assert merged.secrets[2] == ours.secrets[1]  # both changed it: ours


def _rotated_once() -> signing.SigningSecrets:
    """NEW, with OLD in its grace period."""
    held = signing.fresh("wh1", OLD, NOW - timedelta(days=1))
    return signing.rotated(held, "wh1", NEW, NOW, immediate=False, remote_truncated=())


def test_a_secret_either_side_removed_stays_removed() -> None:
    base = _rotated_once()
    pruned = signing.SigningSecrets("wh1", base.secrets[:1])  # ours: OLD expired
    theirs = signing.rotated(
        base, "wh1", OTHER, NOW + timedelta(seconds=1), immediate=False, remote_truncated=()
    )
    assert [s.secret for s in signing.merged(base, pruned, theirs).secrets] == [OTHER, NEW]
    # They pruned it while we rotated: it stays gone, both new secrets stay.
    ours = signing.rotated(
        base, "wh1", OTHER, NOW + timedelta(seconds=1), immediate=False, remote_truncated=()
    )
    assert [s.secret for s in signing.merged(base, ours, pruned).secrets] == [OTHER, NEW]


def test_an_entry_only_they_changed_takes_their_version() -> None:
    base = _rotated_once()
    dated = signing.with_remote_expiries(
        base, (truncate_secret(NEW), truncate_secret(OLD)), (None, NOW + timedelta(hours=3))
    )
    assert dated is not None
    ours = signing.rotated(
        base, "wh1", OTHER, NOW + timedelta(seconds=1), immediate=False, remote_truncated=()
    )
    ours = signing.SigningSecrets("wh1", (ours.secrets[0], *base.secrets))  # NEW, OLD as read
    merged = signing.merged(base, ours, dated)
    assert [s.secret for s in merged.secrets] == [OTHER, NEW, OLD]
    assert merged.secrets[2].expire_time == NOW + timedelta(hours=3)


def test_another_webhooks_set_or_none_loses_to_ours() -> None:
    ours = signing.fresh("wh2", NEW, NOW)
    assert signing.merged(None, ours, signing.fresh("wh1", OLD, NOW)) == ours
    assert signing.merged(signing.fresh("wh2", OLD, NOW), ours, None) == ours
