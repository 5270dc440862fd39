"""CustomResourceDefinitions: what the API server checks and defaults in one, and the
status it writes when it accepts its names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gemini_webhooks.contracts.times import now_rfc3339
from gemini_webhooks.kubesandbox.errors import cause
from gemini_webhooks.kubesandbox.resources import ResourceType

Obj = dict[str, Any]
CRDS = "customresourcedefinitions.apiextensions.k8s.io"  # their group-resource


def admit(obj: Obj, old: Obj | None, served: Iterable[ResourceType]) -> list[dict[str, str]]:
    causes = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [cause("spec", "FieldValueRequired", "Required value")]
    names: dict[str, Any] = spec["names"] if isinstance(spec.get("names"), dict) else {}
    group = spec.get("group")
    if not group:
        causes.append(cause("spec.group", "FieldValueRequired", "Required value"))
    for field in ("plural", "kind"):
        if not names.get(field):
            causes.append(cause(f"spec.names.{field}", "FieldValueRequired", "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            cause(
                "spec.scope",
                "FieldValueNotSupported",
                f'Unsupported value: "{spec.get("scope")}": supported values: '
                '"Cluster", "Namespaced"',
            )
        )
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(cause("spec.versions", "FieldValueRequired", "Required value"))
        versions = []
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
    if versions and len(storage) != 1:
        causes.append(
            cause(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    for index, version in enumerate(versions):
        if not isinstance(version, dict) or not version.get("name"):
            causes.append(
                cause(f"spec.versions[{index}].name", "FieldValueRequired", "Required value")
            )
            continue
        version.setdefault("served", True)
        openapi = (version.get("schema") or {}).get("openAPIV3Schema")
        if not isinstance(openapi, dict):
            causes.append(
                cause(
                    f"spec.versions[{index}].schema.openAPIV3Schema",
                    "FieldValueRequired",
                    "Required value: schemas are required",
                )
            )
        elif openapi.get("type") != "object":
            causes.append(
                cause(
                    f"spec.versions[{index}].schema.openAPIV3Schema.type",
                    "FieldValueRequired",
                    "Required value: must be object at the root",
                )
            )
    name = obj["metadata"].get("name")
    if group and names.get("plural") and name != f"{names['plural']}.{group}":
        causes.append(
            cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    if old is not None and old.get("spec", {}).get("group") != group:
        causes.append(cause("spec.group", "FieldValueInvalid", "Invalid value: field is immutable"))
    if causes:
        return causes
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", f"{names['kind']}List")
    spec.setdefault("conversion", {"strategy": "None"})
    for rtype in served:
        if rtype.group == group and rtype.plural == names["plural"] and not rtype.custom:
            return [
                cause(
                    "spec.names.plural",
                    "FieldValueInvalid",
                    "Invalid value: conflicts with a built-in type",
                )
            ]
    return []


def establish(crd: Obj) -> None:
    names = dict(crd["spec"]["names"])
    stamp = now_rfc3339()
    crd["status"] = {
        "acceptedNames": names,
        "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": stamp,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": stamp,
            },
        ],
    }
