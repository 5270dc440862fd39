"""One reconciliation of a GeminiWebhook: observe, decide, act — in that order.

1. Read the spec (invalid → `InvalidSpec`, no retry until it changes), the API key and the
   signing Secret.
2. Observe the remote webhook from the shared inventory: by recorded ID, by the ID the
   Secret records, or by the marker (our UID) in its name — so a crash before the ID was
   recorded never leads to a second webhook.
3. Converge: create it if absent (writing the one-time secret to the Secret *first*),
   update only the fields that differ, rotate when the decision chain says so (Secret
   first again), drop secrets whose grace has ended, apply the receiver's objects.
4. Report: status fields and the `Ready`/`Synced` conditions, and kstatus's
   `Reconciling`/`Stalled` derived from them (`conditions.with_progress`, with
   `observedGeneration`: every outcome, failures too), Events, metrics.

Everything here is plain asyncio; `handlers.py` adapts it to kopf. The decisions it calls
(`rotation`, `diff`, `signing`, `conditions`) are pure and tested on their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from opentelemetry import trace

from gemini_webhook_operator import (
    conditions,
    job_key,
    receiver_exposure,
    receiver_resources,
    replica_state,
    rotation,
    signing,
)
from gemini_webhook_operator.diff import DISABLED_BY_FAILURES, Desired, RemoteWebhook, changes
from gemini_webhook_operator.kube import Kube, KubeError, label_selector
from gemini_webhook_operator.metrics import OperatorMetrics
from gemini_webhook_operator.model import (
    InvalidSpecError,
    WebhookSpec,
    marker_uid,
    parse,
    registration_problem,
)
from gemini_webhook_operator.signing_store import (
    HeldSecrets,
    read_signing_secret,
    release_signing_secret,
    write_signing_secret,
)
from gemini_webhook_operator.webhookservice import WebhookService, WebhookServices
from gemini_webhook_operator.webhookservice_errors import (
    REASON_INVALID_API_KEY,
    REASON_PERMISSION_DENIED,
    NotFound,
    QuotaExceeded,
    WebhookServiceError,
)
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts import label_selector as label_selectors
from gemini_webhooks.contracts.crd_receiver import CrdReceiverError, receiver_spec
from gemini_webhooks.contracts.signing_secret import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SigningSecrets,
)
from gemini_webhooks.contracts.times import parse_rfc3339, rfc3339

log = logging.getLogger("gemini_webhook_operator")

# Condition reasons of the reconciler itself (WebhookService failures bring their own).
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

# Heal reasons (the `reason` label of the heals metric).
HEAL_RECREATED = "RemoteDeleted"
HEAL_FOUND_BY_MARKER = "FoundByMarker"
HEAL_DUPLICATE_DELETED = "DuplicateDeleted"


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


StepHook = Callable[[str], Awaitable[None]]
# Every `op.step(...)` boundary below, in order: where tests crash the operator
# (tests/fixtures/crashpoint.py, a test double of its process) to prove each one heals.
STEPS = ("create.called", "create.secret_written", "rotate.called", "rotate.secret_written")


async def _no_step(step: str) -> None:
    return None


@dataclass(frozen=True)
class Claim:
    """A resource's claim on a remote webhook ID (from the kopf index)."""

    uid: str
    namespace: str
    name: str
    created: str


DEFAULT_MAX_CONCURRENT_RECONCILES = 200


@dataclass
class Settings:
    drift_interval: float = 300.0
    api_key_retry: float = 60.0
    auth_retry: float = 300.0
    error_backoff: float = 10.0
    heal_interval: float = 3600.0  # at most one healing rotation per resource this often
    admission_poll: float = 5.0  # while an exposed route waits for its controller
    # Reconciliations (create, update, resume, drift) running at once; more wait for a slot
    # (controller-runtime's MaxConcurrentReconciles). A thousand resources arriving together
    # otherwise all hold their requests and responses at the same time: bench/operator
    # --kube real, 1,000 resources, peak RSS 195-202 -> 192-196 MiB at 200 slots, Ready as fast.
    max_concurrent_reconciles: int = DEFAULT_MAX_CONCURRENT_RECONCILES


