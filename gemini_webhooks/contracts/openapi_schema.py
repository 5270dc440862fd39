"""Builders for the OpenAPI v3 schemas our CRD serves: a field's type and description first,
any other keyword (`default`, `pattern`, `enum`, bounds, `x-kubernetes-*`) as given."""

from __future__ import annotations

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
