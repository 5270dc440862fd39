"""OpenAPI v3 documents, enough for kubectl's validation and `kubectl explain`.

kubectl asks `/openapi/v3` for the index, then one document per group/version. It decides
whether the server validates fields itself (`fieldValidation=Strict`) by finding the PATCH
operation tagged with the kind's `x-kubernetes-group-version-kind` and that query parameter.
Custom resources get their CRD schema; built-in types a permissive object schema.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import re
from collections.abc import Iterable
from typing import Any

from gemini_webhooks.kubesandbox.resources import ResourceType

KUBERNETES_VERSION = "1.34"
SERVED_VERSION = f"v{KUBERNETES_VERSION}.0"
_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")

OBJECT_META = {
    "type": "object",
    "description": "Standard object's metadata.",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer", "format": "int64"},
        "creationTimestamp": {"type": "string", "format": "date-time"},
        "deletionTimestamp": {"type": "string", "format": "date-time"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    },
}


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key: GA before beta before alpha, higher numbers first (as Kubernetes does)."""
    m = _VERSION_RE.match(version)
    if not m:
        return (3, 0, 0, version)
    major, level, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[level], -major, -minor, version)


def gv_path(rtype: ResourceType) -> str:
    return f"apis/{rtype.group}/{rtype.version}" if rtype.group else f"api/{rtype.version}"


def schema_name(rtype: ResourceType) -> str:
    if rtype.custom:
        reversed_group = ".".join(reversed(rtype.group.split(".")))
        return f"{reversed_group}.{rtype.version}.{rtype.kind}"
    group = rtype.group.split(".")[0] if rtype.group else "core"
    return f"io.k8s.api.{group}.{rtype.version}.{rtype.kind}"


def _gvk(rtype: ResourceType) -> list[dict[str, str]]:
    return [{"group": rtype.group, "version": rtype.version, "kind": rtype.kind}]


@functools.cache
def builtin_definitions() -> tuple[dict[str, Any], dict[tuple[str, str, str], str]]:
    """Kubernetes' own schemas (from `kubernetes-validate`, if installed), as OpenAPI 3.0
    components, and which component describes each group/version/kind."""
    try:
        package = importlib.resources.files("kubernetes_validate")
    except ModuleNotFoundError:
        return {}, {}
    path = (
        package / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}.0-local" / "_definitions.json"
    )
    try:
        definitions = json.loads(path.read_text())["$defs"]
    except (OSError, KeyError, ValueError):
        return {}, {}
    text = json.dumps(definitions).replace('"#/$defs/', '"#/components/schemas/')
    components: dict[str, Any] = json.loads(text)
    for schema in components.values():
        _openapi_types(schema)
    kinds: dict[tuple[str, str, str], str] = {}
    for name, schema in components.items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            kinds.setdefault(
                (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", "")), name
            )
    return components, kinds


def _openapi_types(schema: Any) -> None:
    """JSON-schema `type: [string, "null"]` -> OpenAPI 3.0 `type: string, nullable: true`."""
    if isinstance(schema, dict):
        kind = schema.get("type")
        if isinstance(kind, list):
            real = [k for k in kind if k != "null"]
            if len(real) == 1:
                schema["type"] = real[0]
            else:
                del schema["type"]
            if "null" in kind:
                schema["nullable"] = True
        for value in schema.values():
            _openapi_types(value)
    elif isinstance(schema, list):
        for item in schema:
            _openapi_types(item)


def _closure(components: dict[str, Any], root: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    pending = [root]
    while pending:
        name = pending.pop()
        if name in found or name not in components:
            continue
        found[name] = components[name]
        pending += re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(components[name]))
    return found


def _kind_schema(rtype: ResourceType) -> dict[str, Any]:
    if rtype.custom and rtype.schema is not None:
        schema: dict[str, Any] = json.loads(json.dumps(rtype.schema))
    else:
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {
        "type": "string",
        "description": "The versioned schema of this representation of an object.",
    }
    properties["kind"] = {
        "type": "string",
        "description": "The REST resource this object represents.",
    }
    properties["metadata"] = {
        "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
        "description": "Standard object's metadata.",
    }
    schema["x-kubernetes-group-version-kind"] = _gvk(rtype)
    return schema


_PARAMS = [
    {"name": "dryRun", "in": "query", "schema": {"type": "string"}, "uniqueItems": True},
    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}, "uniqueItems": True},
    {
        "name": "fieldValidation",
        "in": "query",
        "schema": {"type": "string"},
        "uniqueItems": True,
        "description": "Ignore, Warn or Strict: what to do with unknown or duplicate fields.",
    },
]


