"""Pure transitions of the signing-secret set kept in the Kubernetes Secret.

The format is `gemini_webhooks.contracts.signing_secret`. The set always holds every secret
Gemini currently signs with: the newest first, and during a grace rotation the previous one
with its expiry, removed once that time has passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from gemini_webhook_operator.rotation import remote_knows
from gemini_webhooks.contracts.signing_secret import SigningSecret, SigningSecrets

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

    With grace, every previous secret that the remote still accepts stays, expiring 24 hours
    from now at the latest; a held secret the remote does not know is dropped.
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
        if s.valid_at(now) and s.secret != new_secret and remote_knows(remote_truncated, s.secret)
    )
    return SigningSecrets(webhook_id, (newest, *kept))


def pruned(
    held: SigningSecrets, now: datetime, remote_truncated: Sequence[str] | None
) -> SigningSecrets | None:
    """The set without expired previous secrets (and, when the remote's list is known,
    without previous secrets it no longer accepts); None when nothing changes.

    The newest secret is never removed here: losing it is the rotation chain's business.
    """
    if not held.secrets:
        return None
    current, *previous = held.secrets
    kept = [
        s
        for s in previous
        if s.valid_at(now)
        and (remote_truncated is None or remote_knows(remote_truncated, s.secret))
    ]
    if len(kept) == len(previous):
        return None
    return SigningSecrets(held.webhook_id, (current, *kept))


def next_expiry(held: SigningSecrets | None) -> datetime | None:
    """When the earliest grace period ends (to schedule the clean-up)."""
    if held is None:
        return None
    expiries = [s.expire_time for s in held.secrets[1:] if s.expire_time is not None]
    return min(expiries) if expiries else None
