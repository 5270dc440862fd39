"""kopf handlers — thin: each takes what kopf gives, calls the reconciler, writes back.

`build_registry(config)` registers everything on a fresh registry, so the CLI and the tests
run the very same handlers (`kopf.operator(registry=..., settings=..., memo=...)`).
The memo carries the `Operator` (clients, clock, metrics) under `memo.operator`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from gemini_webhook_operator import conditions, health
from gemini_webhook_operator.kube import KubeError, read_signing_secret
from gemini_webhook_operator.model import InvalidSpecError, parse
from gemini_webhook_operator.reconciler import (
    REASON_KUBE_ERROR,
    Claim,
    Operator,
    Outcome,
    delete,
    reconcile,
)
from gemini_webhook_operator.webhookservice import WebhookServiceError
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import API_GROUP, truncate_secret

RESOURCE = (API_GROUP, crd.VERSION, crd.PLURAL)
FINALIZER = f"{API_GROUP}/finalizer"


@dataclass(frozen=True)
class HandlerConfig:
    drift_interval: float = 300.0
    drift_jitter: float = 0.1  # fraction of the interval
    health_tick: float = 30.0  # how often each resource's health check is considered


@dataclass
class _HealthMemos:
    by_uid: dict[str, health.HealthMemo] = field(default_factory=dict)
    # The last verdict per resource: re-asserted if a concurrent status patch of the
    # reconciler (which replaces the conditions list) dropped it.
    last: dict[str, health.Verdict] = field(default_factory=dict)


ROTATE_FIELD = ("metadata", "annotations", crd.ANNOTATION_ROTATE)


# kopf keeps its state in annotations under our prefix (`gemini.webhooks.dev/`) and, when
# it compares an object with the last handled one, drops every annotation under that
# prefix as its own: twice, in the diff base (the prefix is branded `kopf-managed`) and in
# the progress storage's `clear`. Our user-facing `gemini.webhooks.dev/rotate` would be
# dropped with them and wait for the next drift check. These two keep it in the compared
# essence, so setting it is a change like a spec edit and the update handler runs at once.


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration, plus the rotate annotation."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> Any:
        return super().build(body=body, extra_fields=[*(extra_fields or ()), ROTATE_FIELD])


class ProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's handler progress; its `clear` keeps the rotate annotation in the essence."""

    def clear(self, *, essence: Any) -> Any:
        requested = ((essence.get("metadata") or {}).get("annotations") or {}).get(
            crd.ANNOTATION_ROTATE
        )
        cleared = super().clear(essence=essence)
        if requested is not None:
            metadata = cleared.setdefault("metadata", {})
            metadata.setdefault("annotations", {})[crd.ANNOTATION_ROTATE] = requested
        return cleared


def configure(settings: kopf.OperatorSettings) -> None:
    """Our kopf settings: state in annotations (the CRD's structural schema prunes unknown
    status fields) with the rotate annotation part of what is compared, our finalizer name,
    and no Kubernetes Event per kopf log line (a retry loop would post one per attempt): the
    reconciler posts its own, deduplicated."""
    settings.persistence.progress_storage = ProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = DiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.CRITICAL
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60)


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


