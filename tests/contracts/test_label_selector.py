"""Label selectors: one reader and matcher, checked against the definitions of each operator."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemini_webhooks.contracts.label_selector import (
    SelectorError,
    from_labels,
    from_object,
    parse,
)

KEYS = st.sampled_from(["a", "b", "app.kubernetes.io/name"])
VALUES = st.sampled_from(["", "1", "2", "web-3"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=3)
EXPRESSIONS = st.one_of(
    st.fixed_dictionaries(
        {
            "key": KEYS,
            "operator": st.sampled_from(["In", "NotIn"]),
            "values": st.lists(VALUES, min_size=1, max_size=3),
        }
    ),
    st.fixed_dictionaries({"key": KEYS, "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
)
SELECTORS = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(KEYS, VALUES, max_size=2),
        "matchExpressions": st.lists(EXPRESSIONS, max_size=3),
    },
)


def reference(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """The API reference's words, one operator at a time."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if key not in labels or labels[key] != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        holds = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not holds:
            return False
    return True


@given(SELECTORS, LABELS)
def test_an_object_selector_matches_as_the_api_reference_defines(
    selector: dict[str, Any], labels: dict[str, str]
) -> None:
    assert from_object(selector).matches(labels) is reference(selector, labels)


@given(SELECTORS, LABELS)
def test_the_query_string_written_selects_what_the_object_selects(
    selector: dict[str, Any], labels: dict[str, str]
) -> None:
    assert parse(str(from_object(selector))).matches(labels) is reference(selector, labels)


@given(st.dictionaries(KEYS, VALUES, max_size=3), LABELS)
def test_a_label_map_selects_the_labels_holding_every_pair(
    wanted: dict[str, str], labels: dict[str, str]
) -> None:
    assert from_labels(wanted).matches(labels) is (wanted.items() <= labels.items())


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        ("a=1", True),
        ("a==1", True),
        ("a!=1", False),
        ("b!=1", True),
        ("a in (1,2)", True),
        ("a in(2)", False),
        ("a notin (1)", False),
        ("b notin (1)", True),
        ("a", True),
        ("!a", False),
        ("b", False),
        ("!b", True),
        ("a=1,b=2", False),
        ("a=1, !b", True),
        ("", True),
        ("e=", True),
        ("e in ()", True),
        ("a in (2,)", False),
    ],
)
def test_query_strings(query: str, matches: bool) -> None:
    assert parse(query).matches({"a": "1", "e": ""}) is matches


def test_written_as_kubernetes_writes_it_requirements_by_key_and_set_values_sorted() -> None:
    selector = from_object(
        {
            "matchLabels": {"z": "1", "a": "2"},
            "matchExpressions": [
                {"key": "m", "operator": "NotIn", "values": ["y", "x"]},
                {"key": "b", "operator": "DoesNotExist"},
                {"key": "c", "operator": "Exists"},
            ],
        }
    )
    assert str(selector) == "a=2,!b,c,m notin (x,y),z=1"
    assert str(from_object({})) == ""


def test_selects_reads_an_objects_labels() -> None:
    assert parse("a=1").selects({"metadata": {"labels": {"a": "1"}}})
    assert not parse("a=1").selects({"metadata": {}})
    assert parse("!a").selects({})


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ({"key": "a", "operator": "Equals", "values": ["1"]}, "'Equals' is not a valid operator"),
        ({"key": "a", "operator": "Exists", "values": ["1"]}, "takes no values"),
        ({"key": "a", "operator": "DoesNotExist", "values": ["1"]}, "takes no values"),
        ({"key": "a", "operator": "In", "values": []}, "needs at least one value"),
        ({"key": "a", "operator": "NotIn"}, "needs at least one value"),
        ({"operator": "Exists"}, "key: required"),
        ({"key": "a", "operator": "In", "values": [1]}, "a list of strings"),
        ({"key": "-a", "operator": "Exists"}, "not a valid label key"),
        ({"key": "a", "operator": "In", "values": ["a b"]}, "not a valid label value"),
        ("a", "an expression is an object"),
    ],
)
def test_a_bad_expression_is_refused_naming_it(expression: Any, says: str) -> None:
    with pytest.raises(SelectorError, match=r"matchExpressions\[1\]") as info:
        from_object({"matchExpressions": [{"key": "ok", "operator": "Exists"}, expression]})
    assert says in str(info.value)


@pytest.mark.parametrize(
    ("selector", "says"),
    [
        ({"matchLabels": ["a"]}, "matchLabels is a map"),
        ({"matchLabels": {"a": "x" * 64}}, "not a valid label value"),
        ({"matchLabels": {"Bad_Prefix/a": "1"}}, "not a valid label key"),
        ({"matchExpressions": {"key": "a"}}, "matchExpressions is a list"),
        ("a=1", "a label selector is an object"),
    ],
)
def test_a_bad_object_selector_is_refused(selector: Any, says: str) -> None:
    with pytest.raises(SelectorError, match=says):
        from_object(selector)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("a in (1", "unable to parse requirement: 'a in (1'"),
        ("a>1", "'a>1' is not a valid label key"),
        ("a=1=2", "'1=2' is not a valid label value"),
        ("a/=1", "not a valid label key"),
        ("a=x y", "unable to parse requirement"),
    ],
)
def test_a_malformed_query_string_is_refused_naming_the_requirement(query: str, says: str) -> None:
    with pytest.raises(SelectorError, match=re.escape(says)):
        parse(query)
