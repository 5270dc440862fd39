"""OpenAPI v3 documents, enough for kubectl's validation and `kubectl explain`.

kubectl asks `/openapi/v3` for the index, then one document per group/version. It decides
whether the server validates fields itself (`fieldValidation=Strict`) by finding the PATCH
operation tagged with the kind's `x-kubernetes-group-version-kind` and that query parameter.
Custom resources get their CRD schema; built-in types a permissive object schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from gemini_webhooks.kubesandbox.resources import ResourceType

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


def _gv_path(rtype: ResourceType) -> str:
    return f"apis/{rtype.group}/{rtype.version}" if rtype.group else f"api/{rtype.version}"


def _schema_name(rtype: ResourceType) -> str:
    if rtype.custom:
        reversed_group = ".".join(reversed(rtype.group.split(".")))
        return f"{reversed_group}.{rtype.version}.{rtype.kind}"
    group = rtype.group.split(".")[0] if rtype.group else "core"
    return f"io.k8s.api.{group}.{rtype.version}.{rtype.kind}"


def _gvk(rtype: ResourceType) -> list[dict[str, str]]:
    return [{"group": rtype.group, "version": rtype.version, "kind": rtype.kind}]


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


def _operation(rtype: ResourceType, verb: str, ref: str) -> dict[str, Any]:
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
    if verb in ("post", "put", "patch"):
        op["parameters"] = list(_PARAMS)
        op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": ref}}}}
    return op


def group_version_doc(types: Iterable[ResourceType], gv: str) -> dict[str, Any] | None:
    chosen = [t for t in types if _gv_path(t) == gv]
    if not chosen:
        return None
    schemas: dict[str, Any] = {
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": OBJECT_META,
    }
    paths: dict[str, Any] = {}
    for rtype in chosen:
        name = _schema_name(rtype)
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
            "patch": _operation(rtype, "patch", ref),
            "delete": _operation(rtype, "delete", ref),
        }
        for sub in sorted(rtype.subresources):
            paths[f"{base}/{{name}}/{sub}"] = {
                "get": _operation(rtype, "get", ref),
                "put": _operation(rtype, "put", ref),
                "patch": _operation(rtype, "patch", ref),
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube sandbox)", "version": "v1.34.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def index(types: Iterable[ResourceType]) -> dict[str, Any]:
    types = list(types)
    paths = {}
    for gv in sorted({_gv_path(t) for t in types}):
        doc = group_version_doc(types, gv)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}
