"""Our finalizer: put on a resource before anything remote is made for it, taken off once
the remote webhook is deleted (or let go), by the operator itself, not kopf.

kopf's own finalizer is removed as soon as its deletion handler returns, and a deletion it
must retry (a `TemporaryError`) is slept out inside the resource's kopf worker: with kopf's
`worker_limit`, 50 resources whose deletion keeps failing (their namespace deleted with the
API-key Secret in it, a revoked key) would hold every worker and stall every other resource.
A finalizer cannot be added to an object once its deletion has begun, so ours is on it from
the start: the change handler adds it (`adding`, one patch in the resource's life, as kopf's
was), and the deletion runs on the operator's scheduler (`drift.DriftRunner`), fed by an
index of the resources being deleted that still hold it — so an operator that restarts, or
a new leader, picks up a deletion where the last one left it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from gemini_webhook_operator.kube import JSONPatch, KubeError
from gemini_webhook_operator.reconcile_context import Operator
from gemini_webhook_operator.reconcile_report import REASON_KUBE_ERROR
from gemini_webhook_operator.reconciler import delete
from gemini_webhook_operator.webhookservice_errors import WebhookServiceError
from gemini_webhooks.contracts.signing_secret import API_GROUP

FINALIZER = f"{API_GROUP}/finalizer"
# kopf's own finalizer, which it adds only for a handler that needs one: none of ours does
# (it must differ from FINALIZER, or kopf would take ours off, needed by no handler of its).
KOPF_FINALIZER = f"kopf.{API_GROUP}/unused"
DELETE_RETRY_DELAY = 30.0  # a deletion that failed is tried again this much later


def _finalizers(metadata: Mapping[str, Any]) -> list[str]:
    return list(metadata.get("finalizers") or [])


def cleanup_due(metadata: Mapping[str, Any]) -> bool:
    """Is the resource being deleted and still held by our finalizer (its cleanup to do)?"""
    return bool(metadata.get("deletionTimestamp")) and FINALIZER in _finalizers(metadata)


def adding(metadata: Mapping[str, Any]) -> JSONPatch | None:
    """The patch that puts our finalizer on the resource as read (guarded by its
    resourceVersion: a concurrent writer's finalizers are never overwritten); None when it
    is there, or when the deletion has begun (no finalizer may be added then)."""
    finalizers = _finalizers(metadata)
    if FINALIZER in finalizers or metadata.get("deletionTimestamp"):
        return None
    guard = {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": metadata["resourceVersion"],
    }
    if "finalizers" in metadata and metadata["finalizers"] is not None:
        return [guard, {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]
    return [guard, {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]


def removing(metadata: Mapping[str, Any]) -> JSONPatch | None:
    """The patch that takes our finalizer off, and only ours (guarded by the entry itself:
    others may come and go meanwhile); None when it is not there."""
    finalizers = _finalizers(metadata)
    if FINALIZER not in finalizers:
        return None
    at = f"/metadata/finalizers/{finalizers.index(FINALIZER)}"
    return [{"op": "test", "path": at, "value": FINALIZER}, {"op": "remove", "path": at}]


async def hold(op: Operator, body: kopf.Body) -> kopf.Body:
    """The resource with our finalizer on it (added when missing); a TemporaryError when
    it could not be added (nothing remote may be made for it before)."""
    ops = adding(body.metadata)
    if ops is None:
        return body
    try:
        stored = await op.kube.json_patch_resource(body, ops)
    except KubeError as error:
        raise kopf.TemporaryError(f"finalizer not added: {error}", delay=1) from None
    if stored is None:
        raise kopf.TemporaryError("finalizer not added: the resource is gone", delay=1)
    op.own_writes.wrote(stored)
    return kopf.Body(stored)  # type: ignore[arg-type]


async def clean_up(op: Operator, body: Mapping[str, Any]) -> None:
    """Delete the remote webhook (policy Delete) or let it go, then take our finalizer off;
    a TemporaryError (after `DELETE_RETRY_DELAY`) when either failed, counted as a failed
    deletion to retry."""
    with op.metrics.time_reconcile("delete") as record:
        try:
            await delete(op, body)
            ops = removing(body.get("metadata") or {})
            if ops is not None:
                await op.kube.json_patch_resource(body, ops)
        except (WebhookServiceError, KubeError) as error:
            reason = error.reason if isinstance(error, WebhookServiceError) else REASON_KUBE_ERROR
            record.failed(reason, retry=True)
            raise kopf.TemporaryError(str(error), delay=DELETE_RETRY_DELAY) from None
