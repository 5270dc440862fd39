"""Writing a reconciliation's outcome back to its GeminiWebhook: the annotations it
answered, then what changed in the status, one server-side apply per field manager."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from gemini_webhook_operator import conditions
from gemini_webhook_operator.kopf_state import LEGACY_KOPF_ANNOTATIONS
from gemini_webhook_operator.kube import Kube
from gemini_webhook_operator.own_writes import OwnWrites
from gemini_webhook_operator.reconcile_report import Outcome
from gemini_webhooks.contracts import crd


async def write_status(
    kube: Kube,
    body: Mapping[str, Any],
    wanted: list[dict[str, Any]],
    *,
    observed_generation: int | None = None,
    fields: Mapping[str, Any] | None = None,
) -> Mapping[str, Any]:
    """Write what changed in the status, one server-side apply per field manager whose part
    changed (`conditions.status_applies`: the reconciler's conditions, status `fields` and
    `observedGeneration` in one write; the health timer's condition in its own): never a
    whole-list replacement, which would put back another writer's condition as this one last
    read it; nothing when nothing changed. What an earlier operator version's merge patches
    co-own outlives the apply that drops it; a guarded JSON patch removes it (once, at an
    upgrade). Returns the resource as stored after the last write (`body` if nothing was
    written, or it is gone)."""
    status = body.get("status") or {}
    latest: Mapping[str, Any] = body
    for manager, payload in conditions.status_applies(
        status, wanted, observed_generation=observed_generation, fields=fields
    ):
        stored = await kube.apply_status(body, payload, field_manager=manager)
        if stored is None:
            return body  # the resource is gone
        ops = conditions.removals(stored.get("status") or {}, manager, payload)
        if ops:
            stored = await kube.json_patch_status(body, ops, field_manager=manager) or stored
        latest = stored
    return latest


async def write_back(kube: Kube, body: kopf.Body, outcome: Outcome, writes: OwnWrites) -> None:
    """Write what the reconciliation changed, before the resource's lock is released (not
    through kopf's patch, applied after the handler returns): the annotations it answered,
    then the status — its fields and conditions in one apply, so that whoever reads the
    resource sees conditions that the status fields beside them explain. Each write is
    recorded in `writes` as it is made (a failure after the first leaves it recorded)."""
    name, namespace = str(body.metadata.name), str(body.metadata.namespace)
    annotations = body.metadata.annotations
    removed = (*outcome.remove_annotations, *LEGACY_KOPF_ANNOTATIONS)
    changed: dict[str, str | None] = {a: None for a in removed if a in annotations}
    changed |= {a: v for a, v in outcome.annotations.items() if annotations.get(a) != v}
    if changed:
        writes.wrote(
            await kube.merge_patch(
                crd.API_VERSION, crd.KIND, namespace, name, {"metadata": {"annotations": changed}}
            )
        )
    wanted = dict(outcome.status)
    conditions_wanted = list(wanted.pop("conditions", None) or [])
    generation = wanted.pop("observedGeneration", None)
    latest = await write_status(
        kube, body, conditions_wanted, observed_generation=generation, fields=wanted
    )
    if latest is not body:
        writes.wrote(latest)
    for type_, reason, message in outcome.events:
        kopf.event(body, type=type_, reason=reason, message=message)
