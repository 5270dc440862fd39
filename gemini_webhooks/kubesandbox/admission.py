"""Admission: what the API server normalises, defaults and refuses in an object before it
stores it, per type (Secrets, Services, Deployments, CRDs, custom resources' schemas)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from typing import Any

from gemini_webhooks.contracts import label_selector
from gemini_webhooks.kubesandbox import builtin_validation, crds, errors, schema
from gemini_webhooks.kubesandbox.errors import ApiError, cause
from gemini_webhooks.kubesandbox.object_meta import validate_meta
from gemini_webhooks.kubesandbox.resources import ResourceType

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or "", name)


def check_namespace(
    rtype: ResourceType, namespace: str | None, namespaces: dict[ObjKey, Obj], *, creating: bool
) -> None:
    """A namespaced write names an existing Namespace that is not being deleted."""
    if not rtype.namespaced:
        return
    if not namespace:
        raise errors.bad_request(
            "the namespace of the object must be given for a namespaced resource"
        )
    ns = namespaces.get(("", namespace))
    if ns is None:
        raise errors.not_found("namespaces", "", namespace)
    if creating and ns["metadata"].get("deletionTimestamp"):
        raise ApiError(
            403,
            "Forbidden",
            f'{rtype.plural} "" is forbidden: unable to create new content in namespace '
            f"{namespace} because it is being terminated",
        )


def check_body(rtype: ResourceType, body: Any) -> Obj:
    """The body is an object of this type (its apiVersion and kind, when given, say so)."""
    if not isinstance(body, dict):
        raise errors.bad_request("the request body must be a JSON object")
    api_version = body.get("apiVersion")
    kind = body.get("kind")
    if api_version is not None and api_version != rtype.api_version:
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({rtype.api_version})"
        )
    if kind is not None and kind != rtype.kind:
        raise errors.bad_request(f"the kind in the data ({kind}) does not match {rtype.kind}")
    if not isinstance(body.get("metadata", {}), dict):
        raise errors.bad_request("metadata must be an object")
    return body


def admit(
    rtype: ResourceType,
    obj: Obj,
    old: Obj | None,
    field_validation: str,
    *,
    served: Iterable[ResourceType],
    allocate_cluster_ip: Callable[[], str],
) -> list[str]:
    """Type-specific normalisation, schema, validation. Returns warnings."""
    warnings: list[str] = []
    if not rtype.custom:
        unknown = builtin_validation.prune_unknown(obj, rtype.group, rtype.version, rtype.kind)
        warnings += _unknown_fields(rtype, unknown, field_validation)
        if field_validation == "Strict":
            builtin_validation.check_strict(obj, rtype.kind, rtype.group)
    causes = validate_meta(rtype, obj)
    kind_key = (rtype.group, rtype.plural)
    if old is not None:
        causes += _immutable_fields(kind_key, obj, old)
    if kind_key == ("", "secrets"):
        causes += _fold_secret(obj)
    elif kind_key == ("", "services"):
        _default_service(obj, old, allocate_cluster_ip)
    elif kind_key == ("apps", "deployments"):
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            causes += _deployment_selector(spec)
    elif kind_key == ("", "namespaces"):
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif kind_key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        causes += crds.admit(obj, old, served)
    if not rtype.custom:
        builtin_validation.apply_defaults(rtype.group, rtype.plural, obj)
        causes += builtin_validation.causes(rtype.group, rtype.plural, obj)
    if rtype.custom and rtype.schema is not None:
        unknown, schema_causes = schema.admit(obj, rtype.schema)
        warnings += _unknown_fields(rtype, unknown, field_validation)
        causes += schema_causes
    if causes:
        raise errors.invalid(rtype.kind, rtype.group, obj["metadata"].get("name", ""), causes)
    return warnings


def _unknown_fields(rtype: ResourceType, unknown: list[str], field_validation: str) -> list[str]:
    """Fields the type does not know: refused when Strict, warned of when Warn."""
    if unknown and field_validation == "Strict":
        quoted = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise errors.bad_request(
            f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
            f"{rtype.kind}: strict decoding error: {quoted}"
        )
    if unknown and field_validation == "Warn":
        return [f'unknown field "{u}"' for u in unknown]
    return []


def _default_service(obj: Obj, old: Obj | None, allocate_cluster_ip: Callable[[], str]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    if old is not None and old.get("spec", {}).get("clusterIP"):
        spec["clusterIP"] = old["spec"]["clusterIP"]
    elif spec.get("clusterIP") is None:
        spec["clusterIP"] = allocate_cluster_ip()
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    spec.setdefault("sessionAffinity", "None")


def _deployment_selector(spec: Obj) -> list[dict[str, str]]:
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        return [cause("spec.selector", "FieldValueRequired", "Required value")]
    try:
        selects = label_selector.from_object(selector)
    except label_selector.SelectorError as error:
        return [cause("spec.selector", "FieldValueInvalid", f"Invalid value: {error}")]
    template: Obj = spec["template"] if isinstance(spec.get("template"), dict) else {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selects.matches(labels):
        return [
            cause(
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {labels!r}: `selector` does not match template `labels`",
            )
        ]
    return []


def _immutable_fields(kind_key: tuple[str, str], new: Obj, old: Obj) -> list[dict[str, str]]:
    def changed(*path: str) -> bool:
        a: Any = new
        b: Any = old
        for part in path:
            a = a.get(part) if isinstance(a, dict) else None
            b = b.get(part) if isinstance(b, dict) else None
        return bool(a != b)

    immutable = "Invalid value: field is immutable"
    causes = []
    if kind_key in (("", "secrets"), ("", "configmaps")) and old.get("immutable") is True:
        if new.get("immutable") is not True:
            causes.append(
                cause(
                    "immutable",
                    "FieldValueForbidden",
                    "Forbidden: field is immutable when `immutable` is set",
                )
            )
        for field in ("data", "binaryData", "stringData"):
            if new.get(field) is not None and changed(field):
                causes.append(
                    cause(
                        field,
                        "FieldValueForbidden",
                        "Forbidden: field is immutable when `immutable` is set",
                    )
                )
    if kind_key == ("", "secrets") and new.get("type", "Opaque") != old.get("type", "Opaque"):
        causes.append(cause("type", "FieldValueInvalid", immutable))
    if kind_key == ("apps", "deployments") and changed("spec", "selector"):
        causes.append(cause("spec.selector", "FieldValueInvalid", immutable))
    return causes


def _fold_secret(obj: Obj) -> list[dict[str, str]]:
    causes = []
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        return [cause("data", "FieldValueTypeInvalid", "Invalid value: must be a map of strings")]
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            # The API server fails to decode such a body at all: 400, not 422.
            raise errors.bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                f"in data[{key}]"
            ) from None
    string_data = obj.pop("stringData", None) or {}
    if not isinstance(string_data, dict):
        return [
            cause("stringData", "FieldValueTypeInvalid", "Invalid value: must be a map of strings")
        ]
    for key, value in string_data.items():
        if not isinstance(value, str):
            causes.append(
                cause(
                    f"stringData[{key}]", "FieldValueTypeInvalid", "Invalid value: must be a string"
                )
            )
            continue
        data[key] = base64.b64encode(value.encode()).decode()
    if data:
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    return causes
