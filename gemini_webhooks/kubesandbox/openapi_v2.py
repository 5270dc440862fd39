"""OpenAPI v2 (Swagger) definitions, in the protobuf encoding kubectl asks for.

kubectl validates a `kind: List` document on the client with the v2 schema (its v3 query
parameter check always answers "unsupported" for List) and fetches `/openapi/v2` only as
`application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (gnostic's `openapi.v2.Document`).
Without a document, `kubectl apply -f` of a List fails before sending anything.

The definitions are the v3 components of every served group/version, converted the way
the API server converts them for v2: `$ref`s point at `#/definitions/`, `nullable` goes
(for custom resources a nullable field also loses its type, as the apiextensions server
does), what v2 cannot say (`oneOf`, `anyOf`, `not`) goes, and a field that keeps unknown
fields loses its properties. Paths are not published: kubectl reads only definitions.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from typing import Any

from gemini_webhooks.kubesandbox import openapi
from gemini_webhooks.kubesandbox.resources import ResourceType

# What clients ask for (the `@` form, which Go's mime parser rejects in a response) and
# what kube-openapi answers with.
PROTOBUF_ACCEPTED = (
    "com.github.proto-openapi.spec.v2@v1.0+protobuf",
    "com.github.proto-openapi.spec.v2.v1.0+protobuf",
)
PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_V3_REF = "#/components/schemas/"
_V2_REF = "#/definitions/"
_PRIMITIVES = {"string", "integer", "number", "boolean"}


def definitions(types: Iterable[ResourceType]) -> dict[str, Any]:
    """Every served type's schema (and what it refers to), as Swagger 2.0 definitions."""
    result: dict[str, Any] = {}
    _, kubernetes_kinds = openapi.builtin_definitions()
    # Built-ins first: their ObjectMeta is Kubernetes' own, a custom kind's a short one.
    for rtype in sorted(types, key=lambda t: t.custom):
        if not rtype.custom and (rtype.group, rtype.version, rtype.kind) not in kubernetes_kinds:
            # No schema of Kubernetes' own (no `kubernetes-validate`): publish nothing, so
            # kubectl skips validating it and takes patch strategies from its compiled-in
            # types, instead of failing against a permissive stand-in.
            continue
        doc = openapi.group_version_doc([rtype], openapi.gv_path(rtype))
        if doc is None:
            continue
        own = openapi.schema_name(rtype)
        for name, schema in doc["components"]["schemas"].items():
            if name not in result:
                result[name] = to_v2(schema, custom=rtype.custom and name == own)
    return result


def document(types: Iterable[ResourceType]) -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes (kube sandbox)", "version": openapi.SERVED_VERSION},
        "paths": {},
        "definitions": definitions(types),
    }


def to_v2(schema: Any, *, custom: bool) -> Any:
    """One v3 schema as v2, the way kube-apiserver publishes it (see the module doc)."""
    if not isinstance(schema, dict):
        return schema
    s = dict(schema)
    all_of = s.pop("allOf", None)
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
        s["$ref"] = all_of[0]["$ref"]
    one_of = s.pop("oneOf", None)
    if isinstance(one_of, list) and "type" not in s:
        kinds = {o.get("type") for o in one_of if isinstance(o, dict)}
        if "string" in kinds and kinds <= _PRIMITIVES:
            s["type"] = "string"  # IntOrString, Quantity: what Kubernetes publishes
    for keyword in ("anyOf", "not", "$schema", "definitions", "patternProperties"):
        s.pop(keyword, None)
    if "$ref" in s:
        ref = str(s["$ref"]).replace(_V3_REF, _V2_REF)
        kept = {k: v for k, v in s.items() if k == "description" or k.startswith("x-")}
        return {"$ref": ref, **kept}
    nullable = s.pop("nullable", False)
    if custom and nullable:
        s.pop("type", None)
        s.pop("properties", None)
        s.pop("items", None)
    if custom and s.get("x-kubernetes-preserve-unknown-fields"):
        s.pop("properties", None)
        s.pop("items", None)
    if isinstance(s.get("type"), list):
        del s["type"]
    if isinstance(s.get("properties"), dict):
        props = s["properties"]
        s["properties"] = {k: to_v2(v, custom=custom) for k, v in props.items()}
        if custom and isinstance(s.get("required"), list):
            s["required"] = [
                r
                for r in s["required"]
                if not (isinstance(props.get(r), dict) and props[r].get("nullable"))
            ]
    if isinstance(s.get("items"), dict):
        s["items"] = to_v2(s["items"], custom=custom)
    elif "items" in s:
        del s["items"]
    if s.get("type") == "array" and "items" not in s:
        del s["type"]  # kubectl refuses an array without an item schema
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = to_v2(s["additionalProperties"], custom=custom)
    return s


