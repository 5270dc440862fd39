"""kopf handlers — thin: each takes what kopf gives, calls the reconciler, writes back.

`build_registry(config)` registers everything on a fresh registry, so the CLI and the tests
run the very same handlers (`kopf.operator(registry=..., settings=..., memo=...)`).
The memo carries the `Operator` (clients, clock, metrics) under `memo.operator`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from opentelemetry.trace import Status, StatusCode

from gemini_webhook_operator import conditions, finalizer, health, health_checker, kopf_state
from gemini_webhook_operator.drift import (
    DriftRunner,
    DriftSchedule,
    ErrorBackoff,
    drift_checked,
    index_reader,
    retried,
)
from gemini_webhook_operator.finalizer import FINALIZER
from gemini_webhook_operator.kopf_state import HANDLER_RECONCILE
from gemini_webhook_operator.kube import KubeError
from gemini_webhook_operator.model import InvalidSpecError, WebhookSpec, parse
from gemini_webhook_operator.reconcile_context import Claim, Operator
from gemini_webhook_operator.reconcile_report import REASON_INVALID_SPEC, REASON_KUBE_ERROR
from gemini_webhook_operator.reconciler import reconcile
from gemini_webhook_operator.rotation import ANNOTATION_LAST_HEAL
from gemini_webhook_operator.signing_store import current_fingerprint
from gemini_webhook_operator.watch_cache import compact
from gemini_webhook_operator.write_back import write_back, write_status
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import API_GROUP, MANAGED_BY
from gemini_webhooks.contracts.times import parse_rfc3339

logger = logging.getLogger(__name__)

RESOURCE = (API_GROUP, crd.VERSION, crd.PLURAL)
__all__ = ["FINALIZER", "build_registry", "configure"]
# How long kopf keeps a resource's worker once its events stop (kopf's default: 5 s). An
# idle worker holds its task, its queue and the last watch event it handled, the whole
# decoded object: a thousand resources arriving together kept 200-860 of them through the
# peak (bench/operator --kube real, 1,000 resources, Ready in ~20 s: peak RSS 161-162 MiB,
# 156 at 0.5 s, 144-151 at 0.1 s). A later event starts a new worker; kopf still waits for
# its own patch's echo (`consistency_timeout`) whatever this is.
WORKER_IDLE_SECONDS = 0.1
# How many resources kopf works on at once (per watch stream); None: kopf's default, no bound.
# No bound is safe with kopf 1.45 (nolar/kopf#1243): with `@kopf.index` handlers (ours has
# three) each worker of the first listing waits until every listed resource is indexed, so
# an operator starting beside more resources than the bound deadlocks (CI's "Unprocessed
# streams left", .ci/run of dd5c82f; tests/operator/test_worker_bound.py). Nothing of ours
# waits in a worker (changes, their retries and deletions run on `drift.py`'s scheduler),
# and so with no bound the peak RSS of 1,000 resources is what a bound of 50 gave (137 MiB,
# docs/operator.md).
WORKER_LIMIT: int | None = None
# How long after an unexpected exception (a bug) a change is tried again, one step further
# per failure in a row, on the operator's scheduler (kopf retried a handler's bug after 60 s,
# asleep in its worker); also kopf's delays after errors of its own processing.
ERROR_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class HandlerConfig:
    drift_interval: float = 300.0
    drift_jitter: float = 0.1  # fraction of the interval
    health_tick: float = 30.0  # how often each resource's health check is considered


@dataclass
class _HealthMemos:
    by_uid: dict[str, health.HealthMemo] = field(default_factory=dict)


def configure(settings: kopf.OperatorSettings) -> None:
    """Our kopf settings: its state as `kopf_state` keeps it (the diff base in memory, so
    that a change costs no write of kopf's own; our request annotations are changes, the
    operator's own bookkeeping annotation, the last heal's time, is not); kopf's
    finalizer not ours (`finalizer.py`: kopf needs none, and would take ours off); no
    Kubernetes Event per kopf log line (a retry loop would post one per attempt):
    the reconciler posts its own, deduplicated — under our name (`From:` in `kubectl
    describe`, the Events' `reportingComponent` and `source.component`), not kopf's; an
    object's worker let go soon after its events stop (`WORKER_IDLE_SECONDS`), and at most
    `WORKER_LIMIT` of them at once (None: no bound)."""
    kopf_state.configure_storages(settings, ignored=[ANNOTATION_LAST_HEAL])
    settings.persistence.finalizer = finalizer.KOPF_FINALIZER
    settings.posting.level = logging.CRITICAL
    settings.posting.reporting_component = MANAGED_BY
    settings.posting.event_name_prefix = f"{MANAGED_BY}-"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.queueing.error_delays = ERROR_DELAYS
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    settings.queueing.worker_limit = WORKER_LIMIT


class _ClaimsView(Mapping[str, list[Claim]]):
    """The `webhook_claims` kopf index as the reconciler wants it."""

    def __init__(self, index: Any) -> None:
        self._index = index

    def __getitem__(self, key: str) -> list[Claim]:
        return list(self._index[key])

    def __iter__(self) -> Any:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return list(self._index[key])
        except KeyError:
            return default


async def _run(
    handler: str,
    body: kopf.Body,
    memo: Any,
    webhook_claims: Any,
    *,
    current: Callable[[], Mapping[str, Any] | None] | None = None,
) -> bool:
    """Reconcile the resource and write back what changed; whether it did. `current`, for a
    scheduled retry: the resource as it is now, read once its lock is held (None: a newer
    reconciliation superseded this retry, or the resource is gone), so that the newer spec
    wins and a stale retry writes nothing."""
    op: Operator = memo.operator
    if body.metadata.get("deletionTimestamp"):
        return False  # the finalizer owns a resource being deleted: never recreate anything
    uid = str(body.metadata.uid)
    # The per-resource lock first, then one of the operator's reconcile slots: a
    # reconciliation waiting for its resource's lock holds no slot.
    async with op.lock(uid), op.reconcile_slots:
        if current is not None:
            latest = current()
            if latest is None:
                return False
            body = kopf.Body(cast(kopf.RawBody, latest))
        # kopf's body is a live view that its watch updates in place, also while we await:
        # reconcile one copy. Conditions derived from the resource as it was, then
        # compared with it as it is, once put back a condition the health timer had just
        # changed (DeliveryVerified, seen on kube-apiserver).
        body = kopf.Body(cast(kopf.RawBody, copy.deepcopy(dict(op.own_writes.newest(body)))))
        if body.metadata.get("deletionTimestamp"):
            return False  # our own last write saw the deletion start
        body = await finalizer.hold(op, body)  # before anything remote is made for it
        with (
            op.tracer.start_as_current_span(
                "reconcile",
                attributes={
                    "k8s.namespace.name": str(body.metadata.namespace),
                    "gemini.webhook.resource": str(body.metadata.name),
                    "gemini.reconcile.trigger": handler,
                },
                record_exception=False,  # a TemporaryError's message is not ours to export
                set_status_on_exception=False,
            ) as span,
            op.metrics.time_reconcile(handler) as record,
        ):
            outcome = await reconcile(op, body, claims=_ClaimsView(webhook_claims))
            try:
                await write_back(op.kube, body, outcome, op.own_writes)
            except KubeError as error:
                record.failed(REASON_KUBE_ERROR, retry=True)
                span.set_status(Status(StatusCode.ERROR, REASON_KUBE_ERROR))
                raise kopf.TemporaryError(f"status not written: {error}", delay=10) from None
            if outcome.error is not None:
                record.failed(outcome.error, retry=outcome.retry_after is not None)
                span.set_status(Status(StatusCode.ERROR, outcome.error))
            op.metrics.webhooks.set_conditions(
                str(body.metadata.namespace),
                str(body.metadata.name),
                outcome.status.get("conditions") or [],
            )
            if outcome.retry_after is not None:
                raise kopf.TemporaryError(
                    f"{outcome.error or 'retry'}: will retry", delay=outcome.retry_after
                )
    return True


def _drift_runner(
    config: HandlerConfig, memo: Any, bodies_index: Any, webhook_claims: Any
) -> DriftRunner:
    async def check(body: kopf.Body) -> None:
        await _run("drift", body, memo, webhook_claims)

    schedule = DriftSchedule(config.drift_interval, config.drift_jitter)
    return DriftRunner(
        schedule, retried("drift check", check), _checked(bodies_index), clock=time.monotonic
    )


def _checked(bodies_index: Any) -> Callable[[str], Mapping[str, Any] | None]:
    """A resource's body from the `drift_bodies` index, if it is drift- and health-checked
    (`drift_checked`; None: not, or not there)."""
    indexed = index_reader(bodies_index)

    def body_of(uid: str) -> Mapping[str, Any] | None:
        body = indexed(uid)
        return body if body is not None and drift_checked(body["metadata"], FINALIZER) else None

    return body_of


def _retry_runner(
    memo: Any, bodies_index: Any, webhook_claims: Any, backoff: ErrorBackoff
) -> DriftRunner:
    """The changes and their retries: each attempt reconciles the resource as kopf's watch
    last delivered it, and answers a ping request after."""
    indexed = index_reader(bodies_index)

    async def attempt(body: kopf.Body) -> None:
        uid = str(body.metadata.uid)

        def current() -> Mapping[str, Any] | None:
            return indexed(uid) if runner.schedule.is_checking(uid) else None

        if await _run("change", body, memo, webhook_claims, current=current):
            latest = indexed(uid) or body
            await _answer_ping_request(kopf.Body(cast(kopf.RawBody, latest)), memo)

    runner = DriftRunner(
        DriftSchedule(None), retried("reconcile", attempt, backoff), indexed, clock=time.monotonic
    )
    return runner


def _health_runner(config: HandlerConfig, memo: Any, bodies_index: Any) -> DriftRunner:
    """The health checks: at once when a resource is seen, then every `health_tick` after
    each check ended (kopf's timer did the same); a resource whose health check was turned
    off is forgotten at its next tick."""
    indexed = _checked(bodies_index)

    def body_of(uid: str) -> Mapping[str, Any] | None:
        body = indexed(uid)
        return body if body is not None and health.enabled(body) else None

    async def check(body: kopf.Body) -> None:
        await _health_check(body, memo)

    schedule = DriftSchedule(config.health_tick, first_at_once=True)
    return DriftRunner(schedule, retried("health check", check), body_of, clock=time.monotonic)


def _cleanup_runner(
    memo: Any, deleting_index: Any, retries: list[DriftRunner], backoff: ErrorBackoff
) -> DriftRunner:
    """The deletions: each resource's at once when seen being deleted, again
    `DELETE_RETRY_DELAY` after each that failed, from its copy as kopf's watch last
    delivered it; once done, the operator forgets the resource."""

    async def attempt(body: kopf.Body) -> None:
        op: Operator = memo.operator
        uid = str(body.metadata.uid)
        async with op.lock(uid):
            await finalizer.clean_up(op, body)
        for runner in retries:
            runner.forget(uid)
        backoff.ended(uid)
        op.locks.pop(uid, None)
        op.own_writes.forget(uid)
        memos: _HealthMemos | None = getattr(memo, "health_memos", None)
        if memos is not None:
            memos.by_uid.pop(uid, None)

    indexed = index_reader(deleting_index)
    return DriftRunner(
        DriftSchedule(None), retried("deletion", attempt), indexed, clock=time.monotonic
    )


def build_registry(config: HandlerConfig | None = None) -> kopf.OperatorRegistry:
    config = config or HandlerConfig()
    registry = kopf.OperatorRegistry()

    @kopf.index(*RESOURCE, id="webhook_claims", registry=registry)
    async def webhook_claims(body: kopf.Body, **_: Any) -> dict[str, Claim] | None:
        webhook_id = (body.get("status") or {}).get("webhookId") or body.spec.get("webhookId")
        if not webhook_id:
            return None
        metadata = body.metadata
        claim = Claim(
            str(metadata.uid),
            str(metadata.namespace),
            str(metadata.name),
            str(metadata.get("creationTimestamp") or ""),
        )
        return {str(webhook_id): claim}

    # A change is reconciled on the operator's scheduler, not in kopf's worker: the handler
    # schedules it and returns, so that no worker waits for a resource's lock, a reconcile
    # slot, an API key's rate limiter or a call (nor sleeps out a retry's delay).
    retries: list[DriftRunner] = []  # made by the first change, stopped at cleanup
    backoff = ErrorBackoff(ERROR_DELAYS)  # a bug's retries, likewise off kopf's worker

    @kopf.on.resume(*RESOURCE, id=HANDLER_RECONCILE, registry=registry)
    @kopf.on.create(*RESOURCE, id=HANDLER_RECONCILE, registry=registry)
    @kopf.on.update(*RESOURCE, id=HANDLER_RECONCILE, registry=registry)
    async def reconcile_on_change(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        if not retries:
            retries.append(
                _retry_runner(memo, kwargs["drift_bodies"], kwargs["webhook_claims"], backoff)
            )
        # At once, superseding a scheduled or running attempt (the newest spec wins).
        retries[0].retry(str(body.metadata.uid), 0.0)

    # The drift and health checks: one scheduler each (`drift`), fed by an index of the
    # resources as kopf's watch last delivered them (and the change handler's retries). A
    # resource is checked once our finalizer is on it (before, a check could register a
    # webhook that a deletion would then leave behind); it leaves the index when it is being
    # deleted (the finalizer owns it then). No
    # kopf timer: with one registered at all, kopf keeps a live copy of every resource.
    drift: list[DriftRunner] = []  # made by the first resource seen, stopped at cleanup
    health_checks: list[DriftRunner] = []  # made by the first health-checked one, likewise
    # (and kept, stopped: an index event after the cleanup starts nothing)

    @kopf.index(*RESOURCE, id="drift_bodies", registry=registry)
    async def drift_bodies(body: kopf.Body, memo: Any, **kwargs: Any) -> Any:
        memo.operator.own_writes.seen(body)  # every copy kopf's watch delivers
        if body.metadata.get("deletionTimestamp"):
            return None
        uid = str(body.metadata.uid)
        kept = compact(dict(body))
        if not drift_checked(body.metadata, FINALIZER):
            return {uid: kept}  # for a retry of a change whose finalizer was not yet added
        if not drift:
            drift.append(
                _drift_runner(config, memo, kwargs["drift_bodies"], kwargs["webhook_claims"])
            )
        drift[0].saw(uid)
        if health.enabled(kept):
            if not health_checks:
                health_checks.append(_health_runner(config, memo, kwargs["drift_bodies"]))
            health_checks[0].saw(uid)
        return {uid: kept}

    @kopf.on.cleanup(registry=registry)
    async def stop_drift_checks(settings: kopf.OperatorSettings, **_: Any) -> None:
        # What is in flight may finish, as kopf lets its workers (`exit_timeout`).
        grace = settings.queueing.exit_timeout or 0.0
        runners = (*drift, *health_checks, *retries, *cleanups)
        await asyncio.gather(*(runner.stop(grace) for runner in runners))

    # Deletions: one scheduler, fed by an index of the resources being deleted that our
    # finalizer still holds (also those a previous operator process left), never kopf's
    # deletion handler, which would sleep out each retry in the resource's kopf worker.
    cleanups: list[DriftRunner] = []  # made by the first deletion seen, stopped at cleanup

    @kopf.index(*RESOURCE, id="deleting_bodies", registry=registry)
    async def deleting_bodies(body: kopf.Body, memo: Any, **kwargs: Any) -> Any:
        if not finalizer.cleanup_due(body.metadata):
            return None
        uid = str(body.metadata.uid)
        if not cleanups:
            cleanups.append(_cleanup_runner(memo, kwargs["deleting_bodies"], retries, backoff))
        cleanups[0].saw(uid)
        return {uid: compact(dict(body))}

    return registry


async def _health_check(body: kopf.Body, memo: Any) -> None:
    """One health tick of a resource with `spec.healthCheck.enabled`: DeliveryVerified
    reset after a rotation, then the checker's verdict, each written when it is new."""
    op: Operator = memo.operator
    checker: health_checker.HealthChecker | None = getattr(memo, "health", None)
    if checker is None:
        return
    memos: _HealthMemos = memo.health_memos
    body = kopf.Body(cast(kopf.RawBody, op.own_writes.newest(body)))
    uid = str(body.metadata.uid)
    health_memo = memos.by_uid.setdefault(uid, health.HealthMemo())
    shown: Mapping[str, Any] = body
    last_rotation = parse_rfc3339((body.get("status") or {}).get("lastRotationTime"))
    reset = health.rotation_reset(health_memo, last_rotation)
    if reset is not None:
        # Shown at once, while the ping after the rotation is on its way.
        op.metrics.webhooks.set_delivery_verified(
            str(body.metadata.namespace), str(body.metadata.name), None
        )
        shown = await _report_delivery(op, body, shown, reset)
        health_memo.reset_for = last_rotation
    verdict = await _health_tick(op, checker, health_memo, body)
    if verdict is not None:
        await _report_delivery(op, body, shown, verdict)


async def _report_delivery(
    op: Operator, body: kopf.Body, shown: Mapping[str, Any], verdict: health.Verdict
) -> Mapping[str, Any]:
    """Write DeliveryVerified (the health timer's only condition) from `shown`, the resource
    as last read or written, unless the verdict only repeats it; the resource as it now is."""
    shown_conditions = list((shown.get("status") or {}).get("conditions") or [])
    generation = int(body.metadata.get("generation") or 0)
    stored = shown
    if not health.repeats(
        conditions.condition(shown_conditions, crd.CONDITION_DELIVERY_VERIFIED),
        verdict,
        generation,
    ):
        updated = conditions.set_condition(
            shown_conditions,
            crd.CONDITION_DELIVERY_VERIFIED,
            verdict.status,
            verdict.reason,
            verdict.message,
            generation=generation,
            now=op.clock.now(),
        )
        try:
            stored = await write_status(op.kube, shown, updated)
            op.own_writes.wrote(stored)
        except KubeError as error:
            raise kopf.TemporaryError(f"DeliveryVerified not written: {error}", delay=10) from None
    if verdict.status is False:
        kopf.event(body, type="Warning", reason=verdict.reason, message=verdict.message)
    return stored


async def _ping_means(
    op: Operator, body: Mapping[str, Any], spec: WebhookSpec
) -> tuple[health.Ping, str | None]:
    """How to make Gemini ping this webhook, and the fingerprint of the secret held now
    (None, with a ping that fails, when there is no key, webhook or secret)."""
    api_key = await op.kube.secret_value(spec.namespace, spec.api_key_secret, spec.api_key_key)
    held = await current_fingerprint(op.kube, spec.namespace, spec.signing_secret_name, spec.uid)
    webhook_id = (body.get("status") or {}).get("webhookId")
    if not api_key or not webhook_id:
        return _never, None
    service = op.services.for_key(api_key, spec.api_base_url)

    async def ping() -> None:
        await service.ping(str(webhook_id))

    return ping, held


async def _health_tick(
    op: Operator, checker: health_checker.HealthChecker, memo: health.HealthMemo, body: kopf.Body
) -> health.Verdict | None:
    try:
        spec = parse(dict(body))
    except InvalidSpecError:
        return None
    ping, fingerprint = await _ping_means(op, body, spec)  # the Secrets from the watch cache
    return await checker.tick(body, spec, memo, ping=ping, current_fingerprint=fingerprint)


async def _answer_ping_request(body: kopf.Body, memo: Any) -> None:
    """A ping someone asked for with the ping annotation, once per value: sent whatever
    spec.healthCheck says, and answered in status.lastPing (never in DeliveryVerified,
    which the health timer owns). From kopf's copy as its watch last delivered it (the
    operator's RBAC has no `get` on the resource)."""
    op: Operator = memo.operator
    checker: health_checker.HealthChecker | None = getattr(memo, "health", None)
    request = health.ping_request(body)
    if checker is None or request is None or body.metadata.get("deletionTimestamp"):
        return
    resource: dict[str, Any] = copy.deepcopy(dict(body))
    try:
        spec = parse(resource)
    except InvalidSpecError as error:
        verdict = health.Verdict(None, REASON_INVALID_SPEC, str(error))
        answer = health.ping_answer(request, verdict, None, {})
    else:
        ping, fingerprint = await _ping_means(op, resource, spec)
        verdict, sent_at, verified_by = await checker.requested(
            resource, spec, ping=ping, current_fingerprint=fingerprint
        )
        answer = health.ping_answer(request, verdict, sent_at, verified_by)
    try:
        op.own_writes.wrote(await op.kube.merge_patch_status(resource, {"lastPing": answer}))
    except KubeError as error:
        raise kopf.TemporaryError(f"ping answer not written: {error}", delay=10) from None


async def _never() -> None:
    raise RuntimeError("no webhook to ping")
