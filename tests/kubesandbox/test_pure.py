"""The sandbox's pure parts: selectors, patches, schemas, JSONPath, ages, version order."""

from __future__ import annotations

import datetime
import struct
from typing import Any

import pytest

from gemini_webhooks.kubesandbox import openapi_v2, patching, protobuf, schema, selectors, tables
from gemini_webhooks.kubesandbox.errors import ApiError
from gemini_webhooks.kubesandbox.faults import FaultError, fault_from_json
from gemini_webhooks.kubesandbox.openapi import version_priority


def _labelled(**labels: str) -> dict:
    return {"metadata": {"labels": labels}}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("a=1", True),
        ("a==1", True),
        ("a!=1", False),
        ("a in (1,2)", True),
        ("a notin (1)", False),
        ("a", True),
        ("!a", False),
        ("b", False),
        ("!b", True),
        ("a=1,b=2", False),
        ("", True),
    ],
)
def test_label_selectors(selector: str, matches: bool) -> None:
    assert selectors.label_selector(selector)(_labelled(a="1")) is matches


def test_a_malformed_label_selector_is_a_bad_request() -> None:
    with pytest.raises(ApiError) as info:
        selectors.label_selector("a in (1")
    assert info.value.code == 400


def test_merge_patch_follows_rfc_7386() -> None:
    assert patching.merge_patch(
        {"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}
    ) == {"a": {"c": 2}, "l": [2]}


def test_strategic_merge_patch_merges_finalizers_as_a_set() -> None:
    # In the patch's order (kube-apiserver's mergeSortedSlice), each once.
    assert patching.strategic_merge_patch(
        {"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["b", "a"]}}
    ) == {"metadata": {"finalizers": ["b", "a"]}}
    assert patching.strategic_merge_patch(
        {"metadata": {"finalizers": ["a", "b"]}}, {"metadata": {"finalizers": ["c"]}}
    ) == {"metadata": {"finalizers": ["c", "a", "b"]}}


def test_strategic_merge_patch_honours_element_order_and_primitive_deletions() -> None:
    current = {"containers": [{"name": "a"}, {"name": "b"}], "finalizers": ["x", "y"]}
    patch = {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
        "$deleteFromPrimitiveList/finalizers": ["x"],
        "containers": [{"name": "a", "image": "i"}],
    }
    assert patching.strategic_merge_patch(current, patch) == {
        "containers": [{"name": "b"}, {"name": "a", "image": "i"}],
        "finalizers": ["y"],
    }


def test_strategic_merge_patch_replace_directive() -> None:
    assert patching.strategic_merge_patch(
        {"spec": {"a": 1, "b": 2}}, {"spec": {"$patch": "replace", "c": 3}}
    ) == {"spec": {"c": 3}}


def test_a_json_patch_that_is_not_a_list_is_malformed() -> None:
    with pytest.raises(patching.PatchError):
        patching.json_patch({}, {"op": "add"})


def test_a_json_patch_on_a_missing_path_cannot_be_applied() -> None:
    with pytest.raises(patching.PatchConflict):
        patching.json_patch({}, [{"op": "replace", "path": "/a/b", "value": 1}])


SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "exclusiveMaximum": True, "maximum": 5},
                "s": {"type": "string", "minLength": 2, "maxLength": 3},
                "l": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
                "m": {"type": "object", "additionalProperties": {"type": "integer"}},
                "ios": {"x-kubernetes-int-or-string": True},
                "opt": {"type": "string", "nullable": True},
                "d": {
                    "type": "object",
                    "default": {},
                    "properties": {"x": {"type": "integer", "default": 7}},
                },
            },
        },
    },
}


def test_schema_defaults_nest() -> None:
    obj: dict[str, Any] = {"spec": {}}
    schema.apply_defaults(obj, SCHEMA)
    assert obj == {"spec": {"d": {"x": 7}}}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"n": 5}, "spec.n"),
        ({"n": 0}, "spec.n"),
        ({"s": "a"}, "spec.s"),
        ({"s": "abcd"}, "spec.s"),
        ({"l": ["a", "b"]}, "spec.l"),
        ({"l": [1]}, "spec.l[0]"),
        ({"m": {"k": "v"}}, "spec.m.k"),
        ({"ios": 1.5}, "spec.ios"),
        ({"n": True}, "spec.n"),
        ({"s": None}, "spec.s"),
    ],
)
def test_schema_violations_name_the_field(spec: dict, field: str) -> None:
    causes = schema.validate({"spec": spec}, SCHEMA)
    assert [c["field"] for c in causes] == [field]


