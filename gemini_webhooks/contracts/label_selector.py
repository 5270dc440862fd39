"""Kubernetes label selectors: one reader and one matcher for every side.

A selector arrives in one of three shapes, all read here into the same `Selector`:
- a `metav1.LabelSelector` object (`matchLabels` and `matchExpressions` with `In`, `NotIn`,
  `Exists`, `DoesNotExist`): `from_object`, as `LabelSelectorAsSelector` reads it;
- the query string of a list or watch (`a=b,c!=d,e in (f,g),h notin (i),j,!k`): `parse`,
  as `labels.Parse` reads it;
- a plain label map (a Service's `spec.selector`, our own listings): `from_labels`.
`str(selector)` writes the query string as `Selector.String()` does (requirements by key,
set values sorted), so `parse(str(s))` selects what `s` selects.

Bad input raises `SelectorError` naming the requirement and what is wrong with it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector that Kubernetes would refuse."""


# selection.Operator's spellings: what `parse` reads and `str` writes.
EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "=", "==", "!="
IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "in", "notin", "exists", "!"
_SET_OPERATORS = frozenset({IN, NOT_IN})
_EXPRESSION_OPERATORS = {
    "In": IN,
    "NotIn": NOT_IN,
    "Exists": EXISTS,
    "DoesNotExist": DOES_NOT_EXIST,
}

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_NAME_RE = re.compile(rf"^{_NAME}$")
_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

_SET_RE = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s*\(([^()]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s,()]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _check_key(self.key)
        for value in self.values:
            _check_value(self.key, value)
        if self.operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(self.values) != 1:
            raise SelectorError(f"{self.key}: {self.operator!r} takes exactly one value")
        if self.operator in _SET_OPERATORS and not self.values:
            raise SelectorError(f"{self.key}: {self.operator!r} needs at least one value")
        if self.operator in (EXISTS, DOES_NOT_EXIST) and self.values:
            raise SelectorError(f"{self.key}: {self.operator!r} takes no values")

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator in (EXISTS, DOES_NOT_EXIST):
            return (self.key in labels) == (self.operator == EXISTS)
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator in (EQUALS, DOUBLE_EQUALS, IN) else not present

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.operator in _SET_OPERATORS:
            return f"{self.key} {self.operator} ({','.join(sorted(self.values))})"
        return f"{self.key}{self.operator}{next(iter(self.values))}"


@dataclass(frozen=True)
class Selector:
    """All of its requirements hold; no requirement selects everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def selects(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object's `metadata.labels` match."""
        return self.matches((obj.get("metadata") or {}).get("labels") or {})

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _selector(requirements: list[Requirement]) -> Selector:
    return Selector(tuple(sorted(requirements, key=lambda r: r.key)))


def from_labels(labels: Mapping[str, str]) -> Selector:
    """`k: v` pairs, each as `k=v`."""
    return _selector([Requirement(str(k), EQUALS, frozenset({str(v)})) for k, v in labels.items()])


def from_object(selector: Mapping[str, Any]) -> Selector:
    """A `metav1.LabelSelector` (`matchLabels`, `matchExpressions`)."""
    if not isinstance(selector, Mapping):
        raise SelectorError(f"a label selector is an object, not {type(selector).__name__}")
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping):
        raise SelectorError("matchLabels is a map of label keys to values")
    if not isinstance(expressions, list):
        raise SelectorError("matchExpressions is a list")
    requirements = list(from_labels(match_labels).requirements)
    for index, expression in enumerate(expressions):
        requirements.append(_expression(index, expression))
    return _selector(requirements)


def _expression(index: int, expression: Any) -> Requirement:
    where = f"matchExpressions[{index}]"
    if not isinstance(expression, Mapping):
        raise SelectorError(f"{where}: an expression is an object with key, operator, values")
    key, name = expression.get("key"), expression.get("operator")
    values = expression.get("values") or []
    if not isinstance(key, str):
        raise SelectorError(f"{where}.key: required, a label key")
    operator = _EXPRESSION_OPERATORS.get(name) if isinstance(name, str) else None
    if operator is None:
        known = ", ".join(_EXPRESSION_OPERATORS)
        raise SelectorError(f"{where}.operator: {name!r} is not a valid operator ({known})")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{where}.values: a list of strings")
    try:
        return Requirement(key, operator, frozenset(values))
    except SelectorError as error:
        raise SelectorError(f"{where}: {error}") from None


@functools.lru_cache(maxsize=256)
def parse(text: str) -> Selector:
    """A selector's query string; the empty string selects everything."""
    requirements = []
    for part in _split(text):
        if m := _SET_RE.match(part):
            # `()` and a trailing comma name the empty value, as in labels.Parse.
            values = frozenset(v.strip() for v in m.group(3).split(","))
            requirement = Requirement(m.group(1), m.group(2), values)
        elif m := _EQ_RE.match(part):
            requirement = Requirement(m.group(1), m.group(2), frozenset({m.group(3)}))
        elif m := _EXISTS_RE.match(part):
            requirement = Requirement(m.group(2), DOES_NOT_EXIST if m.group(1) else EXISTS)
        else:
            raise SelectorError(f"unable to parse requirement: {part.strip()!r}")
        requirements.append(requirement)
    return _selector(requirements)


def _split(text: str) -> list[str]:
    """At the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _check_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if (
        not name
        or len(name) > 63
        or not _NAME_RE.match(name)
        or (slash and (not prefix or len(prefix) > 253 or not _PREFIX_RE.match(prefix)))
    ):
        raise SelectorError(
            f"{key!r} is not a valid label key: an optional DNS-subdomain prefix and '/', "
            "then at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        )


def _check_value(key: str, value: str) -> None:
    if value and (len(value) > 63 or not _NAME_RE.match(value)):
        raise SelectorError(
            f"{key}: {value!r} is not a valid label value: empty, or at most 63 "
            "alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        )
