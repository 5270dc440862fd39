"""End-to-end health, the decisions: ping the webhook, learn from its receiver that the ping
arrived and verified, report `DeliveryVerified` — decided here, purely; `health_checker`
acts on them.

Decisions (pure, no I/O):
- `ping_reason`: a chain of small checks, the first that fires says why a ping is due now
  (`AfterRotation`, `FirstCheck`, `RetryUnverified`, `Periodic`), or None.
- `blocked_reason`: why no ping can be sent at all (health check off, no receiver, no
  webhook yet, webhook not enabled remotely) — reported as an Unknown condition.
- `judge`: given when the ping was sent and what the receiver reports, the verdict:
  verified (with the current secret), verified only with a previous secret (the receiver
  has not picked up the rotation), not received in time, or keep waiting.
- `repeats`: a verdict that says what the condition already says is not written.
- `enabled`: whether a resource's health ticks run at all.
- `rotation_complete`: a rotation counts complete only when a ping sent after it verified
  with the current secret.
- Several replicas: with Redis every replica records its pings there and any pod answers
  for all (docs/receiver.md), so the internal Service is asked. Without Redis each pod
  knows only the pings it took, so every ready pod is asked (`ping_status_pod_urls`) and
  `combine` merges their verdicts; where fewer pods than replicas can be asked (none
  listed, or not all ready), `per_replica_caveat` turns "not received" into Unknown
  (`PingsPerReplica`).

The I/O that acts on these decisions (sending the ping, asking the receivers, the timer's
tick) is `health_checker`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gemini_webhook_operator.conditions import status_text
from gemini_webhook_operator.metrics import PingResult
from gemini_webhook_operator.receiver_names import STATIC_SOURCE
from gemini_webhooks.contracts.crd import ANNOTATION_PING_REQUESTED, CONDITION_DELIVERY_VERIFIED
from gemini_webhooks.contracts.times import parse_rfc3339, rfc3339

CONDITION = CONDITION_DELIVERY_VERIFIED

# Why a ping is sent now.
PING_AFTER_ROTATION = "AfterRotation"
PING_FIRST = "FirstCheck"
PING_PERIODIC = "Periodic"
PING_RETRY = "RetryUnverified"

# Condition reasons.
REASON_VERIFIED = "PingVerified"
REASON_PREVIOUS_SECRET = "VerifiedWithPreviousSecret"
REASON_NOT_RECEIVED = "PingNotReceived"
REASON_SEND_FAILED = "PingSendFailed"
REASON_RECEIVER_UNREACHABLE = "ReceiverUnreachable"
REASON_DISABLED = "HealthCheckDisabled"
REASON_NO_RECEIVER = "ReceiverNotDeployed"
REASON_NO_WEBHOOK = "WebhookNotCreated"
REASON_NOT_ENABLED = "WebhookNotEnabled"
REASON_NO_SECRET = "SigningSecretMissing"
REASON_INVALID = "InvalidHealthCheck"
REASON_PINGS_PER_REPLICA = "PingsPerReplica"
# Set by the reconciler when it rotates: the last verdict was about the previous secret.
REASON_ROTATION_UNVERIFIED = "RotationNotYetVerified"

# The receiver's and the operator's clocks are the cluster's; allow a little skew when
# deciding whether a ping arrived after we sent ours.
CLOCK_SKEW = timedelta(seconds=2)
DEFAULT_TIMEOUT = timedelta(seconds=30)
DEFAULT_RETRY_AFTER = timedelta(minutes=1)
# After a rotation each receiver replica loads the new secret from its Secret's watch (well
# under a second; a few seconds on a busy node): until this long after it, a ping verified
# only with the previous secret is sent again (every `SETTLE_RESEND`) instead of reported.
SECRET_SETTLE = timedelta(seconds=10)
SETTLE_RESEND = timedelta(seconds=1)


@dataclass(frozen=True)
class PingObservation:
    """What the receiver reports about the last verified ping of a source."""

    received_at: datetime
    secret_fingerprint: str | None  # truncated secret (`contracts.signing_secret`)
    delivery_id: str | None = None  # the ping's `webhook-id`


@dataclass
class HealthMemo:
    """Per-resource memory of the checks (kept in kopf's memo; lost on restart, which
    costs one early ping)."""

    last_sent_at: datetime | None = None
    last_verified_sent_at: datetime | None = None
    reset_for: datetime | None = None  # the rotation whose reset DeliveryVerified showed


@dataclass(frozen=True)
class Verdict:
    status: bool | None  # the condition's True / False / Unknown
    reason: str
    message: str
    round_trip: timedelta | None = None
    ping_result: PingResult | None = None

    @property
    def verified(self) -> bool:
        return self.status is True


def enabled(resource: Mapping[str, Any]) -> bool:
    """Is this resource health-checked (its health ticks scheduled)? While
    `spec.healthCheck.enabled`."""
    return bool(((resource.get("spec") or {}).get("healthCheck") or {}).get("enabled"))


def repeats(previous: Mapping[str, Any] | None, verdict: Verdict, generation: int) -> bool:
    """Whether `verdict` only says again what the condition `previous` says: the same status
    and reason, at the same generation. Such a verdict is not written, so that the periodic
    pings of an unchanged, healthy resource cost no write: the condition's message keeps
    telling the ping that gave it its status (each later one's round trip is in
    `gemini_webhook_operator_delivery_round_trip_seconds`)."""
    return previous is not None and (
        previous.get("status"),
        previous.get("reason"),
        previous.get("observedGeneration"),
    ) == (status_text(verdict.status), verdict.reason, generation)


def blocked_reason(
    *,
    health_enabled: bool,
    receiver_enabled: bool,
    webhook_id: str | None,
    remote_state: str | None,
    current_fingerprint: str | None,
) -> Verdict | None:
    """Why no ping can be sent now (an Unknown condition), or None when one can."""
    checks: tuple[tuple[bool, str, str], ...] = (
        (not health_enabled, REASON_DISABLED, "spec.healthCheck.enabled is false"),
        (
            not receiver_enabled,
            REASON_NO_RECEIVER,
            "the health check asks the deployed receiver; set spec.receiver.enabled",
        ),
        (not webhook_id, REASON_NO_WEBHOOK, "the remote webhook does not exist yet"),
        (
            remote_state != "enabled",
            REASON_NOT_ENABLED,
            f"the remote webhook is {remote_state or 'unknown'}; pings are not delivered",
        ),
        (
            not current_fingerprint,
            REASON_NO_SECRET,
            "the operator holds no signing secret to verify against",
        ),
    )
    for fires, reason, message in checks:
        if fires:
            return Verdict(None, reason, message)
    return None


def rotation_reset(memo: HealthMemo, last_rotation: datetime | None) -> Verdict | None:
    """After a rotation, what DeliveryVerified says is about the previous secret: Unknown
    until a ping sent after the rotation verifies. Only when this operator pinged before the
    rotation; after a restart (an empty memo) the first ping decides, so a verdict that still
    holds does not flap."""
    last_sent = memo.last_sent_at
    if last_rotation is None or last_sent is None or last_sent >= last_rotation:
        return None
    if memo.reset_for == last_rotation:
        return None  # shown once; what the ping then decides stands
    return Verdict(
        None,
        REASON_ROTATION_UNVERIFIED,
        f"rotated at {rfc3339(last_rotation)}; waiting for a ping sent after it to verify "
        "with the new signing secret",
    )


def ping_reason(
    memo: HealthMemo,
    *,
    interval: timedelta,
    retry_after: timedelta,
    last_rotation: datetime | None,
    now: datetime,
) -> str | None:
    """Why a ping is due now (the first check that fires), or None.

    Unverified states (a rotation not yet proven, a failed check) are re-checked after
    `retry_after` rather than a whole interval; each check is one WebhookService call.
    """
    last_sent, last_verified = memo.last_sent_at, memo.last_verified_sent_at
    if last_rotation is not None and (last_sent is None or last_sent < last_rotation):
        return PING_AFTER_ROTATION
    if last_sent is None:
        return PING_FIRST
    since = now - last_sent
    if last_verified != last_sent and since >= min(retry_after, interval):
        return PING_RETRY
    if since >= interval:
        return PING_PERIODIC
    return None


def is_new(
    observation: PingObservation | None, baseline: PingObservation | None, sent_at: datetime
) -> bool:
    """Is `observation` our ping: another delivery than the one seen before sending, and
    not received before we sent (within the clock skew)?"""
    if observation is None or observation.received_at < sent_at - CLOCK_SKEW:
        return False
    if baseline is None:
        return True
    if observation.delivery_id is not None and baseline.delivery_id is not None:
        return observation.delivery_id != baseline.delivery_id
    return observation.received_at > baseline.received_at


def judge(
    *,
    sent_at: datetime,
    observation: PingObservation | None,
    current_fingerprint: str,
    now: datetime,
    timeout: timedelta,
    baseline: PingObservation | None = None,
    asked: str = "the receiver",
) -> Verdict | None:
    """The verdict on one ping, or None to keep waiting.

    `baseline` is what the receiver reported just before the ping was sent, so that an
    earlier ping is never taken for this one; `asked` names who was asked, for the message.
    """
    if observation is not None and is_new(observation, baseline, sent_at):
        round_trip = max(observation.received_at - sent_at, timedelta(0))
        if observation.secret_fingerprint == current_fingerprint:
            return Verdict(
                True,
                REASON_VERIFIED,
                f"a ping sent at {rfc3339(sent_at)} arrived and verified with the current "
                f"signing secret after {round_trip.total_seconds():.3f}s",
                round_trip,
                "verified",
            )
        return Verdict(
            False,
            REASON_PREVIOUS_SECRET,
            f"a ping sent at {rfc3339(sent_at)} verified only with a previous signing "
            "secret: the receiver has not loaded the current one",
            round_trip,
            "not_verified",
        )
    if now - sent_at >= timeout:
        return Verdict(
            False,
            REASON_NOT_RECEIVED,
            f"a ping sent at {rfc3339(sent_at)} was not reported verified by {asked} "
            f"within {timeout.total_seconds():.0f}s (not delivered, or rejected)",
            None,
            "not_verified",
        )
    return None


def combine(verdicts: Sequence[Verdict | None]) -> Verdict | None:
    """One verdict from each pod asked → the ping's verdict, or None to keep waiting.

    A ping reaches one pod (a retry may reach another): any pod that saw it verified
    decides; else one that saw it verify only with a previous secret; "not received" only
    once every pod says so.
    """
    decided = [v for v in verdicts if v is not None]
    for reason in (REASON_VERIFIED, REASON_PREVIOUS_SECRET):
        for verdict in decided:
            if verdict.reason == reason:
                return verdict
    if decided and len(decided) == len(verdicts):
        return decided[0]
    return None


def per_replica_caveat(
    verdict: Verdict, *, replicas: int, shared_pings: bool, asked: int = 1
) -> Verdict:
    """The verdict, unless it is "not received" from fewer pods than there are replicas
    that each know only their own pings: then nobody can tell (Unknown)."""
    if verdict.reason != REASON_NOT_RECEIVED or shared_pings or asked >= replicas:
        return verdict
    who = "the receiver pod asked" if asked == 1 else f"the {asked} ready receiver pods asked"
    return Verdict(
        None,
        REASON_PINGS_PER_REPLICA,
        f"{who} did not see the ping, but it may have reached another of the {replicas} "
        "replicas, which keep pings in memory and could not all be asked: set "
        "spec.receiver.redis so that every replica's pings count",
        ping_result="not_verified",
    )


def still_settling(
    verdict: Verdict,
    *,
    last_rotation: datetime | None,
    now: datetime,
    window: timedelta = SECRET_SETTLE,
) -> bool:
    """Is `verdict` one to send the ping again for rather than report: verified only with
    the previous secret while the receivers may still be loading the rotated one?"""
    return (
        verdict.reason == REASON_PREVIOUS_SECRET
        and last_rotation is not None
        and now - last_rotation < window
    )


def rotation_complete(memo: HealthMemo, last_rotation: datetime | None) -> bool:
    """A rotation is complete once a ping sent after it verified with the current secret."""
    if last_rotation is None:
        return True
    return memo.last_verified_sent_at is not None and memo.last_verified_sent_at >= last_rotation


def parse_pings(document: Any, source: str = STATIC_SOURCE) -> PingObservation | None:
    """The receiver's `/internal/pings` answer → the observation for `source`.

    Raises ValueError on a malformed answer (the message names what is wrong).
    """
    if not isinstance(document, dict) or not isinstance(document.get("pings"), dict):
        raise ValueError("ping status: expected an object with a 'pings' object")
    record = document["pings"].get(source)
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ValueError(f"ping status: pings.{source} is not an object")
    received = parse_rfc3339(record.get("received_at"))
    if received is None:
        raise ValueError(f"ping status: pings.{source}.received_at is not an RFC 3339 time")
    fingerprint = record.get("secret_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise ValueError(f"ping status: pings.{source}.secret_fingerprint is not a string")
    delivery_id = record.get("webhook_id")
    if delivery_id is not None and not isinstance(delivery_id, str):
        raise ValueError(f"ping status: pings.{source}.webhook_id is not a string")
    return PingObservation(received, fingerprint, delivery_id)


def ping_request(resource: Mapping[str, Any]) -> str | None:
    """The ping annotation's value, when status.lastPing does not answer it yet."""
    annotations = (resource.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_PING_REQUESTED)
    handled = ((resource.get("status") or {}).get("lastPing") or {}).get("request")
    return None if value is None or str(value) == handled else str(value)


def ping_answer(
    request: str,
    verdict: Verdict,
    sent_at: datetime | None,
    verified_by: Mapping[str, PingObservation],
) -> dict[str, Any]:
    """status.lastPing for a requested ping (every key, so a merge patch leaves nothing of
    an earlier answer). Only fingerprints: the truncated secrets the receivers report."""
    return {
        "request": request,
        "sentAt": rfc3339(sent_at) if sent_at else None,
        "status": {True: "True", False: "False", None: "Unknown"}[verdict.status],
        "reason": verdict.reason,
        "message": verdict.message,
        "verifiedBy": [
            {
                "name": name,
                "receivedAt": rfc3339(seen.received_at),
                "secretFingerprint": seen.secret_fingerprint,
            }
            for name, seen in sorted(verified_by.items())
        ],
    }


# How a ping is sent: the WebhookService wrapper's `ping` for one webhook.
Ping = Callable[[], Awaitable[Any]]