@pytest.mark.parametrize(
    "spec", [{"n": 4}, {"ios": "10%"}, {"ios": 3}, {"opt": None}, {"m": {"k": 1}}]
)
def test_schema_accepts_valid_values(spec: dict) -> None:
    assert schema.validate({"spec": spec}, SCHEMA) == []


def test_pruning_reports_the_paths_it_dropped() -> None:
    obj = {"apiVersion": "v", "kind": "K", "metadata": {}, "spec": {"n": 1, "zz": 1}, "top": 1}
    assert sorted(schema.prune(obj, SCHEMA, root=True)) == ["spec.zz", "top"]
    assert obj == {"apiVersion": "v", "kind": "K", "metadata": {}, "spec": {"n": 1}}


def test_jsonpath_filters_lists() -> None:
    obj = {
        "status": {
            "conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]
        }
    }
    assert tables.jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert tables.jsonpath(obj, ".status.conditions[0].type") == "A"
    assert tables.jsonpath(obj, ".status.missing.deeper") is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (5, "5s"),
        (150, "2m30s"),
        (900, "15m"),
        (4 * 3600 + 60, "4h1m"),
        (20 * 3600, "20h"),
        (3 * 86400, "3d"),
    ],
)
def test_ages_print_like_kubectl(seconds: int, shown: str) -> None:
    now = datetime.datetime(2026, 1, 10, tzinfo=datetime.UTC)
    then = (now - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert tables.age(then, now) == shown


def test_versions_are_ordered_as_kubernetes_orders_them() -> None:
    versions = ["v1alpha1", "v2beta1", "v1", "v1beta2", "v2", "foo"]
    assert sorted(versions, key=version_priority) == [
        "v2",
        "v1",
        "v2beta1",
        "v1beta2",
        "v1alpha1",
        "foo",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"code": 200},
        {"code": 500, "count": 0},
        {"code": 500, "verb": "x"},
        {"code": 500, "retryAfter": -1},
        {"code": 500, "nope": 1},
        {"code": 500, "resource": 3},
    ],
)
def test_malformed_fault_rules_are_refused(bad: object) -> None:
    with pytest.raises(FaultError):
        fault_from_json(bad)


def test_a_body_without_the_protobuf_magic_is_refused() -> None:
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode_object(b"{}")


def test_a_truncated_protobuf_body_is_refused() -> None:
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode_object(protobuf.MAGIC + b"\x0a\x40abc")


def test_protobuf_of_an_unsupported_kind_is_refused() -> None:
    type_meta = b"\x0a\x02v1\x12\x03Pod"
    body = protobuf.MAGIC + b"\x0a" + bytes([len(type_meta)]) + type_meta
    with pytest.raises(protobuf.ProtobufError, match="Pod"):
        protobuf.decode_object(body)


def test_protobuf_config_map_decodes_to_its_json_shape() -> None:
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    meta = field(1, b"cm") + field(2, b"")
    entry = field(1, b"k") + field(2, b"v")
    raw = field(1, meta) + field(2, entry)
    body = protobuf.MAGIC + field(1, field(1, b"v1") + field(2, b"ConfigMap")) + field(2, raw)
    assert protobuf.decode_object(body) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm"},
        "data": {"k": "v"},
    }


def test_a_set_list_refuses_duplicates() -> None:
    causes = schema.validate(
        {"l": ["a", "b", "a"]},
        {
            "type": "object",
            "properties": {
                "l": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
            },
        },
    )
    assert [(c["field"], c["reason"]) for c in causes] == [("l[2]", "FieldValueDuplicate")]


def test_a_map_list_refuses_duplicate_keys() -> None:
    list_schema = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {"type": "object", "properties": {"type": {"type": "string"}}},
    }
    causes = schema.validate(
        {"c": [{"type": "A"}, {"type": "B"}, {"type": "A"}]},
        {"type": "object", "properties": {"c": list_schema}},
    )
    assert [(c["field"], c["reason"]) for c in causes] == [("c[2]", "FieldValueDuplicate")]


def test_property_counts_are_bounded() -> None:
    bounded = {
        "type": "object",
        "properties": {
            "m": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": {"type": "string"},
            }
        },
    }
    assert [c["field"] for c in schema.validate({"m": {}}, bounded)] == ["m"]
    assert [c["field"] for c in schema.validate({"m": {"a": "1", "b": "2"}}, bounded)] == ["m"]
    assert schema.validate({"m": {"a": "1"}}, bounded) == []


