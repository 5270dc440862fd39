"""What a reconciliation reports: its `Outcome` (status, annotations, Events, retry), the
`Ready`/`Synced` conditions with their reasons, and the metrics of a converged webhook.

The condition reasons of the reconciler itself live here (WebhookService failures bring
their own, `webhookservice_errors`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gemini_webhook_operator import conditions, receiver_exposure, replica_state, rotation
from gemini_webhook_operator.diff import DISABLED_BY_FAILURES, RemoteWebhook
from gemini_webhook_operator.metrics import OperatorMetrics
from gemini_webhook_operator.model import WebhookSpec
from gemini_webhook_operator.webhookservice_errors import (
    REASON_INVALID_API_KEY,
    REASON_PERMISSION_DENIED,
)
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.crd_receiver import CrdReceiverError
from gemini_webhooks.contracts.signing_secret import SigningSecrets
from gemini_webhooks.contracts.times import rfc3339

REASON_READY = "WebhookReady"
REASON_SYNCED = "ReconcileSuccess"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_API_KEY_MISSING = "APIKeySecretMissing"
REASON_SECRET_CONFLICT = "SigningSecretConflict"
REASON_ADOPTION_NOT_FOUND = "AdoptionTargetNotFound"
REASON_CLAIMED = "WebhookClaimedByAnotherResource"
REASON_DISABLED_BY_FAILURES = "DisabledDueToFailedDeliveries"
REASON_STATE_PENDING = "RemoteStateDiffers"
REASON_KUBE_ERROR = "KubernetesAPIError"
REASON_KUBE_FORBIDDEN = "KubernetesForbidden"
REASON_RECEIVER_INVALID = "InvalidReceiver"
REASON_PROGRESSING = "Progressing"

# Problems the reconciler retries only to notice a person's fix. With these, and with a
# failure it does not retry at all (no `retry_after`), the resource is `Stalled` (kstatus
# `Failed`, Argo CD `Degraded`); with any other problem it is `Reconciling`.
NEEDS_INTERVENTION = frozenset(
    {
        REASON_INVALID_API_KEY,
        REASON_PERMISSION_DENIED,
        REASON_KUBE_FORBIDDEN,
        REASON_ADOPTION_NOT_FOUND,
        REASON_DISABLED_BY_FAILURES,
    }
)


@dataclass
class Outcome:
    """What a reconciliation wants written back and reported."""

    status: dict[str, Any] = field(default_factory=dict)
    remove_annotations: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)  # to set on the resource
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    retry_after: float | None = None  # ask to be called again this soon
    error: str | None = None  # the failure's condition reason, for the metrics' result
    stalled: bool = False  # the problem waits for a person (`Stalled`, not `Reconciling`)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


class Report:
    """Builds the status conditions of one reconciliation."""

    def __init__(self, body: Mapping[str, Any], now: datetime) -> None:
        status = body.get("status") or {}
        self.previous: list[dict[str, Any]] = list(status.get("conditions") or [])
        self.conditions = list(self.previous)
        self.generation = int((body.get("metadata") or {}).get("generation") or 0)
        self.now = now

    def set(self, type_: str, status: bool | None, reason: str, message: str) -> None:
        self.conditions = conditions.set_condition(
            self.conditions,
            type_,
            status,
            reason,
            message,
            generation=self.generation,
            now=self.now,
        )

    def previous_reason(self, type_: str) -> str | None:
        found = conditions.condition(self.previous, type_)
        return None if found is None else found.get("reason")


def failure(
    report: Report,
    outcome: Outcome,
    reason: str,
    message: str,
    *,
    retry_after: float | None,
    ready: bool | None = False,
) -> Outcome:
    """Synced=False with `reason`; an Event only when the reason is new (no event storms)."""
    if report.previous_reason(crd.CONDITION_SYNCED) != reason:
        outcome.event("Warning", reason, message)
    report.set(crd.CONDITION_SYNCED, False, reason, message)
    if ready is not None or conditions.condition(report.conditions, crd.CONDITION_READY) is None:
        report.set(crd.CONDITION_READY, ready or False, reason, message)
    outcome.status["conditions"] = report.conditions
    outcome.retry_after = retry_after
    outcome.error = reason
    outcome.stalled = retry_after is None or reason in NEEDS_INTERVENTION
    return outcome


def waiting(
    report: Report, outcome: Outcome, verdict: receiver_exposure.Admission, *, retry_after: float
) -> Outcome:
    """Not Ready, not yet Synced, for `verdict.reason`: a wait, reported by a Normal Event."""
    if report.previous_reason(crd.CONDITION_SYNCED) != verdict.reason:
        outcome.event("Normal", verdict.reason, verdict.message)
    report.set(crd.CONDITION_SYNCED, False, verdict.reason, verdict.message)
    report.set(crd.CONDITION_READY, False, verdict.reason, verdict.message)
    outcome.status["conditions"] = report.conditions
    outcome.retry_after = retry_after
    outcome.error = verdict.reason
    return outcome


@dataclass(frozen=True)
class Converged:
    """Where a successful reconciliation left the remote webhook and its signing secret."""

    remote: RemoteWebhook
    secrets: SigningSecrets | None
    url: str
    last_rotation: datetime | None
    rotation_reason: str | None
    # A withheld heal (False: rate-limited; None: unverifiable), or None for no note.
    secret_note: rotation.SecretCheck | None = None


def success(
    metrics: OperatorMetrics,
    body: Mapping[str, Any],
    spec: WebhookSpec,
    done: Converged,
    report: Report,
    outcome: Outcome,
) -> Outcome:
    """`Synced=True`, `Ready` as the remote and the held secret say, the status fields and
    the webhook's metrics."""
    status = body.get("status") or {}
    remote, secrets, last_rotation = done.remote, done.secrets, done.last_rotation
    secret_note = done.secret_note
    next_rotation = (
        None if spec.rotation.paused else rotation.next_rotation_time(spec.rotation, last_rotation)
    )
    if remote.state == DISABLED_BY_FAILURES:
        ready, reason = False, REASON_DISABLED_BY_FAILURES
        message = (
            "Gemini disabled the webhook after failed deliveries; fix the endpoint, then set "
            "spec.state to Disabled and back to Enabled"
        )
        if status.get("remoteState") != DISABLED_BY_FAILURES:
            outcome.event("Warning", REASON_DISABLED_BY_FAILURES, message)
    elif remote.state != spec.remote_state:
        ready, reason = False, REASON_STATE_PENDING
        message = f"remote state is {remote.state}, desired {spec.remote_state}"
    elif secret_note is not None and secret_note.verified is False:
        ready, reason, message = False, secret_note.reason, secret_note.message
    elif secrets is None or secrets.current is None:
        ready, reason = False, rotation.SECRET_MISSING
        message = "the operator holds no signing secret for this webhook yet"
    else:
        ready, reason = True, REASON_READY
        message = f"webhook {remote.id} is {remote.state} and its signing secret is held"
        if done.rotation_reason and last_rotation is not None:  # the rotation chain's answer
            message += f"; last rotation: {done.rotation_reason} at {rfc3339(last_rotation)}"
        if secret_note is not None:  # unverifiable: Ready, and the reason says why unchecked
            reason, message = secret_note.reason, f"{message}; {secret_note.message}"
    report.set(crd.CONDITION_READY, ready, reason, message)
    report.set(crd.CONDITION_SYNCED, True, REASON_SYNCED, "the remote webhook matches the spec")
    outcome.stalled = not ready and reason in NEEDS_INTERVENTION
    _replica_state(spec, report, outcome)
    outcome.status.update(
        {
            "webhookId": remote.id,
            "remoteState": remote.state,
            "url": done.url,
            "signingSecretName": spec.signing_secret_name,
            "lastRotationTime": rfc3339(last_rotation) if last_rotation else None,
            "nextRotationTime": rfc3339(next_rotation) if next_rotation else None,
            "lastRotationReason": done.rotation_reason,
            "conditions": report.conditions,
        }
    )
    table = metrics.webhooks
    table.set_remote_state(spec.namespace, spec.name, remote.state)
    current = secrets.current if secrets is not None else None
    table.set_secret_created(spec.namespace, spec.name, current.created_at if current else None)
    table.set_next_rotation(spec.namespace, spec.name, next_rotation)
    return outcome


def _replica_state(spec: WebhookSpec, report: Report, outcome: Outcome) -> None:
    """`ReceiverStateShared` for several receiver replicas (a Warning Event when they keep
    state per pod, once per reason); no such condition otherwise."""
    try:
        state = replica_state.shared_state(spec.receiver)
    except CrdReceiverError:
        return  # reported by the receiver's render, which ran first
    type_ = crd.CONDITION_RECEIVER_STATE_SHARED
    if state is None:
        report.conditions = [c for c in report.conditions if c.get("type") != type_]
        return
    if not state.status and report.previous_reason(type_) != state.reason:
        outcome.event("Warning", state.reason, state.message)
    report.set(type_, state.status, state.reason, state.message)
