"""Label and field selectors, parsed once into predicates over objects."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gemini_webhooks.contracts import label_selector as label_selectors
from gemini_webhooks.kubesandbox.errors import bad_request

Predicate = Callable[[Mapping[str, Any]], bool]

_EQ_RE = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s,]*)\s*$")


def label_selector(selector: str) -> Predicate:
    """A `labelSelector` query -> a predicate over an object's labels; 400 when malformed."""
    try:
        return label_selectors.parse(selector).selects
    except label_selectors.SelectorError as error:
        raise bad_request(str(error)) from None


def _lookup(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field_equals(path: str, value: str, *, negate: bool) -> Predicate:
    return lambda obj: (_lookup(obj, path) == value) != negate


_EVENT_FIELDS = frozenset(
    [
        f"involvedObject.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    ]
    + [f"regarding.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion")]
    + ["reason", "reportingComponent", "reportingController", "source", "type"]
)
# Beyond metadata.name/metadata.namespace, what each built-in type lets you select on.
FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "secrets"): frozenset({"type"}),
    ("", "events"): _EVENT_FIELDS,
    ("events.k8s.io", "events"): _EVENT_FIELDS,
    ("", "namespaces"): frozenset({"status.phase"}),
    ("", "services"): frozenset({"spec.clusterIP", "spec.type"}),
    ("", "pods"): frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        }
    ),
}
ALWAYS_SELECTABLE = frozenset({"metadata.name", "metadata.namespace"})


def field_selector(
    selector: str, allowed: frozenset[str] | None = None, *, legacy: bool = False
) -> Predicate:
    """`metadata.name=x,metadata.namespace!=y` (`=`, `==`, `!=`) over the `allowed` fields
    (and metadata.name/namespace); any other field is refused, as the API server does: in
    the words of the type's own field-label conversion (`legacy`: secrets, pods, events,
    ...) or of the generic one, which lists what is selectable."""
    checks: list[Predicate] = []
    for requirement in filter(str.strip, selector.split(",")):
        m = _EQ_RE.match(requirement)
        if not m:
            raise bad_request(f"invalid field selector: {requirement.strip()!r}")
        if allowed is not None and m.group(1) not in allowed | ALWAYS_SELECTABLE:
            if legacy:
                raise bad_request(f"field label not supported: {m.group(1)}")
            known = ", ".join(
                f'"{f}"' for f in ["metadata.name", "metadata.namespace", *sorted(allowed)]
            )
            raise bad_request(f'"{m.group(1)}" is not a known field selector: only {known}')
        checks.append(_field_equals(m.group(1), m.group(3), negate=m.group(2) == "!="))
    return lambda obj: all(check(obj) for check in checks)


def combined(
    labels: str | None,
    fields: str | None,
    allowed_fields: frozenset[str] | None = None,
    *,
    legacy: bool = False,
) -> Predicate | None:
    predicates = []
    if labels:
        predicates.append(label_selector(labels))
    if fields:
        predicates.append(field_selector(fields, allowed_fields, legacy=legacy))
    if not predicates:
        return None
    return lambda obj: all(p(obj) for p in predicates)