def test_apply_removes_only_what_the_manager_no_longer_applies() -> None:
    previous = {
        "metadata": {"labels": {"a": "1", "b": "2"}},
        "spec": {
            "containers": [{"name": "x", "env": [{"name": "E1"}, {"name": "E2"}]}, {"name": "y"}],
            "paused": True,
        },
    }
    applied = {
        "metadata": {"labels": {"a": "1"}},
        "spec": {"containers": [{"name": "x", "env": [{"name": "E1"}]}]},
    }
    live = {
        "metadata": {"labels": {"a": "1", "b": "2", "theirs": "3"}, "annotations": {"k": "v"}},
        "spec": {
            "containers": [
                {"name": "x", "env": [{"name": "E1"}, {"name": "E2"}]},
                {"name": "y"},
                {"name": "z"},
            ],
            "paused": True,
            "replicas": 3,
        },
    }
    patching.remove_unapplied(live, previous, applied)
    assert live == {
        "metadata": {"labels": {"a": "1", "theirs": "3"}, "annotations": {"k": "v"}},
        "spec": {
            "containers": [{"name": "x", "env": [{"name": "E1"}]}, {"name": "z"}],
            "replicas": 3,
        },
    }


def test_openapi_v2_schemas_are_converted_as_the_api_server_converts_them() -> None:
    crd = {
        "type": "object",
        "required": ["a", "b"],
        "properties": {
            "a": {"type": "string", "nullable": True},
            "b": {"type": "array", "x-kubernetes-preserve-unknown-fields": True, "items": {}},
            "c": {"allOf": [{"$ref": "#/components/schemas/X"}], "description": "d"},
            "d": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }
    assert openapi_v2.to_v2(crd, custom=True) == {
        "type": "object",
        "required": ["b"],
        "properties": {
            "a": {},
            "b": {"x-kubernetes-preserve-unknown-fields": True},
            "c": {"$ref": "#/definitions/X", "description": "d"},
            "d": {"type": "string"},
        },
    }
    # Built-ins keep their types (Kubernetes' own v2 has no nullable to drop them for).
    assert openapi_v2.to_v2({"type": "string", "nullable": True}, custom=False) == {
        "type": "string"
    }


def test_openapi_v2_protobuf_encodes_definitions_by_gnostic_field_numbers() -> None:
    doc = {
        "swagger": "2.0",
        "info": {"title": "t", "version": "v"},
        "definitions": {
            "K": {
                "type": "object",
                "required": ["x"],
                "properties": {"x": {"type": "integer", "minimum": 1}},
            }
        },
    }
    encoded = openapi_v2.encode_document(doc)
    fields = protobuf._fields(encoded)
    assert [(n, v) for n, _, v in fields[:1]] == [(1, b"2.0")]
    (definitions,) = [v for n, _, v in fields if n == 9]
    ((_, _, named),) = protobuf._fields(definitions)
    name, schema = (v for _, _, v in protobuf._fields(named))
    assert name == b"K"
    by_number = {n: v for n, _, v in protobuf._fields(schema)}
    assert by_number[19] == b"x" and protobuf._fields(by_number[22]) == [(1, 2, b"object")]
    ((_, _, prop),) = protobuf._fields(by_number[25])
    prop_fields = {n: v for n, _, v in protobuf._fields(prop)}
    inner = {n: v for n, _, v in protobuf._fields(prop_fields[2])}
    assert prop_fields[1] == b"x" and inner[9] == struct.pack("<d", 1.0)


@pytest.mark.parametrize(
    ("value", "bounds", "wanted"),
    [
        (
            [],
            {"minItems": 1},
            ("FieldValueInvalid", "Invalid value: 0: x in body should have at least 1 items"),
        ),
        ([1, 2], {"maxItems": 1}, ("FieldValueTooMany", "Too many: 2: must have at most 1 items")),
        (
            {},
            {"minProperties": 1},
            ("FieldValueInvalid", "Invalid value: 0: x in body should have at least 1 properties"),
        ),
        (
            {"a": 1, "b": 2},
            {"maxProperties": 1},
            ("FieldValueTooMany", "Too many: 2: must have at most 1 items"),
        ),
    ],
)
def test_size_bounds_of_lists_and_objects_are_said_as_kube_apiserver_says_them(
    value: object, bounds: dict[str, int], wanted: tuple[str, str]
) -> None:
    [found] = schema.validate(value, bounds, "x")
    assert (found["reason"], found["message"]) == wanted
