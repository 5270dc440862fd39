"""The receiver's objects in the cluster: expose its route first when Gemini must learn its
URL, apply what differs from the rendering, prune what an earlier spec rendered."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from gemini_webhook_operator import receiver_exposure, receiver_resources
from gemini_webhook_operator.kube import Kube, label_selector
from gemini_webhook_operator.model import WebhookSpec
from gemini_webhook_operator.receiver_resources import OWNED_KINDS
from gemini_webhooks.contracts import label_selector as label_selectors
from gemini_webhooks.contracts.signing_secret import LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY

RECEIVERS_SELECTOR = {
    LABEL_MANAGED_BY: MANAGED_BY,
    LABEL_COMPONENT: receiver_resources.COMPONENT_RECEIVER,
}

RECEIVERS = label_selector(RECEIVERS_SELECTOR)


async def expose(
    kube: Kube, objects: list[dict[str, Any]]
) -> tuple[receiver_exposure.Admission, set[tuple[str, str]]]:
    """Apply the receiver's route and read whether its controller has admitted it."""
    route = next(o for o in objects if o["kind"] in receiver_exposure.ROUTE_KINDS)
    stored = await kube.apply(route)
    return (
        receiver_exposure.admission(route["kind"], stored),
        {(route["kind"], route["metadata"]["name"])},
    )


async def apply_receiver(
    kube: Kube,
    objects: list[dict[str, Any]],
    spec: WebhookSpec,
    status: Mapping[str, Any],
    wanted_status: dict[str, Any],
    *,
    skip: AbstractSet[tuple[str, str]] = frozenset(),
) -> None:
    """Apply `objects` (less `skip`), prune ours that they no longer hold; records the
    rendering's fingerprint in `wanted_status`."""
    wanted_status["receiverFingerprint"] = (
        receiver_resources.fingerprint(objects) if objects else None
    )
    if not objects and not status.get("receiverFingerprint"):
        return
    # What exists, per kind: from the watch of all receivers in the namespace, one per kind
    # shared by every resource (and kept in step with what we apply and delete).
    is_ours = label_selectors.from_labels(receiver_resources.labels(spec.name))
    live: dict[tuple[str, str], dict[str, Any]] = {}
    api_versions = dict((kind, api_version) for api_version, kind in OWNED_KINDS)
    for api_version, kind in OWNED_KINDS:
        for existing in await kube.watched(api_version, kind, spec.namespace, RECEIVERS):
            if is_ours.selects(existing):
                live[(kind, existing["metadata"]["name"])] = existing
    # Unchanged rendering and a live object that holds every field we render: no call.
    unchanged = status.get("receiverFingerprint") == wanted_status["receiverFingerprint"]
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in skip or (unchanged and key in live and holds(live[key], _fields(obj))):
            continue
        await kube.apply(obj)
    # Prune what an earlier spec rendered and this one does not (e.g. the PDB at 1 replica).
    wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for (kind, name), existing in live.items():
        owners = existing["metadata"].get("ownerReferences") or []
        if (kind, name) not in wanted and any(o.get("uid") == spec.uid for o in owners):
            await kube.delete(api_versions[kind], kind, spec.namespace, name)


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
