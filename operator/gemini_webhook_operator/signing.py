"""Pure transitions of the signing-secret set kept in the Kubernetes Secret.

The format is `gemini_webhooks.contracts.signing_secret`. The set always holds every secret
Gemini currently signs with: the newest first, and during a grace rotation the previous one
with its expiry, removed once that time has passed. The expiry is the one Gemini reports
(`signing_secrets[].expire_time`); 24 hours from the rotation stands in only while the
remote reports none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from gemini_webhooks.contracts.signing_secret import (
    UNKNOWN,
    SigningSecret,
    SigningSecrets,
    matches_truncated,
    remote_identity,
    visible_parts,
)

# Gemini's `revoke_previous_secrets_after_h24`.
GRACE_PERIOD = timedelta(hours=24)
REVOCATION_GRACE = "revoke_previous_secrets_after_h24"
REVOCATION_IMMEDIATE = "revoke_previous_secrets_immediately"


def revocation_behavior(immediate: bool) -> str:
    return REVOCATION_IMMEDIATE if immediate else REVOCATION_GRACE


def fresh(webhook_id: str, secret: str, now: datetime) -> SigningSecrets:
    """The set right after a webhook was created with `secret`."""
    return SigningSecrets(webhook_id, (SigningSecret(secret=secret, created_at=now),))


def rotated(
    held: SigningSecrets | None,
    webhook_id: str,
    new_secret: str,
    now: datetime,
    *,
    immediate: bool,
    remote_truncated: Sequence[str],
) -> SigningSecrets:
    """The set right after a rotation to `new_secret`.

    With grace, every previous secret stays unless the remote provably no longer accepts
    it, expiring 24 hours from now at the latest until the remote reports its expiry
    (`with_remote_expiries`).
    """
    newest = SigningSecret(secret=new_secret, created_at=now)
    if immediate or held is None or held.webhook_id != webhook_id:
        return SigningSecrets(webhook_id, (newest,))
    expiry = now + GRACE_PERIOD
    kept = tuple(
        SigningSecret(
            secret=s.secret,
            created_at=s.created_at,
            expire_time=min(s.expire_time, expiry) if s.expire_time else expiry,
        )
        for s in held.secrets
        if s.valid_at(now)
        and s.secret != new_secret
        and remote_identity(s.secret, remote_truncated) != UNKNOWN
    )
    return SigningSecrets(webhook_id, (newest, *kept))


def _reported_expiry(
    secret: str, remote_truncated: Sequence[str], expiries: Sequence[datetime | None]
) -> datetime | None:
    """The expiry the remote reports for `secret`: its entry's; with no entry that denotes
    it, the latest expiry among entries that identify nothing (masked: a bound for every
    previous secret); None when the remote reports none."""
    reported = list(zip(remote_truncated, expiries, strict=False))
    for truncated, expiry in reported:
        if matches_truncated(secret, truncated):
            return expiry
    unreadable = [e for t, e in reported if e is not None and visible_parts(t) is None]
    return max(unreadable) if unreadable else None


def with_remote_expiries(
    held: SigningSecrets,
    remote_truncated: Sequence[str],
    expiries: Sequence[datetime | None],
) -> SigningSecrets | None:
    """The set with each previous secret's expiry as the remote reports it; None when that
    changes nothing (the remote reports no expiry, or the same ones)."""
    if len(held.secrets) < 2:
        return None
    current, *previous = held.secrets
    updated = []
    for s in previous:
        expiry = _reported_expiry(s.secret, remote_truncated, expiries)
        updated.append(s if expiry is None else replace(s, expire_time=expiry))
    if updated == previous:
        return None
    return SigningSecrets(held.webhook_id, (current, *updated))


def pruned(
    held: SigningSecrets, now: datetime, remote_truncated: Sequence[str] | None
) -> SigningSecrets | None:
    """The set without expired previous secrets (and, when the remote's list is known,
    without previous secrets it provably no longer accepts); None when nothing changes.

    The newest secret is never removed here: losing it is the rotation chain's business.
    """
    if not held.secrets:
        return None
    current, *previous = held.secrets
    kept = [
        s
        for s in previous
        if s.valid_at(now)
        and (remote_truncated is None or remote_identity(s.secret, remote_truncated) != UNKNOWN)
    ]
    if len(kept) == len(previous):
        return None
    return SigningSecrets(held.webhook_id, (current, *kept))


def merged(
    base: SigningSecrets | None, ours: SigningSecrets, theirs: SigningSecrets | None
) -> SigningSecrets:
    """The set to write when the Secret changed after we read `base` and derived `ours`
    from it: a three-way merge with what is there now (`theirs`), newest first.

    A secret either side added since `base` is kept (Gemini shows a new secret once: a
    concurrent rotation's must not be dropped, nor ours); a secret either side removed
    since `base` stays removed; an entry both hold takes the side that changed it (ours
    when both did). A different webhook in `theirs` (or none readable) loses to `ours`,
    which was just obtained from Gemini for the webhook we act on.
    """
    if theirs is None or theirs.webhook_id != ours.webhook_id:
        return ours
    before = {}
    if base is not None and base.webhook_id == ours.webhook_id:
        before = {s.secret: s for s in base.secrets}
    mine = {s.secret: s for s in ours.secrets}
    other = {s.secret: s for s in theirs.secrets}
    kept: list[SigningSecret] = []
    for secret, entry in mine.items():
        if secret in other:
            kept.append(entry if entry != before.get(secret) else other[secret])
        elif secret not in before:
            kept.append(entry)
    kept.extend(e for s, e in other.items() if s not in mine and s not in before)
    # Stable: between equal creation times, ours first.
    kept.sort(key=lambda s: s.created_at, reverse=True)
    return SigningSecrets(ours.webhook_id, tuple(kept))
