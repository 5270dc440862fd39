"""Owner references, as kube-apiserver validates them and the garbage collector reads them.

Pure functions over plain data; the store does the lookups.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gemini_webhooks.kubesandbox.errors import cause

_FIELD = "metadata.ownerReferences"
# The Go struct's field order, which is how kube-apiserver prints an invalid value.
_ORDER = ("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")


def group_version(api_version: Any) -> tuple[str, str]:
    """`apps/v1` -> (`apps`, `v1`), `v1` -> (``, `v1`); anything else -> (``, ``)."""
    if not isinstance(api_version, str) or not api_version:
        return "", ""
    parts = api_version.split("/")
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 2 and parts[1]:
        return parts[0], parts[1]
    return "", ""


def _shown(refs: list[Any]) -> str:
    ordered = [{k: r[k] for k in _ORDER if k in r} if isinstance(r, dict) else r for r in refs]
    return json.dumps(ordered, separators=(",", ":"))


def reference_causes(refs: Any) -> list[dict[str, str]]:
    """kube-apiserver's `ValidateOwnerReferences`: each reference needs an apiVersion with a
    version, a kind, a name and a uid; at most one may be the controller."""
    if refs is None:
        return []
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        return [cause(_FIELD, "FieldValueTypeInvalid", "Invalid value: must be a list of objects")]
    causes = []
    controllers = []
    for index, ref in enumerate(refs):
        where = f"{_FIELD}[{index}]"
        missing = [] if group_version(ref.get("apiVersion"))[1] else ["apiVersion"]
        missing += [
            k for k in ("kind", "name", "uid") if not isinstance(ref.get(k), str) or not ref[k]
        ]
        causes += [
            cause(f"{where}.{key}", "FieldValueRequired", "Required value: must not be empty")
            for key in missing
        ]
        if ref.get("controller") is True:
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        causes.append(
            cause(
                _FIELD,
                "FieldValueInvalid",
                f"Invalid value: {_shown(refs)}: Only one reference can have Controller set to "
                f'true. Found "true" in references for {" and ".join(controllers)}',
            )
        )
    return causes


def owner_present(
    ref: dict[str, Any],
    namespace: str,
    find: Callable[[str, str, str, str], tuple[bool, dict[str, Any] | None]],
) -> bool:
    """Whether the garbage collector sees `ref`'s owner: the object of that group, kind and
    name (namespaced kinds: in the dependent's `namespace`) with that uid. An object of the
    same name with another uid is not the owner. `find(group, kind, name, namespace)`
    answers (kind served?, object or None); an owner of a kind the server does not serve
    cannot be resolved, and the collector keeps the dependent."""
    group, _ = group_version(ref.get("apiVersion"))
    known, obj = find(group, str(ref.get("kind") or ""), str(ref.get("name") or ""), namespace)
    if not known:
        return True
    return obj is not None and obj.get("metadata", {}).get("uid") == ref.get("uid")
