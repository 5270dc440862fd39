"""Field handling for built-in types, from the `kubernetes-validate` schemas.

A real API server decodes built-in objects into Go structs: unknown fields are dropped
(and reported in a warning, or refused with `fieldValidation=Strict`, what `kubectl apply`
sends), mistyped ones refused. The sandbox has no Go structs; when `kubernetes-validate`
is installed (a dev dependency) it uses that release's schemas instead: `prune_unknown`
drops and reports every unknown field, `check_strict` refuses the first mistyped or
missing required one (the library stops there). Without the library, built-ins are
stored as sent.
"""

from __future__ import annotations

import re
from typing import Any

from gemini_webhooks.kubesandbox import errors, openapi

KUBERNETES_VERSION = "1.34"
_UNEXPECTED = re.compile(r"'([^']+)'")

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the runtime install has no dev dependencies
    kubernetes_validate = None


def prune_unknown(obj: dict[str, Any], group: str, version: str, kind: str) -> list[str]:
    """Drop the fields the type does not have (in place); return their paths."""
    components, kinds = openapi.builtin_definitions()
    name = kinds.get((group, version, kind))
    if name is None:
        return []
    return _prune(obj, components[name], components, "")


def _resolve(schema: Any, components: dict[str, Any]) -> dict[str, Any]:
    for _ in range(32):
        if not isinstance(schema, dict):
            return {}
        if "$ref" in schema:
            schema = components.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        elif isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema
    return {}


def _prune(value: Any, schema: Any, components: dict[str, Any], path: str) -> list[str]:
    schema = _resolve(schema, components)
    unknown: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if schema.get("x-kubernetes-preserve-unknown-fields") or (
            properties is None and additional in (None, True)
        ):
            return unknown
        for key in list(value):
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                unknown += _prune(value[key], properties[key], components, where)
            elif isinstance(additional, dict):
                unknown += _prune(value[key], additional, components, where)
            elif additional is True:
                continue
            else:
                unknown.append(where)
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            unknown += _prune(item, schema["items"], components, f"{path}[{index}]")
    return unknown


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def check_strict(obj: dict[str, Any], kind: str, group: str) -> None:
    """Raise the API server's error for the first unknown or mistyped field, if any."""
    if kubernetes_validate is None:
        return
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return
    except kubernetes_validate.ValidationError as e:
        where = _path(e.absolute_path)
        name = str((obj.get("metadata") or {}).get("name", ""))
        prefix = f'{kind} in version "v1" cannot be handled as a {kind}: '
        if e.validator == "additionalProperties":
            fields = [f"{where}.{n}" if where else n for n in _UNEXPECTED.findall(e.message)]
            unknown = ", ".join(f'unknown field "{f}"' for f in fields)
            raise errors.bad_request(f"{prefix}strict decoding error: {unknown}") from None
        if e.validator == "type":
            raise errors.bad_request(
                f"{prefix}json: cannot unmarshal {e.instance!r} into field {where} of type "
                f"{e.validator_value}"
            ) from None
        if e.validator == "required":
            missing = _UNEXPECTED.findall(e.message)[:1] or ["?"]
            field = f"{where}.{missing[0]}" if where else missing[0]
            raise errors.invalid(
                kind, group, name, [errors.cause(field, "FieldValueRequired", "Required value")]
            ) from None
