"""`meta.k8s.io/v1 Table` responses: what `kubectl get` prints.

Custom resources get their `additionalPrinterColumns` (Name + Age when they have none);
the built-in types get the columns kubectl users know.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gemini_webhooks.contracts import label_selector
from gemini_webhooks.contracts.times import parse_rfc3339
from gemini_webhooks.kubesandbox.resources import ResourceType

_STEP_RE = re.compile(
    r"""\.([A-Za-z0-9_\-$]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*["']([^"']*)["']\)\]"""
)


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    value: Any = obj
    position = 0
    while position < len(path) and value is not None:
        m = _STEP_RE.match(path, position)
        if m is None:
            return None
        position = m.end()
        key, index, filter_key, filter_value = m.groups()
        if key is not None:
            value = value.get(key) if isinstance(value, Mapping) else None
        elif index is not None:
            value = (
                value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
            )
        else:
            matches = [
                item
                for item in (value if isinstance(value, list) else [])
                if isinstance(item, Mapping)
                and str(jsonpath(item, "." + filter_key)) == filter_value
            ]
            value = matches[0] if matches else None
    return value


def age(timestamp: str | None, now: datetime.datetime) -> str:
    if not timestamp:
        return "<unknown>"
    then = parse_rfc3339(timestamp)
    if then is None:
        return "<invalid>"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


Column = tuple[str, str, Callable[[Mapping[str, Any], datetime.datetime], Any]]


def _meta_age(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    return age(obj.get("metadata", {}).get("creationTimestamp"), now)


def _ports(obj: Mapping[str, Any], _: datetime.datetime) -> str:
    ports = obj.get("spec", {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _ready(obj: Mapping[str, Any], _: datetime.datetime) -> str:
    status = obj.get("status") or {}
    return f"{status.get('readyReplicas', 0)}/{obj.get('spec', {}).get('replicas', 1)}"


def _involved(obj: Mapping[str, Any], _: datetime.datetime) -> str:
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


def _event_age(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    return age(
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or obj.get("metadata", {}).get("creationTimestamp"),
        now,
    )


def _or_na(value: Any) -> str:
    return "N/A" if value is None else str(value)


NAME: Column = ("Name", "string", lambda o, _: o.get("metadata", {}).get("name", ""))
AGE: Column = ("Age", "date", _meta_age)

BUILTIN_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "namespaces"): [
        NAME,
        ("Status", "string", lambda o, _: o.get("status", {}).get("phase", "Active")),
        AGE,
    ],
    ("", "secrets"): [
        NAME,
        ("Type", "string", lambda o, _: o.get("type", "Opaque")),
        ("Data", "integer", lambda o, _: len(o.get("data") or {})),
        AGE,
    ],
    ("", "configmaps"): [
        NAME,
        ("Data", "integer", lambda o, _: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        AGE,
    ],
    ("", "services"): [
        NAME,
        ("Type", "string", lambda o, _: o.get("spec", {}).get("type", "ClusterIP")),
        ("Cluster-IP", "string", lambda o, _: o.get("spec", {}).get("clusterIP", "<none>")),
        (
            "External-IP",
            "string",
            lambda o, _: ",".join(o.get("spec", {}).get("externalIPs") or []) or "<none>",
        ),
        ("Port(s)", "string", _ports),
        AGE,
    ],
    ("", "serviceaccounts"): [
        NAME,
        ("Secrets", "integer", lambda o, _: len(o.get("secrets") or [])),
        AGE,
    ],
    ("apps", "deployments"): [
        NAME,
        ("Ready", "string", _ready),
        ("Up-to-date", "integer", lambda o, _: (o.get("status") or {}).get("updatedReplicas", 0)),
        ("Available", "integer", lambda o, _: (o.get("status") or {}).get("availableReplicas", 0)),
        AGE,
    ],
    ("", "events"): [
        ("Last Seen", "string", _event_age),
        ("Type", "string", lambda o, _: o.get("type", "")),
        ("Reason", "string", lambda o, _: o.get("reason", "")),
        ("Object", "string", _involved),
        ("Message", "string", lambda o, _: o.get("message") or o.get("note") or ""),
    ],
    ("coordination.k8s.io", "leases"): [
        NAME,
        ("Holder", "string", lambda o, _: o.get("spec", {}).get("holderIdentity", "")),
        AGE,
    ],
    ("policy", "poddisruptionbudgets"): [
        NAME,
        ("Min Available", "string", lambda o, _: _or_na(o.get("spec", {}).get("minAvailable"))),
        (
            "Max Unavailable",
            "string",
            lambda o, _: _or_na(o.get("spec", {}).get("maxUnavailable")),
        ),
        (
            "Allowed Disruptions",
            "integer",
            lambda o, _: (o.get("status") or {}).get("disruptionsAllowed", 0),
        ),
        AGE,
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        NAME,
        ("Created At", "date", lambda o, _: o.get("metadata", {}).get("creationTimestamp", "")),
    ],
}
BUILTIN_COLUMNS[("events.k8s.io", "events")] = BUILTIN_COLUMNS[("", "events")]


def _ingress_hosts(obj: Any, _: datetime.datetime) -> str:
    hosts = [r.get("host") for r in (obj.get("spec") or {}).get("rules") or [] if r.get("host")]
    return ",".join(hosts) or "*"


def _ingress_address(obj: Any, _: datetime.datetime) -> str:
    found = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return ",".join(str(a.get("ip") or a.get("hostname") or "") for a in found)


def _ingress_ports(obj: Any, _: datetime.datetime) -> str:
    return "80, 443" if (obj.get("spec") or {}).get("tls") else "80"


def _pod_selector(obj: Any, _: datetime.datetime) -> str:
    """As metav1.FormatLabelSelector prints it."""
    try:
        selector = label_selector.from_object((obj.get("spec") or {}).get("podSelector") or {})
    except label_selector.SelectorError:
        return "<error>"
    return str(selector) or "<none>"


# As `kubectl get` shows them from a real API server.
BUILTIN_COLUMNS[("networking.k8s.io", "ingresses")] = [
    NAME,
    ("Class", "string", lambda o, _: (o.get("spec") or {}).get("ingressClassName") or "<none>"),
    ("Hosts", "string", _ingress_hosts),
    ("Address", "string", _ingress_address),
    ("Ports", "string", _ingress_ports),
    AGE,
]
BUILTIN_COLUMNS[("networking.k8s.io", "networkpolicies")] = [
    NAME,
    ("Pod-Selector", "string", _pod_selector),
    AGE,
]


def _custom_columns(rtype: ResourceType) -> list[Column]:
    if not rtype.printer_columns:
        return [NAME, AGE]
    columns: list[Column] = [NAME]
    for spec in rtype.printer_columns:
        path = str(spec.get("jsonPath", ""))
        kind = str(spec.get("type", "string"))

        def cell(
            obj: Mapping[str, Any], now: datetime.datetime, p: str = path, k: str = kind
        ) -> Any:
            value = jsonpath(obj, p)
            if value is None:
                return None
            if k == "date":
                return age(str(value), now)
            if isinstance(value, (dict, list)):
                return json.dumps(value)
            return value

        columns.append((str(spec.get("name", path)), kind, cell))
    return columns


def columns_for(rtype: ResourceType) -> list[Column]:
    if rtype.custom:
        return _custom_columns(rtype)
    return BUILTIN_COLUMNS.get((rtype.group, rtype.plural), [NAME, AGE])


def table(
    rtype: ResourceType,
    objects: Sequence[Mapping[str, Any]],
    resource_version: str,
    now: datetime.datetime,
    *,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    columns = columns_for(rtype)
    printer = {spec.get("name"): spec for spec in rtype.printer_columns}
    definitions = []
    for name, kind, _ in columns:
        spec = printer.get(name, {})
        definitions.append(
            {
                "name": name,
                "type": "string" if kind == "date" else kind,
                "format": "name" if name == "Name" else str(spec.get("format", "")),
                "description": str(spec.get("description", "")),
                "priority": int(spec.get("priority", 0)),
            }
        )
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [fn(obj, now) for _, _, fn in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