# --- gnostic's openapi.v2 protobuf encoding ------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string(number: int, value: Any) -> bytes:
    return _field(number, str(value).encode()) if value not in (None, "") else b""


def _int(number: int, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return b""
    return _varint(number << 3) + _varint(int(value))


def _bool(number: int, value: Any) -> bytes:
    return _varint(number << 3) + b"\x01" if value is True else b""


def _double(number: int, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return b""
    return _varint(number << 3 | 1) + struct.pack("<d", float(value))


def _any(value: Any) -> bytes:
    """gnostic `Any`: the value as YAML text (JSON is YAML)."""
    return _string(2, json.dumps(value))


def _named_any(name: str, value: Any) -> bytes:
    return _string(1, name) + _field(2, _any(value))


def _extensions(number: int, schema: dict[str, Any]) -> bytes:
    return b"".join(
        _field(number, _named_any(k, v)) for k, v in schema.items() if k.startswith("x-")
    )


def encode_schema(s: dict[str, Any]) -> bytes:
    out = [
        _string(1, s.get("$ref")),
        _string(2, s.get("format")),
        _string(3, s.get("title")),
        _string(4, s.get("description")),
        _field(5, _any(s["default"])) if "default" in s else b"",
        _double(6, s.get("multipleOf")),
        _double(7, s.get("maximum")),
        _bool(8, s.get("exclusiveMaximum")),
        _double(9, s.get("minimum")),
        _bool(10, s.get("exclusiveMinimum")),
        _int(11, s.get("maxLength")),
        _int(12, s.get("minLength")),
        _string(13, s.get("pattern")),
        _int(14, s.get("maxItems")),
        _int(15, s.get("minItems")),
        _bool(16, s.get("uniqueItems")),
        _int(17, s.get("maxProperties")),
        _int(18, s.get("minProperties")),
        *(_string(19, r) for r in s.get("required") or []),
        *(_field(20, _any(e)) for e in s.get("enum") or []),
    ]
    additional = s.get("additionalProperties")
    if isinstance(additional, dict):
        out.append(_field(21, _field(1, encode_schema(additional))))
    elif isinstance(additional, bool):
        out.append(_field(21, _varint(2 << 3) + _varint(int(additional))))
    if isinstance(s.get("type"), str):
        out.append(_field(22, _string(1, s["type"])))
    if isinstance(s.get("items"), dict):
        out.append(_field(23, _field(1, encode_schema(s["items"]))))
    if isinstance(s.get("properties"), dict):
        named = b"".join(
            _field(1, _string(1, name) + _field(2, encode_schema(sub)))
            for name, sub in s["properties"].items()
            if isinstance(sub, dict)
        )
        out.append(_field(25, named))
    out.append(_bool(27, s.get("readOnly")))
    out.append(_extensions(31, s))
    return b"".join(out)


def encode_document(doc: dict[str, Any]) -> bytes:
    info = doc.get("info") or {}
    named = b"".join(
        _field(1, _string(1, name) + _field(2, encode_schema(schema)))
        for name, schema in (doc.get("definitions") or {}).items()
    )
    return b"".join(
        [
            _string(1, doc.get("swagger", "2.0")),
            _field(2, _string(1, info.get("title")) + _string(2, info.get("version"))),
            _field(9, named),
        ]
    )


_CACHE: dict[tuple[Any, ...], tuple[dict[str, Any], bytes, list[ResourceType]]] = {}


def served(types: Iterable[ResourceType]) -> tuple[dict[str, Any], bytes]:
    """The document and its protobuf encoding, cached until the served types change."""
    chosen = list(types)
    # Types are immutable; a CRD change makes new ones. The entry keeps the types alive,
    # so their ids are not reused while it is cached.
    key = tuple(sorted((t.group, t.version, t.plural, id(t)) for t in chosen))
    if key not in _CACHE:
        if len(_CACHE) > 16:
            _CACHE.clear()
        doc = document(chosen)
        _CACHE[key] = (doc, encode_document(doc), chosen)
    doc, encoded, _ = _CACHE[key]
    return doc, encoded
