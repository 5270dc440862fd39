"""A PATCH request: a JSON, merge or strategic merge patch becomes an update of the stored
object; an apply patch is a server-side apply, which remembers what each field manager
applied."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from gemini_webhooks.kubesandbox import errors, patching
from gemini_webhooks.kubesandbox.errors import cause
from gemini_webhooks.kubesandbox.resources import ResourceType

if TYPE_CHECKING:
    from gemini_webhooks.kubesandbox.store import Cluster

Obj = dict[str, Any]


def patch(
    cluster: Cluster,
    rtype: ResourceType,
    namespace: str | None,
    name: str,
    content_type: str,
    patch_body: Any,
    *,
    subresource: str | None = None,
    field_validation: str = "Warn",
    dry_run: bool = False,
    field_manager: str | None = None,
) -> tuple[Obj, list[str]]:
    content_type = content_type.split(";")[0].strip()
    if content_type == patching.APPLY_PATCH:
        return apply(
            cluster,
            rtype,
            namespace,
            name,
            patch_body,
            field_validation=field_validation,
            dry_run=dry_run,
            subresource=subresource,
            field_manager=field_manager,
        )
    old = cluster.get(rtype, namespace, name)
    patched, _ = patching.patch_document(old, content_type, patch_body, custom=rtype.custom)
    if not isinstance(patched, dict):
        raise errors.bad_request("the patch must leave a JSON object")
    meta = patched.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise errors.bad_request("metadata must be an object")
    # An unconditional patch: only a resourceVersion the patch itself changes is checked.
    if meta.get("resourceVersion") in (None, ""):
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
    return cluster.update(
        rtype,
        namespace,
        name,
        patched,
        subresource=subresource,
        field_validation=field_validation,
        dry_run=dry_run,
        require_rv=False,
    )


def apply(
    cluster: Cluster,
    rtype: ResourceType,
    namespace: str | None,
    name: str,
    body: Any,
    *,
    field_validation: str,
    dry_run: bool,
    subresource: str | None,
    field_manager: str | None = None,
) -> tuple[Obj, list[str]]:
    """Server-side apply, simplified: create, or merge the applied fields; what the same
    field manager applied before and no longer applies is removed. There is no shared
    ownership, hence no conflicts between managers (see the docs). A `resourceVersion` in
    the applied object is a precondition on an existing object (409 when it changed), and
    ignored when the apply creates it, as kube-apiserver does."""
    if not field_manager:
        raise errors.invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            [
                cause(
                    "fieldManager",
                    "FieldValueRequired",
                    "Required value: is required for apply patch",
                )
            ],
        )
    if not isinstance(body, dict):
        raise errors.bad_request("an apply patch must be an object")
    key = (namespace or "", name)
    applied_key = (field_manager, subresource or "")
    if key not in cluster.objects[rtype.store_key]:
        if subresource:
            raise errors.not_found(rtype.plural, rtype.group, name)
        body = dict(body)
        metadata = body["metadata"] = dict(body.get("metadata") or {})
        metadata["name"] = name
        metadata.pop("resourceVersion", None)
        created = cluster.create(
            rtype, namespace, body, field_validation=field_validation, dry_run=dry_run
        )
        if not dry_run:
            cluster.applied[(*rtype.store_key, *key)] = {applied_key: copy.deepcopy(body)}
        return created
    old = cluster.objects[rtype.store_key][key]
    given = (body.get("metadata") or {}).get("resourceVersion")
    if given not in (None, "") and str(given) != old["metadata"]["resourceVersion"]:
        raise errors.conflict(rtype.plural, rtype.group, name)
    merged = patching.strategic_merge_patch(copy.deepcopy(old), body)
    previous = cluster.applied.get((*rtype.store_key, *key), {}).get(applied_key)
    if previous is not None:
        patching.remove_unapplied(merged, previous, body)
    merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
    result = cluster.update(
        rtype,
        namespace,
        name,
        merged,
        subresource=subresource,
        field_validation=field_validation,
        dry_run=dry_run,
        require_rv=False,
    )
    if not dry_run:
        cluster.applied.setdefault((*rtype.store_key, *key), {})[applied_key] = copy.deepcopy(body)
    return result
