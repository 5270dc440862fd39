"""The three patch flavours of the Kubernetes API, as pure functions.

- JSON merge patch (RFC 7386): `application/merge-patch+json`.
- JSON patch (RFC 6902), via the `jsonpatch` library: `application/json-patch+json`.
  A failing `test` operation is a 422, as on a real API server (kopf relies on this).
- Strategic merge patch: `application/strategic-merge-patch+json`, for built-in types
  only, as far as kubectl and kopf use it: lists of objects merge by their merge key
  (`containers` by `name`, `ports` by `containerPort`/`port`, ...), primitive lists
  listed below merge as sets, and the directives `$patch` (replace/delete/merge),
  `$setElementOrder/<list>`, `$deleteFromPrimitiveList/<list>` and `$retainKeys` apply.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from gemini_webhooks.kubesandbox import errors
from gemini_webhooks.kubesandbox.errors import ApiError

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Field name -> merge key, for the lists of objects of the built-in types we serve.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
    "ports": ("containerPort", "port"),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "secrets": ("name",),
}
# Primitive lists with the `merge` strategy.
MERGE_SETS = frozenset({"finalizers"})


class PatchError(ValueError):
    """The patch is malformed (400) — as opposed to inapplicable (422)."""


class PatchConflict(ValueError):
    """The patch is well-formed but cannot be applied to this object (422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    try:
        patch = jsonpatch.JsonPatch(ops)
    except (jsonpatch.InvalidJsonPatch, TypeError, KeyError) as e:
        raise PatchError(f"invalid JSON patch: {e}") from None
    try:
        result: dict[str, Any] = patch.apply(target)
    except jsonpatch.JsonPatchTestFailed as e:
        raise PatchConflict(
            f"the server rejected our request due to an error in our request: "
            f"testing value failed: {e}"
        ) from None
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException) as e:
        raise PatchConflict(
            f"the server rejected our request due to an error in our request: {e}"
        ) from None
    except (jsonpatch.InvalidJsonPatch, TypeError, KeyError) as e:
        raise PatchError(f"invalid JSON patch: {e}") from None
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    candidates = MERGE_KEYS.get(field)
    if not candidates:
        return None
    for key in candidates:
        if all(isinstance(i, dict) and key in i for i in items if not _is_directive(i)):
            return key
    return candidates[0]


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and "$patch" in item


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"unknown $patch directive: {directive!r}")
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    for key, order in patch.items():
        if key.startswith("$setElementOrder/") and isinstance(order, list):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = _reorder(field, result[field], order)
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if field in MERGE_SETS:
        base = list(current) if isinstance(current, list) else []
        return _patch_order(base + [v for v in patch if v not in base], patch, base, None)
    key = _merge_key(field, patch)
    if key is None or not isinstance(current, list):
        if any(_is_directive(i) and i.get("$patch") == "replace" for i in patch):
            return [copy.deepcopy(i) for i in patch if not _is_directive(i)]
        return [copy.deepcopy(i) for i in patch if not _is_directive(i)]
    if any(_is_directive(i) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not _is_directive(i)]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"list {field!r} items must be objects with the merge key {key!r}")
        index = next(
            (
                n
                for n, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            merged = strategic_merge_patch({}, item)
            result.append(merged)
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return _patch_order(result, patch, current, key)


def _patch_order(
    merged: list[Any], patch: list[Any], server: list[Any], key: str | None
) -> list[Any]:
    """The order kube-apiserver leaves a merged list in (`mergeSortedSlice`): the patch's
    items in patch order and the server-only items in server order, interleaved — a
    server-only item goes first only when both are on the server and it came first.
    Items are told apart by their merge `key` (None: a set of primitives, by value)."""

    def of(item: Any) -> Any:
        if key is None:
            return item
        return item.get(key) if isinstance(item, dict) else None

    ident: list[Any] = []
    for item in patch:
        if not _is_directive(item) and of(item) not in ident:
            ident.append(of(item))
    server_order = [of(i) for i in server]
    right = [m for k in ident for m in merged if of(m) == k]
    left = [i for i in merged if of(i) not in ident]

    def position(item: Any) -> int:
        k = of(item)
        return server_order.index(k) if k in server_order else -1

    ordered: list[Any] = []
    while left and right:
        li, ri = position(left[0]), position(right[0])
        ordered.append(left.pop(0) if li >= 0 and ri >= 0 and li < ri else right.pop(0))
    return ordered + left + right


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    key = MERGE_KEYS.get(field, (None,))[0] if field not in MERGE_SETS else None

    def ident(item: Any) -> Any:
        if key is not None and isinstance(item, dict):
            for candidate in MERGE_KEYS[field]:
                if candidate in item:
                    return item[candidate]
        return item

    wanted = [ident(o) for o in order]
    ranked = [i for w in wanted for i in items if ident(i) == w]
    rest = [i for i in items if ident(i) not in wanted]
    return ranked + rest


def remove_unapplied(live: dict[str, Any], previous: Any, applied: Any, field: str = "") -> None:
    """Delete from `live` (in place) what `previous` applied and `applied` no longer does:
    map keys (only those the manager applied — others' keys stay), and items of keyed
    lists (by merge key). Other lists are atomic: dropped or replaced whole."""
    if not isinstance(previous, dict) or not isinstance(applied, dict):
        return
    for key, old_value in previous.items():
        current = live.get(key)
        if key not in applied and not isinstance(old_value, (dict, list)):
            live.pop(key, None)
            continue
        new_value = applied.get(key, {} if isinstance(old_value, dict) else [])
        if isinstance(old_value, dict) and isinstance(current, dict):
            remove_unapplied(current, old_value, new_value, key)
            if key not in applied and not current:
                live.pop(key, None)
        elif isinstance(old_value, list) and isinstance(current, list):
            merge_key = (
                _merge_key(key, [*old_value, *new_value]) if isinstance(new_value, list) else None
            )
            if merge_key is None:
                if key not in applied:
                    live.pop(key, None)
                continue
            wanted = {i.get(merge_key) for i in new_value if isinstance(i, dict)}
            dropped = {i.get(merge_key) for i in old_value if isinstance(i, dict)} - wanted
            kept = [i for i in current if not (isinstance(i, dict) and i.get(merge_key) in dropped)]
            live[key] = kept
            by_key = {i.get(merge_key): i for i in new_value if isinstance(i, dict)}
            before = {i.get(merge_key): i for i in old_value if isinstance(i, dict)}
            for item in kept:
                if isinstance(item, dict) and item.get(merge_key) in by_key:
                    remove_unapplied(
                        item, before.get(item.get(merge_key)), by_key[item.get(merge_key)], key
                    )
            if key not in applied and not kept:
                live.pop(key, None)


def patch_document(
    document: dict[str, Any], content_type: str, patch_body: Any, *, custom: bool
) -> tuple[Any, str]:
    """Apply a patch of the given media type to a copy of `document`."""
    content_type = content_type.split(";")[0].strip()
    current = copy.deepcopy(document)
    try:
        if content_type == JSON_PATCH:
            return json_patch(current, patch_body), content_type
        if content_type == MERGE_PATCH:
            if not isinstance(patch_body, dict):
                raise PatchError("a merge patch must be a JSON object")
            return merge_patch(current, patch_body), content_type
        if content_type == STRATEGIC_MERGE_PATCH:
            if custom:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media "
                    "types include: application/json-patch+json, "
                    "application/merge-patch+json, application/apply-patch+yaml",
                )
            if not isinstance(patch_body, dict):
                raise PatchError("a strategic merge patch must be a JSON object")
            return strategic_merge_patch(current, patch_body), content_type
    except PatchError as e:
        raise errors.bad_request(str(e)) from None
    except PatchConflict as e:
        raise ApiError(422, "Invalid", str(e)) from None
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the media type {content_type!r} is not a supported patch type",
    )
