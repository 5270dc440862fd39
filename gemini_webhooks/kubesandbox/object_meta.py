"""What ObjectMeta may hold, as kube-apiserver validates it: the name, labels, annotations,
finalizers (the standard ones named here) and owner references."""

from __future__ import annotations

import re
from typing import Any

from gemini_webhooks.kubesandbox import owners
from gemini_webhooks.kubesandbox.errors import cause
from gemini_webhooks.kubesandbox.resources import ResourceType

Obj = dict[str, Any]
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAMED = {("", "namespaces"), ("", "services")}


def validate_meta(rtype: ResourceType, obj: Obj) -> list[dict[str, str]]:
    causes = []
    meta = obj["metadata"]
    name = meta.get("name")
    pattern, limit, what, chars = (
        (_DNS_LABEL, 63, "RFC 1123 label", "alphanumeric characters or '-'")
        if (rtype.group, rtype.plural) in _LABEL_NAMED
        else (_DNS_SUBDOMAIN, 253, "RFC 1123 subdomain", "alphanumeric characters, '-' or '.'")
    )
    if not name:
        causes.append(
            cause(
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        )
    elif not isinstance(name, str) or len(name) > limit or not pattern.match(name):
        causes.append(
            cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase {what} must consist of lower case '
                f"{chars}, and must start and end with an alphanumeric character",
            )
        )
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            causes.append(
                cause(
                    f"metadata.{field}",
                    "FieldValueTypeInvalid",
                    "Invalid value: must be a map of strings",
                )
            )
    finalizers = meta.get("finalizers")
    if finalizers is not None and (
        not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
    ):
        causes.append(
            cause(
                "metadata.finalizers",
                "FieldValueTypeInvalid",
                "Invalid value: must be a list of strings",
            )
        )
    causes += _validate_keys_and_values(meta)
    causes += owners.reference_causes(meta.get("ownerReferences"))
    return causes


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_STANDARD_FINALIZERS = {"kubernetes", ORPHAN, FOREGROUND, CRD_CLEANUP}
_NAME_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character"
)


def _qualified_name_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return _NAME_RULE + " (and be at most 63 characters)"
    return None


def _validate_keys_and_values(meta: Obj) -> list[dict[str, str]]:
    """Label/annotation keys, label values and finalizer names, as the API server checks them."""
    causes = []
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            # kube-apiserver checks annotation keys lower-cased (`Example.COM/x` is fine).
            problem = _qualified_name_problem(key.lower() if field == "annotations" else key)
            if problem:
                causes.append(
                    cause(
                        f"metadata.{field}",
                        "FieldValueInvalid",
                        f'Invalid value: "{key}": {problem}',
                    )
                )
            if (
                field == "labels"
                and isinstance(value, str)
                and value
                and (len(value) > 63 or not _QUALIFIED_NAME.match(value))
            ):
                causes.append(
                    cause(
                        "metadata.labels",
                        "FieldValueInvalid",
                        f'Invalid value: "{value}": a valid label must be an empty '
                        "string or consist of alphanumeric characters, '-', '_' or "
                        "'.', and must start and end with an alphanumeric character "
                        "(at most 63 characters)",
                    )
                )
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        size = sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str))
        if size > 256 * 1024:
            causes.append(
                cause(
                    "metadata.annotations",
                    "FieldValueTooLong",
                    "Too long: must have at most 262144 bytes",
                )
            )
    for index, finalizer in enumerate(meta.get("finalizers") or []):
        if not isinstance(finalizer, str):
            continue
        problem = _qualified_name_problem(finalizer)
        if problem is None and "/" not in finalizer and finalizer not in _STANDARD_FINALIZERS:
            problem = "name is neither a standard finalizer name nor is it fully qualified"
        if problem:
            causes.append(
                cause(
                    f"metadata.finalizers[{index}]",
                    "FieldValueInvalid",
                    f'Invalid value: "{finalizer}": {problem}',
                )
            )
    return causes
