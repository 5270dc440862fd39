"""Label and field selectors, parsed once into predicates over objects."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gemini_webhooks.kubesandbox.errors import bad_request

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s,]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def label_selector(selector: str) -> Predicate:
    """`a=b,c!=d,e in (f,g),h notin (i),j,!k` -> a predicate over an object's labels."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for requirement in _split(selector):
        if m := _SET_RE.match(requirement):
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            checks.append(_in_set(m.group(1), values, negate=m.group(2) == "notin"))
        elif m := _EQ_RE.match(requirement):
            checks.append(_equals(m.group(1), m.group(3), negate=m.group(2) == "!="))
        elif m := _EXISTS_RE.match(requirement):
            checks.append(_exists(m.group(2), negate=bool(m.group(1))))
        else:
            raise bad_request(f"unable to parse requirement: {requirement.strip()!r}")

    def predicate(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return predicate


def _in_set(key: str, values: set[str], *, negate: bool) -> Callable[[Mapping[str, str]], bool]:
    return lambda labels: (labels.get(key) in values) != negate


def _equals(key: str, value: str, *, negate: bool) -> Callable[[Mapping[str, str]], bool]:
    return lambda labels: (labels.get(key) == value) != negate


def _exists(key: str, *, negate: bool) -> Callable[[Mapping[str, str]], bool]:
    return lambda labels: (key in labels) != negate


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
    for requirement in _split(selector):
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
