"""Status conditions per the Kubernetes API conventions, and what each writer applies to the
status subresource, computed purely."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import MANAGED_BY
from gemini_webhooks.contracts.times import rfc3339


def status_text(status: bool | None) -> str:
    """A condition's `status` for True / False / None (Unknown)."""
    return "Unknown" if status is None else ("True" if status else "False")


def set_condition(
    conditions: Sequence[dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The conditions with `type_` set; `lastTransitionTime` moves only when status does."""
    shown = status_text(status)
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = (
        previous.get("lastTransitionTime")
        if previous is not None and previous.get("status") == shown
        else None
    ) or rfc3339(now)
    updated = {
        "type": type_,
        "status": shown,
        "reason": reason,
        "message": message[:4096],
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    others = [dict(c) for c in conditions if c.get("type") != type_]
    return sorted([*others, updated], key=lambda c: str(c.get("type")))


def condition(conditions: Sequence[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((dict(c) for c in conditions if c.get("type") == type_), None)


def with_progress(
    conditions: Sequence[dict[str, Any]], *, stalled: bool, generation: int, now: datetime
) -> list[dict[str, Any]]:
    """The conditions with kstatus's `Reconciling` and `Stalled` set from `Synced` and
    `Ready` (abnormal-true: present only while True). The problem they name is Synced's when
    it is False, else Ready's when that is not True: `Stalled` when `stalled` (it waits for
    a person), `Reconciling` otherwise; neither once both hold."""
    progress = (crd.CONDITION_RECONCILING, crd.CONDITION_STALLED)
    others = [dict(c) for c in conditions if c.get("type") not in progress]
    synced, ready = condition(others, crd.CONDITION_SYNCED), condition(others, crd.CONDITION_READY)
    if synced is not None and synced.get("status") == "False":
        problem = synced
    elif ready is None:
        problem = {"reason": "NotReconciled", "message": "not reconciled yet"}
    elif ready.get("status") != "True":
        problem = ready
    else:
        return sorted(others, key=lambda c: str(c.get("type")))
    type_ = crd.CONDITION_STALLED if stalled else crd.CONDITION_RECONCILING
    shown = [c for c in conditions if c.get("type") == type_]  # keeps its transition time
    return set_condition(
        [*others, *shown],
        type_,
        True,
        str(problem.get("reason") or "Unknown"),
        str(problem.get("message") or ""),
        generation=generation,
        now=now,
    )


# Each condition type has one writer, and each writer its own server-side-apply field
# manager: the API server merges `status.conditions` by `type` (the CRD declares it a map
# list), so the health timer and the reconciler never overwrite each other's conditions,
# however stale the copy each of them started from.
MANAGER_RECONCILER = MANAGED_BY  # also the manager of every receiver object it applies
MANAGER_HEALTH = "gemini-webhook-operator-health"
_OWNERS = {crd.CONDITION_DELIVERY_VERIFIED: MANAGER_HEALTH}


def manager_of(type_: str) -> str:
    """The field manager that writes conditions of this type."""
    return _OWNERS.get(type_, MANAGER_RECONCILER)


def _owned(conditions: Sequence[Mapping[str, Any]], manager: str) -> list[dict[str, Any]]:
    mine = [dict(c) for c in conditions if manager_of(str(c.get("type"))) == manager]
    return sorted(mine, key=lambda c: str(c.get("type")))


def applies(
    shown: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """What to server-side-apply: for each field manager whose conditions differ between what
    the object shows and what is wanted, every condition it wants (an apply states the
    manager's whole intent; a type it no longer applies is dropped). Nothing when nothing
    changed: a steady state writes nothing."""
    writes = []
    for manager in (MANAGER_RECONCILER, MANAGER_HEALTH):
        intent = _owned(wanted, manager)
        if _owned(shown, manager) != intent:
            writes.append((manager, intent))
    return writes


# The status fields the reconciler writes: every field of the CRD's status but the ping
# answer (written where the ping is asked for), the conditions and the generation.
RECONCILER_FIELDS = tuple(
    name
    for name in crd.status_schema()["properties"]
    if name not in ("lastPing", "conditions", "observedGeneration")
)


def status_changes(status: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `wanted` that differs from `status` (None: the field is to be absent)."""
    return {
        key: value
        for key, value in wanted.items()
        if status.get(key) != value and not (value is None and key not in status)
    }


def reconciler_fields(status: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The reconciler's whole intent for its status fields: those `status` shows, with
    `fields` set over them (None: absent). An apply states a manager's whole intent: a field
    it leaves out that it alone owned is removed."""
    shown = {name: status[name] for name in RECONCILER_FIELDS if name in status}
    merged = shown | dict(fields)
    return {name: value for name, value in merged.items() if value is not None}


def status_applies(
    status: Mapping[str, Any],
    wanted: Sequence[Mapping[str, Any]],
    *,
    observed_generation: int | None = None,
    fields: Mapping[str, Any] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """What to server-side-apply to `status` (the status subresource) per field manager: the
    conditions of `applies`, and with the reconciler's, in the same write, its status fields
    (`reconciler_fields`, `fields` over what is shown) and its `observedGeneration` (given, or
    as shown), so that no reader ever sees a generation marked observed, or a field, beside
    conditions that do not describe it. The reconciler also applies when only a field or the
    generation moved; nothing is applied when nothing changed."""
    shown = list(status.get("conditions") or [])
    shown_generation = status.get("observedGeneration")
    generation = shown_generation if observed_generation is None else observed_generation
    writes = dict(applies(shown, wanted))
    moved = generation != shown_generation or status_changes(status, fields or {})
    if moved and MANAGER_RECONCILER not in writes:
        writes[MANAGER_RECONCILER] = _owned(wanted, MANAGER_RECONCILER)
    payloads = []
    for manager in (MANAGER_RECONCILER, MANAGER_HEALTH):
        if manager in writes:
            payload: dict[str, Any] = {"conditions": writes[manager]}
            if manager == MANAGER_RECONCILER:
                payload |= reconciler_fields(status, fields or {})
                if generation is not None:
                    payload["observedGeneration"] = generation
            payloads.append((manager, payload))
    return payloads


def removals(
    stored: Mapping[str, Any], manager: str, payload: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """JSON-patch operations that drop what `manager` no longer applies (its `payload`) but
    the stored status still has: condition types of its own, and, for the reconciler, status
    fields of its own — ones another manager co-owns, such as the merge patches of earlier
    operator versions (an apply removes only what it alone owned). Each removal is guarded by
    a `test` of what it removes; conditions by index, the last index first, so earlier
    indices stay valid."""
    listed = list(stored.get("conditions") or [])
    intent = {c.get("type") for c in payload.get("conditions") or []}
    ops: list[dict[str, Any]] = []
    if manager == MANAGER_RECONCILER:
        for name in RECONCILER_FIELDS:
            if name in stored and name not in payload:
                ops += [
                    {"op": "test", "path": f"/status/{name}", "value": stored[name]},
                    {"op": "remove", "path": f"/status/{name}"},
                ]
    for index in reversed(range(len(listed))):
        type_ = listed[index].get("type")
        if manager_of(str(type_)) == manager and type_ not in intent:
            path = f"/status/conditions/{index}"
            ops += [
                {"op": "test", "path": f"{path}/type", "value": type_},
                {"op": "remove", "path": path},
            ]
    return ops