def status_changes(status: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `wanted` that differs from `status` (None deletes a field): a drift check
    that finds everything as it was writes nothing, so kopf sends no patch at all."""
    return {
        key: value
        for key, value in wanted.items()
        if status.get(key) != value and not (value is None and key not in status)
    }


def _write_back(body: kopf.Body, patch: kopf.Patch, outcome: Outcome) -> None:
    for key, value in status_changes(body.get("status") or {}, outcome.status).items():
        patch.status[key] = value
    annotations = body.metadata.annotations
    for annotation in outcome.remove_annotations:
        if annotation in annotations:
            patch.metadata.annotations[annotation] = None
    for annotation, value in outcome.annotations.items():
        if annotations.get(annotation) != value:
            patch.metadata.annotations[annotation] = value
    for type_, reason, message in outcome.events:
        kopf.event(body, type=type_, reason=reason, message=message)


async def _run(
    handler: str, body: kopf.Body, memo: Any, patch: kopf.Patch, webhook_claims: Any
) -> None:
    op: Operator = memo.operator
    if body.metadata.get("deletionTimestamp"):
        return  # the finalizer owns a resource being deleted: never recreate anything now
    async with op.lock(str(body.metadata.uid)):
        with op.metrics.time_reconcile(handler) as record:
            # The drift check reads Secrets from a listing shared by all resources, at most
            # one interval old; a change (create, update, resume) reads them afresh.
            max_age = op.settings.drift_interval if handler == "drift" else 0.0
            outcome = await reconcile(
                op, body, claims=_ClaimsView(webhook_claims), listing_max_age=max_age
            )
            _write_back(body, patch, outcome)
            if outcome.error is not None:
                record.failed(outcome.error, retry=outcome.retry_after is not None)
            op.metrics.webhooks.set_conditions(
                str(body.metadata.namespace),
                str(body.metadata.name),
                outcome.status.get("conditions") or [],
            )
            if outcome.retry_after is not None:
                raise kopf.TemporaryError(
                    f"{outcome.error or 'retry'}: will retry", delay=outcome.retry_after
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

    @kopf.on.resume(*RESOURCE, id="reconcile", registry=registry)
    @kopf.on.create(*RESOURCE, id="reconcile", registry=registry)
    @kopf.on.update(*RESOURCE, id="reconcile", registry=registry)
    async def reconcile_on_change(
        body: kopf.Body, memo: Any, patch: kopf.Patch, **kwargs: Any
    ) -> None:
        await _run("change", body, memo, patch, kwargs["webhook_claims"])

    def _jittered(**_: Any) -> float:
        spread = config.drift_interval * config.drift_jitter
        return max(0.0, config.drift_interval + random.uniform(-spread, spread))  # noqa: S311

    @kopf.timer(
        *RESOURCE,
        id="drift",
        interval=config.drift_interval,
        initial_delay=_jittered,
        registry=registry,
    )
    async def drift_check(body: kopf.Body, memo: Any, patch: kopf.Patch, **kwargs: Any) -> None:
        await _run("drift", body, memo, patch, kwargs["webhook_claims"])

    @kopf.on.delete(*RESOURCE, id="finalize", registry=registry)
    async def finalize(body: kopf.Body, memo: Any, **_: Any) -> None:
        op: Operator = memo.operator
        async with op.lock(str(body.metadata.uid)):
            with op.metrics.time_reconcile("delete") as record:
                try:
                    await delete(op, body)
                except (WebhookServiceError, KubeError) as error:
                    reason = REASON_KUBE_ERROR
                    if isinstance(error, WebhookServiceError):
                        reason = error.reason
                    record.failed(reason, retry=True)
                    raise kopf.TemporaryError(str(error), delay=30) from None
        uid = str(body.metadata.uid)
        op.locks.pop(uid, None)
        memos: _HealthMemos | None = getattr(memo, "health_memos", None)
        if memos is not None:
            memos.by_uid.pop(uid, None)
            memos.last.pop(uid, None)

    def _health_enabled(spec: kopf.Spec, **_: Any) -> bool:
        return bool((spec.get("healthCheck") or {}).get("enabled"))

    @kopf.timer(
        *RESOURCE,
        id="health",
        interval=config.health_tick,
        when=_health_enabled,
        registry=registry,
    )
    async def health_check(body: kopf.Body, memo: Any, patch: kopf.Patch, **_: Any) -> None:
        op: Operator = memo.operator
        checker: health.HealthChecker | None = getattr(memo, "health", None)
        if checker is None:
            return
        memos: _HealthMemos = memo.health_memos
        uid = str(body.metadata.uid)
        verdict = await _health_tick(
            op, checker, memos.by_uid.setdefault(uid, health.HealthMemo()), body
        )
        reasserted = False
        if verdict is None:
            # Nothing new; but a reconcile's status write (it replaces the conditions list
            # with what it read) may have put back an older DeliveryVerified: re-assert ours.
            verdict = memos.last.get(uid)
            status = body.get("status") or {}
            shown = conditions.condition(
                status.get("conditions") or [], crd.CONDITION_DELIVERY_VERIFIED
            )
            if verdict is None or (shown is not None and _shows(shown, verdict)):
                return
            rotated = conditions.parse_time(status.get("lastRotationTime"))
            sent = memos.by_uid[uid].last_sent_at
            if rotated is not None and (sent is None or sent < rotated):
                return  # the last verdict predates a rotation: never re-assert it
            reasserted = True
        else:
            memos.last[uid] = verdict
        now = op.clock.now()
        updated = conditions.set_condition(
            list((body.get("status") or {}).get("conditions") or []),
            crd.CONDITION_DELIVERY_VERIFIED,
            verdict.status,
            verdict.reason,
            verdict.message,
            generation=int(body.metadata.get("generation") or 0),
            now=now,
        )
        patch.status["conditions"] = updated
        if verdict.status is False and not reasserted:
            kopf.event(body, type="Warning", reason=verdict.reason, message=verdict.message)

    return registry


def _shows(shown: Mapping[str, Any], verdict: health.Verdict) -> bool:
    status = "Unknown" if verdict.status is None else str(verdict.status)
    return (shown.get("status"), shown.get("reason"), shown.get("message")) == (
        status,
        verdict.reason,
        verdict.message,
    )


async def _health_tick(
    op: Operator, checker: health.HealthChecker, memo: health.HealthMemo, body: kopf.Body
) -> health.Verdict | None:
    try:
        spec = parse(dict(body))
    except InvalidSpecError:
        return None
    max_age = op.settings.drift_interval  # the drift check's shared listing
    api_key = await op.kube.secret_value(
        spec.namespace, spec.api_key_secret, spec.api_key_key, max_age=max_age
    )
    held = await read_signing_secret(
        op.kube, spec.namespace, spec.signing_secret_name, spec.uid, max_age=max_age
    )
    current = held.secrets.current if held.secrets else None
    webhook_id = (body.get("status") or {}).get("webhookId")
    if not api_key or not webhook_id:
        return await checker.tick(body, memo, ping=_never, current_fingerprint=None)
    service = op.services.for_key(api_key, spec.api_base_url)

    async def ping() -> None:
        await service.ping(str(webhook_id))

    fingerprint = truncate_secret(current.secret) if current else None
    return await checker.tick(body, memo, ping=ping, current_fingerprint=fingerprint)


async def _never() -> None:
    raise RuntimeError("no webhook to ping")
