"""One reconciliation of a GeminiWebhook: observe, decide, act, report — in that order.

Crossplane's managed reconciler is the shape: this module is the one driver; the remote
webhook is behind an external client (`remote_webhook.RemoteClient`: observe, create,
update, rotate, delete), the secrets Gemini shows go to the signing Secret through a
publisher (`signing_publisher.SecretPublisher`), the receiver's objects are applied by
`receiver_apply`, and conditions, Events and status are built by `reconcile_report`.

1. Prepare: read the spec once into a `WebhookSpec` (invalid → `InvalidSpec`, no retry
   until it changes), render the receiver, read the API key and the signing Secret.
2. Observe the remote webhook from the shared inventory: by recorded ID, by the ID the
   Secret records, or by the marker (our UID) in its name — so a crash before the ID was
   recorded never leads to a second webhook; claims of other resources on it are checked.
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

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gemini_webhook_operator import conditions, job_key, receiver_resources, rotation
from gemini_webhook_operator.diff import RemoteWebhook
from gemini_webhook_operator.kube import SECRET, KubeError
from gemini_webhook_operator.model import (
    InvalidSpecError,
    WebhookSpec,
    marker_uid,
    parse,
    registration_problem,
)
from gemini_webhook_operator.receiver_apply import apply_receiver, expose
from gemini_webhook_operator.reconcile_context import Claim, Operator
from gemini_webhook_operator.reconcile_report import (
    REASON_ADOPTION_NOT_FOUND,
    REASON_API_KEY_MISSING,
    REASON_CLAIMED,
    REASON_INVALID_SPEC,
    REASON_KUBE_ERROR,
    REASON_KUBE_FORBIDDEN,
    REASON_RECEIVER_INVALID,
    REASON_SECRET_CONFLICT,
    Converged,
    Outcome,
    Report,
    failure,
    success,
    waiting,
)
from gemini_webhook_operator.remote_webhook import RemoteClient
from gemini_webhook_operator.signing_publisher import SecretPublisher
from gemini_webhook_operator.signing_store import (
    HeldSecrets,
    read_signing_secret,
    release_signing_secret,
)
from gemini_webhook_operator.webhookservice_errors import (
    NotFound,
    QuotaExceeded,
    WebhookServiceError,
)
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.crd_receiver import CrdReceiverError
from gemini_webhooks.contracts.signing_secret import SigningSecrets
from gemini_webhooks.contracts.times import parse_rfc3339, rfc3339

log = logging.getLogger("gemini_webhook_operator")

# Heal reasons (the `reason` label of the heals metric).
HEAL_RECREATED = "RemoteDeleted"
HEAL_FOUND_BY_MARKER = "FoundByMarker"
HEAL_DUPLICATE_DELETED = "DuplicateDeleted"

# Every `op.step(...)` boundary below, in order: where tests crash the operator
# (tests/fixtures/crashpoint.py, a test double of its process) to prove each one heals.
STEPS = ("create.called", "create.secret_written", "rotate.called", "rotate.secret_written")


@dataclass(frozen=True)
class _Run:
    """One reconciliation's inputs: the resource as read, its spec parsed once, and where
    its outcome is collected."""

    op: Operator
    body: Mapping[str, Any]
    spec: WebhookSpec
    status: Mapping[str, Any]
    report: Report
    outcome: Outcome
    claims: Mapping[str, list[Claim]]

    @property
    def now(self) -> datetime:
        return self.report.now

    def fail(self, reason: str, message: str, *, retry_after: float | None) -> Outcome:
        return failure(self.report, self.outcome, reason, message, retry_after=retry_after)


@dataclass(frozen=True)
class _Prepared:
    """What the cluster holds for the resource, read before the remote is observed."""

    receiver_objects: list[dict[str, Any]]
    client: RemoteClient
    held: HeldSecrets
    publisher: SecretPublisher
    url: str


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
) -> Outcome:
    """Reconcile one GeminiWebhook; never raises for expected failures."""
    now = op.clock.now()
    report = Report(body, now)
    outcome = await _reconcile(op, body, report, claims or {})
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
    report: Report,
    claims: Mapping[str, list[Claim]],
) -> Outcome:
    outcome = Outcome()
    try:
        spec = parse(dict(body))
    except InvalidSpecError as error:
        return failure(report, outcome, REASON_INVALID_SPEC, str(error), retry_after=None)
    problem = registration_problem(
        spec,
        default_api_base_url=op.services.default_base_url,
        cluster_domain=op.receiver_settings.cluster_domain,
    )
    if problem is not None:
        return failure(report, outcome, REASON_INVALID_SPEC, problem, retry_after=None)

    status = body.get("status") or {}
    run = _Run(op, body, spec, status, report, outcome, claims)
    try:
        return await _converge(run)
    except WebhookServiceError as error:
        retry = _retry_for(op, error)
        return failure(report, outcome, error.reason, str(error), retry_after=retry, ready=None)
    except KubeError as error:
        if error.status == 403:
            # RBAC refused a call: it stays refused until someone grants the rule, so wait
            # as for a refused API key rather than retrying at the error backoff.
            return failure(
                report,
                outcome,
                REASON_KUBE_FORBIDDEN,
                str(error),
                retry_after=op.settings.auth_retry,
                ready=None,
            )
        return failure(
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


async def _converge(run: _Run) -> Outcome:
    """Prepare → observe → (expose) → create or update → rotate or prune → apply → report."""
    prepared = await _prepare(run)
    if isinstance(prepared, Outcome):
        return prepared
    remote = await _observe(run, prepared)
    if isinstance(remote, Outcome):
        return remote

    op, spec = run.op, run.spec
    applied: set[tuple[str, str]] = set()
    if spec.exposed_url is not None and (remote is None or remote.uri != prepared.url):
        # Gemini learns the URL only once the route's controller has taken it.
        verdict, applied = await expose(op.kube, prepared.receiver_objects)
        if not verdict.admitted:
            await _apply_receiver(run, prepared, applied)
            return waiting(run.report, run.outcome, verdict, retry_after=op.settings.admission_poll)

    if remote is None:
        remote, shown = await _create(run, prepared)
        if shown is not None:  # the secret Gemini showed at creation is the only one
            converged = Converged(remote, shown, prepared.url, run.now, "Created")
        else:  # none shown: the rotation chain finds the secret missing
            converged = await _rotate_or_prune(run, prepared, remote, None)
    else:
        remote = await _update(run, prepared, remote)
        converged = await _rotate_or_prune(run, prepared, remote, prepared.held.secrets)

    await _apply_receiver(run, prepared, applied)
    return success(op.metrics, run.body, spec, converged, run.report, run.outcome)


async def _apply_receiver(run: _Run, prepared: _Prepared, applied: set[tuple[str, str]]) -> None:
    """The receiver's objects, less those already `applied`; its fingerprint to the status."""
    await apply_receiver(
        run.op.kube,
        prepared.receiver_objects,
        run.spec,
        run.status,
        run.outcome.status,
        skip=applied,
    )