TRACER_NAME = "gemini_webhook_operator"


@dataclass
class Operator:
    """Everything a reconciliation needs (kept in kopf's memo)."""

    kube: Kube
    services: WebhookServices
    metrics: OperatorMetrics
    clock: Clock = field(default_factory=SystemClock)
    settings: Settings = field(default_factory=Settings)
    receiver_settings: receiver_resources.ReceiverSettings = field(
        default_factory=receiver_resources.ReceiverSettings
    )
    step: StepHook = _no_step  # awaited at each of STEPS; cli.run(step=...) sets it
    # Spans of each reconciliation: the global provider's (a no-op one unless the OTEL_*
    # environment turned tracing on, `gemini_webhooks.tracing`).
    tracer: trace.Tracer = field(default_factory=lambda: trace.get_tracer(TRACER_NAME))
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Per resource uid: resourceVersions that our own last writes left behind.
    superseded: dict[str, set[str]] = field(default_factory=dict)
    # Per resource uid: the status fields the last reconciliation wrote, and when
    # (time.monotonic()): a copy that does not show them yet predates those writes.
    written_status: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    reconcile_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.reconcile_slots = asyncio.Semaphore(self.settings.max_concurrent_reconciles)

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())


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


class _Report:
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


def _failure(
    report: _Report,
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


def _desired(spec: WebhookSpec, url: str) -> Desired:
    return Desired(spec.remote_name, url, spec.events, spec.remote_state)


def _claim_owner(claims: list[Claim], remote: RemoteWebhook) -> Claim:
    marked = marker_uid(remote.name)
    for claim in claims:
        if claim.uid == marked:
            return claim
    return min(claims, key=lambda c: (c.created, c.uid))


async def reconcile(
    op: Operator,
    body: Mapping[str, Any],
    *,
    claims: Mapping[str, list[Claim]] | None = None,
    listing_max_age: float = 0.0,
) -> Outcome:
    """Reconcile one GeminiWebhook; never raises for expected failures. `listing_max_age`:
    read the Secrets and the receiver's objects from the listings per namespace shared by
    all resources if they are at most this old (the drift check's way; a change reads afresh)."""
    now = op.clock.now()
    report = _Report(body, now)
    outcome = await _reconcile(op, body, report, claims, listing_max_age)
    # Whatever the outcome, this generation was observed: the conditions say how it went.
    outcome.status["conditions"] = conditions.with_progress(
        outcome.status.get("conditions") or report.conditions,
        stalled=outcome.stalled,
        generation=report.generation,
        now=now,
    )
    outcome.status["observedGeneration"] = report.generation
    sync_requested = sync_request(body)
    if sync_requested is not None:
        outcome.status["lastSyncRequest"] = sync_requested
    return outcome


def sync_request(body: Mapping[str, Any]) -> str | None:
    """The sync annotation's value: a reconciliation, whatever its outcome, handles it."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(crd.ANNOTATION_SYNC_REQUESTED)
    return None if value is None else str(value)


async def _reconcile(
    op: Operator,
    body: Mapping[str, Any],
    report: _Report,
    claims: Mapping[str, list[Claim]] | None,
    listing_max_age: float,
) -> Outcome:
    now = report.now
    outcome = Outcome()
    status = body.get("status") or {}
    try:
        spec = parse(dict(body))
    except InvalidSpecError as error:
        return _failure(report, outcome, REASON_INVALID_SPEC, str(error), retry_after=None)
    problem = registration_problem(
        spec,
        default_api_base_url=op.services.default_base_url,
        cluster_domain=op.receiver_settings.cluster_domain,
    )
    if problem is not None:
        return _failure(report, outcome, REASON_INVALID_SPEC, problem, retry_after=None)

    try:
        return await _converge(
            op, body, spec, status, report, outcome, claims or {}, now, listing_max_age
        )
    except WebhookServiceError as error:
        retry = _retry_for(op, error)
        return _failure(report, outcome, error.reason, str(error), retry_after=retry, ready=None)
    except KubeError as error:
        if error.status == 403:
            # RBAC refused a call: it stays refused until someone grants the rule, so wait
            # as for a refused API key rather than retrying at the error backoff.
            return _failure(
                report,
                outcome,
                REASON_KUBE_FORBIDDEN,
                str(error),
                retry_after=op.settings.auth_retry,
                ready=None,
            )
        return _failure(
            report,
            outcome,
            REASON_KUBE_ERROR,
            str(error),
            retry_after=op.settings.error_backoff,
            ready=None,
        )


def _retry_for(op: Operator, error: WebhookServiceError) -> float | None:
    if isinstance(error, QuotaExceeded):
        return max(1.0, error.retry_after)
    if isinstance(error, NotFound):
        return 1.0  # it vanished between observing and acting: observe again soon
    if error.reason in ("InvalidAPIKey", "PermissionDenied"):
        return op.settings.auth_retry
    if not error.retryable:
        return None  # a remote validation error waits for a spec change (or the drift check)
    return op.settings.error_backoff


async def _converge(
    op: Operator,
    body: Mapping[str, Any],
    spec: WebhookSpec,
    status: Mapping[str, Any],
    report: _Report,
    outcome: Outcome,
    claims: Mapping[str, list[Claim]],
    now: datetime,
    listing_max_age: float,
) -> Outcome:
    try:  # pure: a receiver that cannot be rendered stops us before any remote change
        receiver_objects = receiver_resources.render(body, op.receiver_settings)
    except receiver_resources.ReceiverRenderError as error:
        return _failure(report, outcome, REASON_RECEIVER_INVALID, str(error), retry_after=None)

    api_key = await op.kube.secret_value(
        spec.namespace, spec.api_key_secret, spec.api_key_key, max_age=listing_max_age
    )
    if not api_key:
        message = (
            f"the API key Secret {spec.api_key_secret!r} (key {spec.api_key_key!r}) "
            "is missing or empty"
        )
        return _failure(
            report, outcome, REASON_API_KEY_MISSING, message, retry_after=op.settings.api_key_retry
        )
    service = op.services.for_key(api_key, spec.api_base_url)

    held = await read_signing_secret(
        op.kube, spec.namespace, spec.signing_secret_name, spec.uid, max_age=listing_max_age
    )
    if held.exists and not held.owned:
        message = (
            f"the Secret {spec.signing_secret_name!r} exists and is not owned by this resource; "
            "choose another spec.signingSecretName or delete that Secret"
        )
        return _failure(report, outcome, REASON_SECRET_CONFLICT, message, retry_after=None)
    secrets = held.secrets

    if receiver_objects and receiver_spec(body.get("spec") or {}).dynamic.enabled:
        # Before the Deployment that mounts it; created once, never replaced.
        key = await job_key.ensure(op.kube, body, max_age=listing_max_age)
        if key.action == "refuse":
            return _failure(report, outcome, key.reason, key.message, retry_after=None)
        if key.action == "create":
            outcome.event("Normal", "JobKeyCreated", "created the receiver's dynamic job key")

    url = spec.url or spec.exposed_url
    if url is None:
        url = receiver_resources.public_url(
            body, cluster_domain=op.receiver_settings.cluster_domain
        )

    # A new sync request asks for the remote as it is now, not the shared listing.
    fresh = sync_request(body) not in (None, status.get("lastSyncRequest"))
    max_age = 0.0 if fresh else op.settings.drift_interval
    remote = await _observe(op, service, spec, status, secrets, outcome, max_age)
    if remote is None and spec.adopt_id:
        message = f"no webhook with ID {spec.adopt_id!r} exists for this API key"
        return _failure(
            report,
            outcome,
            REASON_ADOPTION_NOT_FOUND,
            message,
            retry_after=op.settings.drift_interval,
        )
    if remote is not None:
        claimants = [c for c in claims.get(remote.id, []) if c.uid != spec.uid]
        if claimants:
            owner = _claim_owner(
                [*claimants, Claim(spec.uid, spec.namespace, spec.name, _created(body))], remote
            )
            if owner.uid != spec.uid:
                message = (
                    f"webhook {remote.id} is managed by GeminiWebhook "
                    f"{owner.namespace}/{owner.name}; this resource leaves it alone"
                )
                return _failure(report, outcome, REASON_CLAIMED, message, retry_after=None)

    if remote is not None and spec.adopt_id and status.get("webhookId") != remote.id:
        outcome.event("Normal", "Adopted", f"adopted webhook {remote.id}")

    applied: set[tuple[str, str]] = set()
    if spec.exposed_url is not None and (remote is None or remote.uri != url):
        # Gemini learns the URL only once the route's controller has taken it.
        verdict, applied = await _expose(op, receiver_objects)
        if not verdict.admitted:
            await _apply_receiver(op, receiver_objects, spec, status, outcome, skip=applied)
            return _waiting(report, outcome, verdict, retry_after=op.settings.admission_poll)

    last_rotation = parse_rfc3339(status.get("lastRotationTime"))
    rotation_reason = status.get("lastRotationReason")
    just_created = False
    if remote is None:
        remote, secrets = await _create(op, body, spec, service, url, status, held, outcome, now)
        just_created = secrets is not None
        if just_created:
            last_rotation, rotation_reason = now, "Created"
    else:
        fields = changes(_desired(spec, url), remote)
        if fields:
            remote = await service.update(remote.id, fields)
            outcome.event("Normal", "Updated", f"updated {', '.join(sorted(fields))}")

    if last_rotation is None and secrets is not None and secrets.current is not None:
        last_rotation = secrets.current.created_at

    secret_note: rotation.SecretCheck | None = None
    if not just_created:
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        given = rotation.RotationInput(
            now=now,
            policy=spec.rotation,
            webhook_id=remote.id,
            held=secrets,
            held_problem=held.problem,
            remote_truncated=remote.truncated_secrets,
            last_rotation=last_rotation,
            requested=spec.rotate_requested,
            last_heal=parse_rfc3339(annotations.get(rotation.ANNOTATION_LAST_HEAL)),
            heal_interval=timedelta(seconds=op.settings.heal_interval),
        )
        decision = rotation.decide(given)
        if isinstance(decision, rotation.Rotate):
            remote, secrets = await _rotate(op, body, spec, service, remote, held, decision, now)
            last_rotation, rotation_reason = now, decision.reason
            outcome.event("Normal", "Rotated", f"{decision.reason}: {decision.message}")
            op.metrics.rotations.labels(decision.reason).inc()
            if decision.reason in rotation.HEAL_REASONS:
                op.metrics.heals.labels(decision.reason).inc()
                outcome.annotations[rotation.ANNOTATION_LAST_HEAL] = rfc3339(now)
            if spec.rotate_requested is not None:
                outcome.remove_annotations += [
                    crd.ANNOTATION_ROTATE,
                    crd.ANNOTATION_ROTATE_REVOCATION,
                ]
        else:
            secret_note = rotation.held_heal(given, decision)
            if secret_note is not None:
                op.metrics.heal_holds.labels(secret_note.reason).inc()
        if secrets is not None and not isinstance(decision, rotation.Rotate):
            dated = signing.with_remote_expiries(
                secrets, remote.truncated_secrets, remote.secret_expiries
            )
            kept = signing.pruned(dated or secrets, now, remote.truncated_secrets) or dated
            if kept is not None:
                written = await write_signing_secret(
                    op.kube, body, spec.signing_secret_name, kept, held
                )
                removed = len(secrets.secrets) - len(kept.secrets)
                if removed:
                    outcome.event("Normal", "SecretExpired", f"removed {removed} expired secret(s)")
                secrets = written.secrets or kept

    await _apply_receiver(
        op, receiver_objects, spec, status, outcome, skip=applied, max_age=listing_max_age
    )
    return _report_success(
        op,
        body,
        spec,
        remote,
        secrets,
        url,
        last_rotation,
        rotation_reason,
        report,
        outcome,
        secret_note,
    )


def _created(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("creationTimestamp") or "")


async def _observe(
    op: Operator,
    service: WebhookService,
    spec: WebhookSpec,
    status: Mapping[str, Any],
    secrets: SigningSecrets | None,
    outcome: Outcome,
    max_age: float,
) -> RemoteWebhook | None:
    """Find this resource's remote webhook, or None if there is none, in the shared listing
    of the remote webhooks if it is at most `max_age` seconds old."""
    if spec.adopt_id:
        found = await service.find(spec.adopt_id, max_age)
        if found is None:
            try:  # adopted webhooks may be newer than the shared inventory
                found = await service.get(spec.adopt_id)
            except NotFound:
                return None
        return found
    for candidate in (status.get("webhookId"), secrets.webhook_id if secrets else None):
        if candidate:
            found = await service.find(str(candidate), max_age)
            if found is not None:
                return found
    mine = await service.find_by_marker(lambda w: marker_uid(w.name) == spec.uid, max_age)
    if not mine:
        return None
    # A crash between creating a webhook and recording it leaves it findable by our marker;
    # more than one means several such crashes: keep one, delete the others (all ours).
    mine.sort(key=lambda w: w.id)
    keep, *extra = mine
    for duplicate in extra:
        await service.delete(duplicate.id)
        op.metrics.heals.labels(HEAL_DUPLICATE_DELETED).inc()
        outcome.event("Warning", "DuplicateDeleted", f"deleted duplicate webhook {duplicate.id}")
    if not status.get("webhookId"):
        op.metrics.heals.labels(HEAL_FOUND_BY_MARKER).inc()
        outcome.event("Normal", "Healed", f"found webhook {keep.id} by its marker")
    return keep


async def _create(
    op: Operator,
    body: Mapping[str, Any],
    spec: WebhookSpec,
    service: WebhookService,
    url: str,
    status: Mapping[str, Any],
    held: HeldSecrets,
    outcome: Outcome,
    now: datetime,
) -> tuple[RemoteWebhook, SigningSecrets | None]:
    remote, secret = await service.create(spec.remote_name, url, spec.events)
    await op.step("create.called")
    secrets: SigningSecrets | None = None
    if secret:
        # The secret is shown only now: it goes to the Secret before anything else.
        fresh = signing.fresh(remote.id, secret, now)
        written = await write_signing_secret(op.kube, body, spec.signing_secret_name, fresh, held)
        secrets = written.secrets or fresh
        await op.step("create.secret_written")
    if not spec.enabled:
        remote = await service.update(remote.id, {"state": "disabled"})
    if status.get("webhookId"):
        op.metrics.heals.labels(HEAL_RECREATED).inc()
        outcome.event(
            "Warning", "Recreated", f"webhook {status['webhookId']} was gone; created {remote.id}"
        )
    else:
        outcome.event("Normal", "Created", f"created webhook {remote.id}")
    return remote, secrets


async def _rotate(
    op: Operator,
    body: Mapping[str, Any],
    spec: WebhookSpec,
    service: WebhookService,
    remote: RemoteWebhook,
    held: HeldSecrets,
    decision: rotation.Rotate,
    now: datetime,
) -> tuple[RemoteWebhook, SigningSecrets]:
    immediate = rotation.immediate_revocation(
        spec.rotation, spec.rotate_requested, spec.rotate_revocation
    )
    new_secret = await service.rotate(remote.id, signing.revocation_behavior(immediate))
    await op.step("rotate.called")
    rotated = signing.rotated(
        held.secrets,
        remote.id,
        new_secret,
        now,
        immediate=immediate,
        remote_truncated=remote.truncated_secrets,
    )
    # Shown only now: into the Secret before anything else.
    written = await write_signing_secret(op.kube, body, spec.signing_secret_name, rotated, held)
    secrets = written.secrets or rotated
    await op.step("rotate.secret_written")
    try:
        remote = await service.get(remote.id)
    except WebhookServiceError:
        service.invalidate()
        return remote, secrets
    # The grace end Gemini reports for the previous secret, not the one we assumed.
    dated = signing.with_remote_expiries(secrets, remote.truncated_secrets, remote.secret_expiries)
    if dated is not None:
        name = spec.signing_secret_name
        secrets = (await write_signing_secret(op.kube, body, name, dated, written)).secrets or dated
    return remote, secrets


async def _expose(
    op: Operator, objects: list[dict[str, Any]]
) -> tuple[receiver_exposure.Admission, set[tuple[str, str]]]:
    """Apply the receiver's route and read whether its controller has admitted it."""
    route = next(o for o in objects if o["kind"] in receiver_exposure.ROUTE_KINDS)
    stored = await op.kube.apply(route)
    return (
        receiver_exposure.admission(route["kind"], stored),
        {(route["kind"], route["metadata"]["name"])},
    )


def _waiting(
    report: _Report, outcome: Outcome, verdict: receiver_exposure.Admission, *, retry_after: float
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


async def _apply_receiver(
    op: Operator,
    objects: list[dict[str, Any]],
    spec: WebhookSpec,
    status: Mapping[str, Any],
    outcome: Outcome,
    *,
    skip: AbstractSet[tuple[str, str]] = frozenset(),
    max_age: float = 0.0,
) -> None:
    outcome.status["receiverFingerprint"] = (
        receiver_resources.fingerprint(objects) if objects else None
    )
    if not objects and not status.get("receiverFingerprint"):
        return
    # What exists, per kind: on a drift check from the listings of all receivers in the
    # namespace that every resource shares (one list per kind per interval); otherwise afresh.
    ours = receiver_resources.labels(spec.name)
    shared = max_age > 0
    selector = label_selector(RECEIVERS_SELECTOR if shared else ours)
    is_ours = label_selectors.from_labels(ours)
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in RECEIVER_KINDS:
        for existing in await op.kube.list(kind, spec.namespace, selector, max_age=max_age):
            if is_ours.selects(existing):
                live[(kind, existing["metadata"]["name"])] = existing
    # Unchanged rendering and a live object that holds every field we render: no call.
    unchanged = status.get("receiverFingerprint") == outcome.status["receiverFingerprint"]
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in skip or (unchanged and key in live and holds(live[key], _fields(obj))):
            continue
        await op.kube.apply(obj)
    # Prune what an earlier spec rendered and this one does not (e.g. the PDB at 1 replica).
    wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for (kind, name), existing in live.items():
        owners = existing["metadata"].get("ownerReferences") or []
        if (kind, name) not in wanted and any(o.get("uid") == spec.uid for o in owners):
            await op.kube.delete(kind, spec.namespace, name)


def _fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object's fields less its type (the items of a list response carry none)."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def holds(live: Any, applied: Any) -> bool:
    """Whether `live` has every field of `applied` as applied (fields the API server adds,
    such as defaults and status, are not ours and are not compared)."""
    if isinstance(applied, dict):
        return isinstance(live, dict) and all(holds(live.get(k), v) for k, v in applied.items())
    if isinstance(applied, list):
        return (
            isinstance(live, list)
            and len(live) == len(applied)
            and all(holds(a, b) for a, b in zip(live, applied, strict=True))
        )
    return bool(live == applied)


RECEIVERS_SELECTOR = {
    LABEL_MANAGED_BY: MANAGED_BY,
    LABEL_COMPONENT: receiver_resources.COMPONENT_RECEIVER,
}


RECEIVER_KINDS = (
    "Ingress",
    "HTTPRoute",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Deployment",
    "Service",
    "ConfigMap",
    "RoleBinding",
    "Role",
    "ServiceAccount",
)


def _report_success(
    op: Operator,
    body: Mapping[str, Any],
    spec: WebhookSpec,
    remote: RemoteWebhook,
    secrets: SigningSecrets | None,
    url: str,
    last_rotation: datetime | None,
    rotation_reason: str | None,
    report: _Report,
    outcome: Outcome,
    secret_note: rotation.SecretCheck | None = None,
) -> Outcome:
    """`secret_note`: a withheld heal (False: rate-limited; None: unverifiable)."""
    status = body.get("status") or {}
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
        if rotation_reason and last_rotation is not None:  # the rotation chain's answer
            message += f"; last rotation: {rotation_reason} at {rfc3339(last_rotation)}"
        if secret_note is not None:  # unverifiable: Ready, and the reason says why unchecked
            reason, message = secret_note.reason, f"{message}; {secret_note.message}"
    report.set(crd.CONDITION_READY, ready, reason, message)
    report.set(crd.CONDITION_SYNCED, True, REASON_SYNCED, "the remote webhook matches the spec")
    outcome.stalled = not ready and reason in NEEDS_INTERVENTION
    _report_replica_state(body, report, outcome)
    outcome.status.update(
        {
            "webhookId": remote.id,
            "remoteState": remote.state,
            "url": url,
            "signingSecretName": spec.signing_secret_name,
            "lastRotationTime": rfc3339(last_rotation) if last_rotation else None,
            "nextRotationTime": rfc3339(next_rotation) if next_rotation else None,
            "lastRotationReason": rotation_reason,
            "conditions": report.conditions,
        }
    )
    table = op.metrics.webhooks
    table.set_remote_state(spec.namespace, spec.name, remote.state)
    current = secrets.current if secrets is not None else None
    table.set_secret_created(spec.namespace, spec.name, current.created_at if current else None)
    table.set_next_rotation(spec.namespace, spec.name, next_rotation)
    return outcome


def _report_replica_state(body: Mapping[str, Any], report: _Report, outcome: Outcome) -> None:
    """`ReceiverStateShared` for several receiver replicas (a Warning Event when they keep
    state per pod, once per reason); no such condition otherwise."""
    try:
        state = replica_state.shared_state(receiver_spec(body.get("spec") or {}))
    except CrdReceiverError:
        return  # reported by the receiver's render, which ran first
    type_ = crd.CONDITION_RECEIVER_STATE_SHARED
    if state is None:
        report.conditions = [c for c in report.conditions if c.get("type") != type_]
        return
    if not state.status and report.previous_reason(type_) != state.reason:
        outcome.event("Warning", state.reason, state.message)
    report.set(type_, state.status, state.reason, state.message)


async def delete(op: Operator, body: Mapping[str, Any]) -> None:
    """The finalizer: delete the remote webhook (policy Delete) or let it go (Orphan)."""
    metadata = body.get("metadata") or {}
    spec_body = body.get("spec") or {}
    status = body.get("status") or {}
    namespace, name, uid = metadata.get("namespace"), metadata.get("name"), metadata.get("uid")
    op.metrics.webhooks.forget(str(namespace), str(name))
    try:
        spec = parse(dict(body))
    except InvalidSpecError:
        return  # nothing was ever created for a resource that never validated
    secret_name = spec.signing_secret_name
    if spec.deletion_policy == "Orphan":
        await release_signing_secret(op.kube, spec.namespace, secret_name, spec.uid)
        return
    webhook_id = status.get("webhookId") or spec_body.get("webhookId")
    api_key = await op.kube.secret_value(spec.namespace, spec.api_key_secret, spec.api_key_key)
    if not api_key:
        raise WebhookServiceError("cannot delete the remote webhook: the API key Secret is missing")
    service = op.services.for_key(api_key, spec.api_base_url)
    if not webhook_id:
        held = await read_signing_secret(op.kube, spec.namespace, secret_name, str(uid))
        webhook_id = held.secrets.webhook_id if held.secrets else None
    ids = {webhook_id} if webhook_id else set()
    mine = await service.find_by_marker(
        lambda w: marker_uid(w.name) == uid, op.settings.drift_interval
    )
    ids.update(w.id for w in mine)
    for webhook in sorted(i for i in ids if i):
        await service.delete(webhook)
    await op.kube.delete("Secret", spec.namespace, secret_name)
