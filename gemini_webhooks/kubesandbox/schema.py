"""Structural-schema handling for custom resources, as the API server does it.

In order: unknown fields are found (reported when the client asks for `Strict`, else
pruned), defaults are applied, then values are validated. Pure functions over plain data.
`anyOf`/`oneOf`/`allOf`/`not` are checked with kube-apiserver's messages.
Not implemented: `x-kubernetes-validations` (CEL rules) and most `format`s.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Literal

from gemini_webhooks.kubesandbox.errors import cause

Schema = Mapping[str, Any]

_ROOT_KEPT = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def prune(value: Any, schema: Schema, path: str = "", *, root: bool = False) -> list[str]:
    """Drop fields the schema does not know (in place); return their paths."""
    unknown: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key in list(value):
            if root and key in _ROOT_KEPT:
                continue
            if properties is not None and key in properties:
                unknown += prune(value[key], properties[key], _join(path, key))
            elif isinstance(additional, Mapping):
                unknown += prune(value[key], additional, _join(path, key))
            elif additional is True or _preserves(schema):
                continue
            elif properties is None and not root and schema.get("type") != "object":
                continue
            else:
                unknown.append(_join(path, key))
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            unknown += prune(item, schema["items"], f"{path}[{index}]")
    return unknown


def drop_nulls(value: Any, schema: Schema) -> None:
    """Drop (in place) `null`s of fields that are not `nullable`, as kube-apiserver does before
    defaulting (so a default then fills them) and validation."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key in list(value):
            sub = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if sub is None:
                continue
            if value[key] is None and not sub.get("nullable"):
                del value[key]
            else:
                drop_nulls(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            drop_nulls(item, schema["items"])


def apply_defaults(value: Any, schema: Schema) -> None:
    """Fill in `default`s for absent properties (in place), recursively."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for key in value:
                if key not in (schema.get("properties") or {}):
                    apply_defaults(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            apply_defaults(item, schema["items"])


def _type_ok(value: Any, schema: Schema) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    expected = schema.get("type")
    if expected is None:
        return True
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return repr(value)


def validate(value: Any, schema: Schema, path: str = "") -> list[dict[str, str]]:
    """Causes (`field`, `reason`, `message`) for every violation under `path`."""
    causes: list[dict[str, str]] = []
    if value is None:
        if schema.get("nullable"):
            return causes
        if schema.get("type"):
            causes.append(
                cause(
                    path,
                    "FieldValueTypeInvalid",
                    f'Invalid value: "null": {path} in body must be of type '
                    f'{schema["type"]}: "null"',
                )
            )
        return causes
    if not _type_ok(value, schema):
        actual = {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
            type(value), "number" if isinstance(value, float) else "integer"
        )
        causes.append(
            cause(
                path,
                "FieldValueTypeInvalid",
                f'Invalid value: "{actual}": {path} in body must be of type '
                f'{schema.get("type", "integer-or-string")}: "{actual}"',
            )
        )
        return causes
    causes += _check_composition(value, schema, path)
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        supported = ", ".join(_show(e) for e in enum)
        causes.append(
            cause(
                path,
                "FieldValueNotSupported",
                f"Unsupported value: {_show(value)}: supported values: {supported}",
            )
        )
    if isinstance(value, str):
        pattern = schema.get("pattern")
        if pattern is not None and re.search(pattern, value) is None:
            causes.append(
                cause(
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should match '{pattern}'",
                )
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(
                cause(
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should be at least "
                    f"{schema['minLength']} chars long",
                )
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(
                cause(
                    path,
                    "FieldValueTooLong",
                    f"Too long: may not be more than {schema['maxLength']} bytes",
                )
            )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        causes += _check_bounds(value, schema, path)
    if isinstance(value, list):
        causes += _check_size(len(value), schema, path, "Items")
        causes += _check_list_type(value, schema, path)
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                causes += validate(item, items, f"{path}[{index}]")
    if isinstance(value, dict):
        causes += _check_size(len(value), schema, path, "Properties")
        for required in schema.get("required") or ():
            if required not in value:
                causes.append(cause(_join(path, required), "FieldValueRequired", "Required value"))
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                causes += validate(item, properties[key], _join(path, key))
            elif isinstance(additional, Mapping):
                causes += validate(item, additional, _join(path, key))
    return causes


def _check_size(
    size: int, schema: Mapping[str, Any], path: str, what: Literal["Items", "Properties"]
) -> list[dict[str, str]]:
    """`minItems`/`maxItems` of a list, `minProperties`/`maxProperties` of an object; as
    kube-apiserver says it, a count over the maximum is "too many items" either way."""
    causes = []
    low, high = f"min{what}", f"max{what}"
    if low in schema and size < schema[low]:
        causes.append(
            cause(
                path,
                "FieldValueInvalid",
                f"Invalid value: {size}: {path} in body should have at least "
                f"{schema[low]} {what.lower()}",
            )
        )
    if high in schema and size > schema[high]:
        causes.append(
            cause(
                path,
                "FieldValueTooMany",
                f"Too many: {size}: must have at most {schema[high]} items",
            )
        )
    return causes


def _composition_cause(path: str, rule: str) -> dict[str, str]:
    # kube-apiserver reports these without a field (`<nil>`), the path inside the message.
    return cause("<nil>", "FieldValueInvalid", f'Invalid value: "": "{path}" {rule}')


def _closest(results: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    best = results[0]
    for result in results[1:]:
        if len(result) < len(best):
            best = result
    return best


def _check_composition(value: Any, schema: Schema, path: str) -> list[dict[str, str]]:
    """`anyOf`, `oneOf`, `allOf`, `not`, in that order, as kube-openapi checks them: the
    rule's error, then (anyOf/oneOf, none valid) the causes of the closest alternative
    (fewest causes, the first on ties); allOf: every alternative's causes, then its error."""
    causes: list[dict[str, str]] = []
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and any_of:
        results = [validate(value, sub, path) for sub in any_of if isinstance(sub, Mapping)]
        if results and all(results):
            causes.append(_composition_cause(path, "must validate at least one schema (anyOf)"))
            causes += _closest(results)
    one_of = schema.get("oneOf")
    if isinstance(one_of, list) and one_of:
        results = [validate(value, sub, path) for sub in one_of if isinstance(sub, Mapping)]
        valid = sum(1 for r in results if not r)
        if results and valid == 0:
            causes.append(
                _composition_cause(
                    path, "must validate one and only one schema (oneOf). Found none valid"
                )
            )
            causes += _closest(results)
        elif valid > 1:
            causes.append(
                _composition_cause(
                    path,
                    "must validate one and only one schema (oneOf). "
                    f"Found {valid} valid alternatives",
                )
            )
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        results = [validate(value, sub, path) for sub in all_of if isinstance(sub, Mapping)]
        for result in results:
            causes += result
        valid = sum(1 for r in results if not r)
        if valid != len(results):
            none = ". None validated" if valid == 0 else ""
            causes.append(_composition_cause(path, f"must validate all the schemas (allOf){none}"))
    negated = schema.get("not")
    if isinstance(negated, Mapping) and not validate(value, negated, path):
        causes.append(_composition_cause(path, "must not validate the schema (not)"))
    return causes


def _check_list_type(value: list[Any], schema: Schema, path: str) -> list[dict[str, str]]:
    list_type = schema.get("x-kubernetes-list-type")
    causes: list[dict[str, str]] = []
    seen: list[Any] = []
    for index, item in enumerate(value):
        if list_type == "set":
            key: Any = item
        elif list_type == "map" and isinstance(item, Mapping):
            key = tuple(item.get(k) for k in schema.get("x-kubernetes-list-map-keys") or ())
        else:
            continue
        if key in seen:
            shown = (
                _show(item)
                if list_type == "set"
                else "{"
                + ", ".join(
                    f'"{k}":{_show(v)}'
                    for k, v in zip(
                        schema.get("x-kubernetes-list-map-keys") or (), key, strict=False
                    )
                )
                + "}"
            )
            causes.append(
                cause(f"{path}[{index}]", "FieldValueDuplicate", f"Duplicate value: {shown}")
            )
        else:
            seen.append(key)
    return causes


def _check_bounds(value: float, schema: Schema, path: str) -> list[dict[str, str]]:
    causes = []
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") is True and value == low):
            word = (
                "greater than"
                if schema.get("exclusiveMinimum") is True
                else ("greater than or equal to")
            )
            causes.append(
                cause(
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should be {word} {low}",
                )
            )
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") is True and value == high):
            word = (
                "less than" if schema.get("exclusiveMaximum") is True else ("less than or equal to")
            )
            causes.append(
                cause(
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should be {word} {high}",
                )
            )
    return causes


def admit(obj: dict[str, Any], schema: Schema) -> tuple[list[str], list[dict[str, str]]]:
    """Prune, default and validate a whole object (in place): (unknown fields, causes)."""
    unknown = prune(obj, schema, root=True)
    drop_nulls(obj, schema)
    apply_defaults(obj, schema)
    body = {k: v for k, v in obj.items() if k not in _ROOT_KEPT}
    body_schema = dict(schema)
    body_schema["required"] = [r for r in (schema.get("required") or ()) if r not in _ROOT_KEPT]
    properties = {k: v for k, v in (schema.get("properties") or {}).items() if k not in _ROOT_KEPT}
    body_schema["properties"] = properties
    return unknown, validate(body, body_schema)
