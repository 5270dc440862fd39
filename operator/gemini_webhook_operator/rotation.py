"""Should the signing secret rotate now? A chain of small pure checks, cert-manager style.

Each check looks at one `RotationInput` and either fires (`Rotate(reason, message)`), stops
the chain (`Hold(reason, message)`), or passes (None). The first check that answers decides;
its reason becomes the status condition's reason and the Event's reason. The next scheduled
rotation is computed from the last rotation time recorded in `status`, so an operator
restart never skips or repeats one.

A healing rotation (the secret is lost, or the remote provably no longer knows it) disturbs
every consumer, so it needs proof and is rate-limited: the remote's truncated secrets count
as proof only when every entry is readable (`contracts.signing_secret.remote_identity`),
and within `heal_interval` of the last heal a heal is held (`HealRateLimited`) while the
rest of the chain (annotation, schedule) still runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import cronsim

from gemini_webhook_operator.model import RotationPolicy
from gemini_webhooks.contracts.crd import REVOCATIONS
from gemini_webhooks.contracts.signing_secret import (
    API_GROUP,
    KNOWN,
    UNKNOWN,
    SigningSecrets,
    remote_identity,
)
from gemini_webhooks.contracts.times import rfc3339

# Reasons (condition and Event reasons; also the `reason` label of the rotations metric).
SECRET_MISSING = "SecretMissing"
SECRET_UNKNOWN_TO_REMOTE = "SecretUnknownToRemote"
REQUESTED_BY_ANNOTATION = "RequestedByAnnotation"
PAUSED = "RotationPaused"
DUE_BY_POLICY = "DueByPolicy"
NOT_DUE = "NotDue"
HEAL_RATE_LIMITED = "HealRateLimited"
# Rotations that regain a secret the operator lost count as heals.
HEAL_REASONS = frozenset({SECRET_MISSING, SECRET_UNKNOWN_TO_REMOTE})

# What the remote's signing_secrets say about the held secret (Ready's reason when held).
REMOTE_KNOWS_SECRET = "RemoteKnowsSecret"
REMOTE_SECRETS_NOT_REPORTED = "RemoteSecretsNotReported"
REMOTE_SECRETS_UNREADABLE = "RemoteSecretsUnreadable"
# Reasons a heal was withheld (the `reason` label of the heal-holds metric).
HEAL_HOLD_REASONS: tuple[str, ...] = (
    REMOTE_SECRETS_NOT_REPORTED,
    REMOTE_SECRETS_UNREADABLE,
    HEAL_RATE_LIMITED,
)

# When the last healing rotation happened (RFC 3339), on the GeminiWebhook: it survives the
# Secret's deletion and operator restarts. Left out of kopf's compared essence
# (`handlers.configure`), so writing it never triggers the update handler.
ANNOTATION_LAST_HEAL = f"{API_GROUP}/last-heal-time"
DEFAULT_HEAL_INTERVAL = timedelta(hours=1)
IMMEDIATE = REVOCATIONS[1]


@dataclass(frozen=True)
class RotationInput:
    now: datetime
    policy: RotationPolicy
    webhook_id: str
    held: SigningSecrets | None  # None: the Secret is missing or unreadable
    held_problem: str | None  # why `held` is None, for the message (never secret material)
    remote_truncated: tuple[str, ...]  # the remote's signing_secrets[].truncated_secret
    last_rotation: datetime | None
    requested: str | None  # the rotate annotation's value, when set
    last_heal: datetime | None = None
    heal_interval: timedelta = DEFAULT_HEAL_INTERVAL


@dataclass(frozen=True)
class Rotate:
    reason: str
    message: str


@dataclass(frozen=True)
class Hold:
    reason: str
    message: str


Decision = Rotate | Hold
Check = Callable[[RotationInput], Decision | None]


def next_rotation_time(policy: RotationPolicy, last_rotation: datetime | None) -> datetime | None:
    """When the policy wants the next rotation, counted from the last one."""
    if last_rotation is None:
        return None
    if policy.interval is not None:
        return last_rotation + policy.interval
    if policy.schedule is not None:
        return next(iter(cronsim.CronSim(policy.schedule, last_rotation)))
    return None


@dataclass(frozen=True)
class SecretCheck:
    """The held secret against the remote's list: True known, False provably unknown,
    None unverifiable (the list is empty or does not identify its secrets)."""

    verified: bool | None
    reason: str
    message: str


def secret_check(given: RotationInput) -> SecretCheck | None:
    """None when there is no held secret to check (that is `secret_missing`'s business)."""
    if given.held is None or given.held.current is None:
        return None
    identity = remote_identity(given.held.current.secret, given.remote_truncated)
    if identity == KNOWN:
        return SecretCheck(True, REMOTE_KNOWS_SECRET, "the remote reports the held secret")
    if identity == UNKNOWN:
        return SecretCheck(
            False,
            SECRET_UNKNOWN_TO_REMOTE,
            "the remote webhook no longer accepts the secret held in the signing Secret",
        )
    if not given.remote_truncated:
        return SecretCheck(
            None,
            REMOTE_SECRETS_NOT_REPORTED,
            "the remote reports no signing secrets, so the held secret cannot be checked "
            "against them; it is kept (no healing rotation)",
        )
    return SecretCheck(
        None,
        REMOTE_SECRETS_UNREADABLE,
        "the remote reports its signing secrets in a form that does not identify them "
        "(masked, too short or unrecognised); the held secret is kept (no healing rotation)",
    )


def next_heal_time(given: RotationInput) -> datetime | None:
    """The earliest time another healing rotation may run (None: now)."""
    if given.last_heal is None:
        return None
    allowed = given.last_heal + given.heal_interval
    return allowed if given.now < allowed else None


def secret_missing(given: RotationInput) -> Decision | None:
    if given.held is None or given.held.current is None:
        return Rotate(SECRET_MISSING, given.held_problem or "the signing Secret holds no secret")
    if given.held.webhook_id != given.webhook_id:
        return Rotate(SECRET_MISSING, "the signing Secret holds the secret of another webhook")
    return None


def secret_unknown_to_remote(given: RotationInput) -> Decision | None:
    check = secret_check(given)
    if check is None or check.verified is not False:
        return None
    return Rotate(check.reason, check.message)


def requested_by_annotation(given: RotationInput) -> Decision | None:
    if given.requested is None:
        return None
    return Rotate(REQUESTED_BY_ANNOTATION, "rotation requested with the rotate annotation")


def immediate_revocation(
    policy: RotationPolicy, requested: str | None, revocation: str | None
) -> bool:
    """Whether a rotation revokes the previous secrets at once: a requested rotation's own
    revocation (the rotate-revocation annotation) when it names one, else the policy's."""
    if requested is not None and revocation is not None:
        return revocation == IMMEDIATE
    return policy.immediate


def paused(given: RotationInput) -> Decision | None:
    if given.policy.paused:
        return Hold(PAUSED, "scheduled rotation is paused (spec.rotation.paused)")
    return None


def due_by_policy(given: RotationInput) -> Decision | None:
    due = next_rotation_time(given.policy, given.last_rotation)
    if due is None:
        return Hold(NOT_DUE, "no rotation interval or schedule")
    if given.now >= due:
        return Rotate(DUE_BY_POLICY, f"scheduled rotation was due at {rfc3339(due, 'auto')}")
    return Hold(NOT_DUE, f"next rotation at {rfc3339(due, 'auto')}")


CHAIN: tuple[Check, ...] = (
    secret_missing,
    secret_unknown_to_remote,
    requested_by_annotation,
    paused,
    due_by_policy,
)


def decide(given: RotationInput, chain: Sequence[Check] = CHAIN) -> Decision:
    """The first answer of the chain; a heal within `heal_interval` of the last one is
    held, the chain goes on (a requested or scheduled rotation also regains the secret),
    and `HealRateLimited` is the answer unless a later check rotates."""
    held_heal: Hold | None = None
    for check in chain:
        decision = check(given)
        if decision is None:
            continue
        if isinstance(decision, Rotate) and decision.reason in HEAL_REASONS:
            allowed = next_heal_time(given)
            if allowed is not None:
                held_heal = held_heal or Hold(
                    HEAL_RATE_LIMITED,
                    f"{decision.reason}: {decision.message}; healing rotations are limited "
                    f"to one per {given.heal_interval}, the next is allowed at "
                    f"{rfc3339(allowed, 'auto')}",
                )
                continue
        if held_heal is not None and isinstance(decision, Hold):
            return held_heal
        return decision
    return held_heal or Hold(NOT_DUE, "no check fired")


def held_heal(given: RotationInput, decision: Decision) -> SecretCheck | None:
    """The heal this decision withheld, if any, for the Ready condition and the metric:
    `verified` False when a needed heal waits for the rate limit, None when the remote's
    list cannot tell whether one is needed."""
    if isinstance(decision, Hold) and decision.reason == HEAL_RATE_LIMITED:
        return SecretCheck(False, HEAL_RATE_LIMITED, decision.message)
    if isinstance(decision, Rotate):
        return None
    check = secret_check(given)
    return check if check is not None and check.verified is None else None
