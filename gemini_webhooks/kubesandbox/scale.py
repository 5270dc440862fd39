"""The scale subresource: a Scale object read from, and written to, the replica paths of a
Deployment or of a custom resource that declares them."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import kmock

from gemini_webhooks.contracts import label_selector
from gemini_webhooks.kubesandbox import errors, patching, tables, wire
from gemini_webhooks.kubesandbox.resources import ResourceType
from gemini_webhooks.kubesandbox.store import Cluster, Obj


def serve_scale(
    cluster: Cluster,
    request: kmock.Request,
    rtype: ResourceType,
    name: str,
    ns: str | None,
    verb: str,
    body: Any,
    dry_run: bool,
) -> aiohttp.web.Response:
    assert rtype.scale is not None
    spec_path = str(rtype.scale.get("specReplicasPath", ".spec.replicas"))
    obj = cluster.get(rtype, ns, name)
    current = scale_of(obj, rtype.scale)
    if verb == "get":
        return wire.json_response(current)
    if verb == "update":
        wanted = body
    elif verb == "patch":
        wanted, _ = patching.patch_document(
            current, request.headers.get("Content-Type", ""), body, custom=False
        )
    else:
        raise errors.method_not_allowed(f"{verb} is not supported on the scale subresource")
    replicas = (wanted.get("spec") or {}).get("replicas") if isinstance(wanted, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.invalid(
            "Scale",
            "autoscaling",
            name,
            [
                errors.cause(
                    "spec.replicas",
                    "FieldValueInvalid",
                    "Invalid value: must be a non-negative integer",
                )
            ],
        )
    rv = (wanted.get("metadata") or {}).get("resourceVersion")
    updated = _set_path(obj, spec_path, replicas)
    updated["metadata"] = {
        **updated["metadata"],
        "resourceVersion": rv or obj["metadata"]["resourceVersion"],
    }
    new, _ = cluster.update(rtype, ns, name, updated, dry_run=dry_run, require_rv=False)
    return wire.json_response(scale_of(new, rtype.scale))


def scale_of(obj: Obj, paths: Mapping[str, str]) -> dict[str, Any]:
    meta = obj["metadata"]
    spec_replicas = tables.jsonpath(obj, str(paths.get("specReplicasPath", ".spec.replicas")))
    status_replicas = tables.jsonpath(obj, str(paths.get("statusReplicasPath", ".status.replicas")))
    status: dict[str, Any] = {"replicas": status_replicas or 0}
    selector_path = paths.get("labelSelectorPath")
    if selector_path:
        selector = tables.jsonpath(obj, str(selector_path))
        if isinstance(selector, dict):  # a Deployment's LabelSelector, as a selector string
            try:
                selector = str(label_selector.from_object(selector))
            except label_selector.SelectorError:
                selector = None  # FormatLabelSelector's "<error>": no selector to scale by
        if selector:
            status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec_replicas or 0},
        "status": status,
    }


def _set_path(obj: Obj, path: str, value: Any) -> Obj:
    result = copy.deepcopy(obj)
    parts = [p for p in path.split(".") if p]
    target = result
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return result
