"""Builders for the OpenAPI v3 schemas our CRD serves: a field's type and description first,
any other keyword (`default`, `pattern`, `enum`, bounds, `x-kubernetes-*`) as given."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any


def string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def integer(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **extra}


def boolean(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "boolean", "description": description, **extra}


def array(description: str, items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": items, **extra}


def obj(
    description: str,
    properties: dict[str, Any],
    required: Sequence[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """An object with these `properties`; `required` names those it must have."""
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": properties,
    }
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


# The order keywords are written in, so that the CRD reads the same way everywhere.
_KEYWORD_ORDER = (
    "type",
    "description",
    "anyOf",
    "x-kubernetes-int-or-string",
    "enum",
    "minimum",
    "maximum",
    "default",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "items",
    "minItems",
    "maxItems",
    "properties",
    "additionalProperties",
    "required",
    "oneOf",
)
# What JSON Schema says that a Kubernetes structural schema does not: a generator's titles,
# `additionalProperties: false` (unknown fields are pruned instead; the typed view rejects
# them with a message), and the `$defs` that references point at (inlined).
_DROPPED = {"title", "$defs", "$ref"}


def structural(json_schema: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes *structural* schema from a JSON Schema with `$defs` (as pydantic's
    `model_json_schema(by_alias=True)` gives it): references inlined (the referring field's
    own keywords, such as its description, win over the definition's), `Optional` as an
    absent field rather than a `null` type, no `null` defaults, no titles, multi-line
    descriptions joined into one line, nothing shared between two nodes; `x-kubernetes-*`
    extensions kept."""
    definitions = json_schema.get("$defs", {})

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        node = dict(node)
        branches = node.get("anyOf", [])
        not_null = [branch for branch in branches if branch != {"type": "null"}]
        if len(not_null) < len(branches):
            # `X | None`: the field may be absent; a null default says nothing.
            del node["anyOf"]
            if node.get("default", ...) is None:
                del node["default"]
            node = {**not_null[0], **node} if len(not_null) == 1 else {"anyOf": not_null, **node}
        if "$ref" in node:
            node = {**definitions[node["$ref"].rsplit("/", 1)[-1]], **node}
        if node.get("default", ...) is None:
            del node["default"]  # "absent": the API server would refuse a null default
        converted: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED or (key == "additionalProperties" and value is False):
                continue
            if key == "description":
                value = " ".join(value.split())
            elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
                value = convert(value)
            elif key == "properties":
                value = {name: convert(sub) for name, sub in value.items()}
            else:
                # A copy per use: a definition used twice is written out twice, not as
                # YAML anchors and aliases.
                value = copy.deepcopy(value)
            converted[key] = value
        rank = {key: index for index, key in enumerate(_KEYWORD_ORDER)}
        return dict(sorted(converted.items(), key=lambda item: rank.get(item[0], len(rank))))

    return convert(json_schema)
