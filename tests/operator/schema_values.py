"""Hypothesis strategies for values of a CRD's structural OpenAPI schema: what a user could
write (types, enums, patterns, lengths, bounds, `required`, `oneOf` of required fields, `not`
both of two), optionally with any JSON in any place (what a cluster without schema
validation could hand the operator)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
MAX_ITEMS = 3


@st.composite
def values(draw: st.DrawFn, schema: dict[str, Any], wild: bool = False) -> Any:
    """A value of `schema`; with `wild`, now and then any JSON instead, at any depth."""
    if wild and draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    if schema.get("x-kubernetes-int-or-string"):
        return draw(st.integers(0, 10**6) | _strings(schema))
    if "enum" in schema:
        return draw(st.sampled_from(schema["enum"]))
    kind = schema.get("type")
    if kind == "string":
        return draw(_strings(schema))
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "integer":
        low, high = schema.get("minimum", -(2**31)), schema.get("maximum", 2**31)
        return draw(st.integers(low, high))
    if kind == "array":
        low = schema.get("minItems", 0)
        high = max(low, min(schema.get("maxItems", MAX_ITEMS), MAX_ITEMS))
        items = values(schema["items"], wild)
        unique_by = repr if schema.get("x-kubernetes-list-type") == "set" else None
        return draw(st.lists(items, min_size=low, max_size=high, unique_by=unique_by))
    if kind == "object":
        return draw(_objects(schema, wild))
    return draw(JSON)


def _strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
    pattern = schema.get("pattern")
    if pattern is None:
        return st.text(min_size=low, max_size=min(high, 64))
    return st.from_regex(pattern, fullmatch=True).filter(lambda text: low <= len(text) <= high)


@st.composite
def _objects(draw: st.DrawFn, schema: dict[str, Any], wild: bool) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    if not properties:
        if isinstance(extra, dict):
            keys = st.text(min_size=1, max_size=12)
            return draw(st.dictionaries(keys, values(extra, wild), max_size=MAX_ITEMS))
        return {}
    required = set(schema.get("required", ()))
    present = {name for name in properties if name in required or draw(st.booleans())}
    one_of = [branch["required"] for branch in schema.get("oneOf", [])]
    if one_of:  # exactly one branch's fields (each branch names one field)
        chosen = draw(st.sampled_from(one_of))
        present = (present - {n for branch in one_of for n in branch}) | set(chosen)
    excluded = (schema.get("not") or {}).get("required")
    if excluded and set(excluded) <= present:
        present.discard(draw(st.sampled_from(excluded)))
    obj = {name: draw(values(properties[name], wild)) for name in properties if name in present}
    if wild and draw(st.integers(0, 9)) == 0:
        obj[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
    return obj