async def _prepare(run: _Run) -> _Prepared | Outcome:
    """Render the receiver, read the API key and the signing Secret, ensure the job key."""
    op, spec, body = run.op, run.spec, run.body
    try:  # pure: a receiver that cannot be rendered stops us before any remote change
        receiver = spec.receiver
        receiver_objects = receiver_resources.render(body, receiver, op.receiver_settings)
    except (CrdReceiverError, receiver_resources.ReceiverRenderError) as error:
        return run.fail(REASON_RECEIVER_INVALID, str(error), retry_after=None)

    api_key = await op.kube.secret_value(spec.namespace, spec.api_key_secret, spec.api_key_key)
    if not api_key:
        message = (
            f"the API key Secret {spec.api_key_secret!r} (key {spec.api_key_key!r}) "
            "is missing or empty"
        )
        return run.fail(REASON_API_KEY_MISSING, message, retry_after=op.settings.api_key_retry)
    client = RemoteClient(op.services.for_key(api_key, spec.api_base_url))

    held = await read_signing_secret(op.kube, spec.namespace, spec.signing_secret_name, spec.uid)
    if held.exists and not held.owned:
        message = (
            f"the Secret {spec.signing_secret_name!r} exists and is not owned by this resource; "
            "choose another spec.signingSecretName or delete that Secret"
        )
        return run.fail(REASON_SECRET_CONFLICT, message, retry_after=None)

    if receiver_objects and receiver.dynamic.enabled:
        # Before the Deployment that mounts it; created once, never replaced.
        key = await job_key.ensure(op.kube, body)
        if key.action == "refuse":
            return run.fail(key.reason, key.message, retry_after=None)
        if key.action == "create":
            run.outcome.event("Normal", "JobKeyCreated", "created the receiver's dynamic job key")

    url = spec.url or spec.exposed_url
    if url is None:
        url = receiver_resources.public_url(
            body, receiver, cluster_domain=op.receiver_settings.cluster_domain
        )
    publisher = SecretPublisher(op.kube, body, spec.signing_secret_name)
    return _Prepared(receiver_objects, client, held, publisher, url)


