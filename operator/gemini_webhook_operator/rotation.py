"""Should the signing secret rotate now? A chain of small pure checks, cert-manager style.

Each check looks at one `RotationInput` and either fires (`Rotate(reason, message)`), stops
the chain (`Hold(reason, message)`), or passes (None). The first check that answers decides;
its reason becomes the status condition's reason and the Event's reason. The next scheduled
rotation is computed from the last rotation time recorded in `status`, so an operator
restart never skips or repeats one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import cronsim

from gemini_webhook_operator.model import RotationPolicy
from gemini_webhooks.contracts.signing_secret import SigningSecrets, matches_truncated

# Reasons (condition and Event reasons; also the `reason` label of the rotations metric).
SECRET_MISSING = "SecretMissing"
SECRET_UNKNOWN_TO_REMOTE = "SecretUnknownToRemote"
REQUESTED_BY_ANNOTATION = "RequestedByAnnotation"
PAUSED = "RotationPaused"
DUE_BY_POLICY = "DueByPolicy"
NOT_DUE = "NotDue"
# Rotations that regain a secret the operator lost count as heals.
HEAL_REASONS = frozenset({SECRET_MISSING, SECRET_UNKNOWN_TO_REMOTE})


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


def remote_knows(remote_truncated: Sequence[str], secret: str) -> bool:
    return any(matches_truncated(secret, truncated) for truncated in remote_truncated)


def secret_missing(given: RotationInput) -> Decision | None:
    if given.held is None or given.held.current is None:
        return Rotate(SECRET_MISSING, given.held_problem or "the signing Secret holds no secret")
    if given.held.webhook_id != given.webhook_id:
        return Rotate(SECRET_MISSING, "the signing Secret holds the secret of another webhook")
    return None


def secret_unknown_to_remote(given: RotationInput) -> Decision | None:
    assert given.held is not None and given.held.current is not None
    if remote_knows(given.remote_truncated, given.held.current.secret):
        return None
    return Rotate(
        SECRET_UNKNOWN_TO_REMOTE,
        "the remote webhook no longer accepts the secret held in the signing Secret",
    )


def requested_by_annotation(given: RotationInput) -> Decision | None:
    if given.requested is None:
        return None
    return Rotate(REQUESTED_BY_ANNOTATION, "rotation requested with the rotate annotation")


def paused(given: RotationInput) -> Decision | None:
    if given.policy.paused:
        return Hold(PAUSED, "scheduled rotation is paused (spec.rotation.paused)")
    return None


def due_by_policy(given: RotationInput) -> Decision | None:
    due = next_rotation_time(given.policy, given.last_rotation)
    if due is None:
        return Hold(NOT_DUE, "no rotation interval or schedule")
    if given.now >= due:
        return Rotate(DUE_BY_POLICY, f"scheduled rotation was due at {due.isoformat()}")
    return Hold(NOT_DUE, f"next rotation at {due.isoformat()}")


CHAIN: tuple[Check, ...] = (
    secret_missing,
    secret_unknown_to_remote,
    requested_by_annotation,
    paused,
    due_by_policy,
)


def decide(given: RotationInput, chain: Sequence[Check] = CHAIN) -> Decision:
    for check in chain:
        decision = check(given)
        if decision is not None:
            return decision
    return Hold(NOT_DUE, "no check fired")