def _operation(
    rtype: ResourceType, verb: str, ref: str, *, strategic: bool = False
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{verb}{rtype.kind}",
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": {
            "group": rtype.group,
            "version": rtype.version,
            "kind": rtype.kind,
        },
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}
        },
    }
    if verb in ("post", "put"):
        op["parameters"] = list(_PARAMS)
        op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": ref}}}}
    elif verb == "patch":
        # kubectl computes a strategic merge patch from the served schema (as from a real
        # server's) if the operation accepts one: built-ins do, custom kinds not. Without
        # Kubernetes' own schemas (no patch strategies) kubectl's compiled-in types do better.
        op["parameters"] = list(_PARAMS)
        patch_types = (*_PATCH_TYPES, STRATEGIC_MERGE) if strategic else _PATCH_TYPES
        op["requestBody"] = {"content": {t: {"schema": {"type": "object"}} for t in patch_types}}
    return op


STRATEGIC_MERGE = "application/strategic-merge-patch+json"
_PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
)


_DOCS: dict[tuple[Any, ...], tuple[dict[str, Any], str, list[ResourceType]]] = {}


def _cached(types: Iterable[ResourceType], gv: str) -> tuple[dict[str, Any], str] | None:
    chosen = [t for t in types if gv_path(t) == gv]
    if not chosen:
        return None
    # Types are immutable; a CRD change makes new ones, hence a new key (the entry keeps
    # the types alive, so their ids are not reused while it is cached).
    key = (gv, *sorted((t.plural, id(t)) for t in chosen))
    if key not in _DOCS:
        if len(_DOCS) > 256:
            _DOCS.clear()
        doc = _build_doc(chosen, gv)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        _DOCS[key] = (doc, digest, chosen)
    doc, digest, _ = _DOCS[key]
    return doc, digest


def group_version_doc(types: Iterable[ResourceType], gv: str) -> dict[str, Any] | None:
    cached = _cached(types, gv)
    return None if cached is None else cached[0]


def _build_doc(chosen: list[ResourceType], gv: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": OBJECT_META,
    }
    paths: dict[str, Any] = {}
    components, kinds = builtin_definitions()
    for rtype in chosen:
        builtin = None if rtype.custom else kinds.get((rtype.group, rtype.version, rtype.kind))
        if builtin is not None:
            name = builtin
            schemas.update(_closure(components, builtin))
        else:
            name = schema_name(rtype)
            schemas[name] = _kind_schema(rtype)
        ref = f"#/components/schemas/{name}"
        base = (
            f"/{gv}/namespaces/{{namespace}}/{rtype.plural}"
            if rtype.namespaced
            else f"/{gv}/{rtype.plural}"
        )
        paths[base] = {
            "get": _operation(rtype, "list", ref),
            "post": _operation(rtype, "post", ref),
        }
        paths[f"{base}/{{name}}"] = {
            "get": _operation(rtype, "get", ref),
            "put": _operation(rtype, "put", ref),
            "patch": _operation(rtype, "patch", ref, strategic=builtin is not None),
            "delete": _operation(rtype, "delete", ref),
        }
        for sub in sorted(rtype.subresources):
            paths[f"{base}/{{name}}/{sub}"] = {
                "get": _operation(rtype, "get", ref),
                "put": _operation(rtype, "put", ref),
                "patch": _operation(rtype, "patch", ref, strategic=builtin is not None),
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube sandbox)", "version": SERVED_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def index(types: Iterable[ResourceType]) -> dict[str, Any]:
    types = list(types)
    paths = {}
    for gv in sorted({gv_path(t) for t in types}):
        cached = _cached(types, gv)
        if cached is not None:
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={cached[1]}"}
    return {"paths": paths}