async def _observe(run: _Run, prepared: _Prepared) -> RemoteWebhook | Outcome | None:
    """The remote webhook (None: there is none), unless another resource claims it or an
    adopted one does not exist."""
    op, spec, status, outcome = run.op, run.spec, run.status, run.outcome
    # A new sync request asks for the remote as it is now, not the shared listing.
    fresh = sync_request(run.body) not in (None, status.get("lastSyncRequest"))
    max_age = 0.0 if fresh else op.settings.drift_interval
    secrets = prepared.held.secrets
    recorded = status.get("webhookId")
    seen = await prepared.client.observe(
        spec,
        (str(recorded) if recorded else None, secrets.webhook_id if secrets else None),
        max_age,
    )
    for duplicate in seen.duplicates:  # keep one, delete the others (all ours)
        await prepared.client.delete_one(duplicate)
        op.metrics.heals.labels(HEAL_DUPLICATE_DELETED).inc()
        outcome.event("Warning", "DuplicateDeleted", f"deleted duplicate webhook {duplicate}")
    remote = seen.remote
    if seen.found_by_marker and remote is not None and not recorded:
        op.metrics.heals.labels(HEAL_FOUND_BY_MARKER).inc()
        outcome.event("Normal", "Healed", f"found webhook {remote.id} by its marker")

    if remote is None and spec.adopt_id:
        message = f"no webhook with ID {spec.adopt_id!r} exists for this API key"
        return run.fail(REASON_ADOPTION_NOT_FOUND, message, retry_after=op.settings.drift_interval)
    if remote is not None:
        claimants = [c for c in run.claims.get(remote.id, []) if c.uid != spec.uid]
        if claimants:
            created = str((run.body.get("metadata") or {}).get("creationTimestamp") or "")
            mine = Claim(spec.uid, spec.namespace, spec.name, created)
            owner = _claim_owner([*claimants, mine], remote)
            if owner.uid != spec.uid:
                message = (
                    f"webhook {remote.id} is managed by GeminiWebhook "
                    f"{owner.namespace}/{owner.name}; this resource leaves it alone"
                )
                return run.fail(REASON_CLAIMED, message, retry_after=None)
        if spec.adopt_id and status.get("webhookId") != remote.id:
            outcome.event("Normal", "Adopted", f"adopted webhook {remote.id}")
    return remote


async def _create(run: _Run, prepared: _Prepared) -> tuple[RemoteWebhook, SigningSecrets | None]:
    """Create the remote webhook; the secret Gemini shows (None: none) goes to the Secret
    before anything else."""
    op, spec, status, outcome = run.op, run.spec, run.status, run.outcome
    remote, secret = await prepared.client.create(spec, prepared.url)
    await op.step("create.called")
    secrets: SigningSecrets | None = None
    if secret:
        # The secret is shown only now: it goes to the Secret before anything else.
        secrets = await prepared.publisher.created(remote.id, secret, run.now, prepared.held)
        await op.step("create.secret_written")
    if not spec.enabled:
        remote = await prepared.client.disable(remote)
    if status.get("webhookId"):
        op.metrics.heals.labels(HEAL_RECREATED).inc()
        outcome.event(
            "Warning", "Recreated", f"webhook {status['webhookId']} was gone; created {remote.id}"
        )
    else:
        outcome.event("Normal", "Created", f"created webhook {remote.id}")
    return remote, secrets


async def _update(run: _Run, prepared: _Prepared, remote: RemoteWebhook) -> RemoteWebhook:
    """Update the fields of the remote webhook that differ from the spec, if any."""
    remote, fields = await prepared.client.update(run.spec, prepared.url, remote)
    if fields:
        run.outcome.event("Normal", "Updated", f"updated {', '.join(sorted(fields))}")
    return remote


async def _rotate_or_prune(
    run: _Run, prepared: _Prepared, remote: RemoteWebhook, secrets: SigningSecrets | None
) -> Converged:
    """Rotate when the decision chain says so; otherwise date and prune the held set."""
    op, spec, outcome, now, held = run.op, run.spec, run.outcome, run.now, prepared.held
    last_rotation = parse_rfc3339(run.status.get("lastRotationTime"))
    rotation_reason = run.status.get("lastRotationReason")
    if last_rotation is None and secrets is not None and secrets.current is not None:
        last_rotation = secrets.current.created_at
    annotations = (run.body.get("metadata") or {}).get("annotations") or {}
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
        remote, secrets = await _rotate(run, prepared, remote)
        outcome.event("Normal", "Rotated", f"{decision.reason}: {decision.message}")
        op.metrics.rotations.labels(decision.reason).inc()
        if decision.reason in rotation.HEAL_REASONS:
            op.metrics.heals.labels(decision.reason).inc()
            outcome.annotations[rotation.ANNOTATION_LAST_HEAL] = rfc3339(now)
        if spec.rotate_requested is not None:
            outcome.remove_annotations += [crd.ANNOTATION_ROTATE, crd.ANNOTATION_ROTATE_REVOCATION]
        return Converged(remote, secrets, prepared.url, now, decision.reason)
    secret_note = rotation.held_heal(given, decision)
    if secret_note is not None:
        op.metrics.heal_holds.labels(secret_note.reason).inc()
    if secrets is not None:
        secrets, removed = await prepared.publisher.pruned(secrets, remote, now, held)
        if removed:
            outcome.event("Normal", "SecretExpired", f"removed {removed} expired secret(s)")
    return Converged(remote, secrets, prepared.url, last_rotation, rotation_reason, secret_note)


async def _rotate(
    run: _Run, prepared: _Prepared, remote: RemoteWebhook
) -> tuple[RemoteWebhook, SigningSecrets]:
    """Rotate the remote's signing secret; the new one goes to the Secret first."""
    spec = run.spec
    immediate = rotation.immediate_revocation(
        spec.rotation, spec.rotate_requested, spec.rotate_revocation
    )
    new_secret = await prepared.client.rotate(remote, immediate=immediate)
    await run.op.step("rotate.called")
    # Shown only now: into the Secret before anything else.
    secrets, written = await prepared.publisher.rotated(
        prepared.held, remote, new_secret, run.now, immediate=immediate
    )
    await run.op.step("rotate.secret_written")
    refreshed = await prepared.client.refresh(remote)
    if refreshed is None:
        return remote, secrets
    return refreshed, await prepared.publisher.dated(secrets, refreshed, written)


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
    client = RemoteClient(op.services.for_key(api_key, spec.api_base_url))
    if not webhook_id:
        held = await read_signing_secret(op.kube, spec.namespace, secret_name, str(uid))
        webhook_id = held.secrets.webhook_id if held.secrets else None
    await client.delete(str(uid), webhook_id, op.settings.drift_interval)
    await op.kube.delete(*SECRET, spec.namespace, secret_name)
