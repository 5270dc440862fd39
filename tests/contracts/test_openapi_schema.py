"""The builders of our CRD's OpenAPI schemas: type and description first, then the rest;
and `structural`, which turns a pydantic JSON Schema into one Kubernetes accepts."""

from __future__ import annotations

from typing import Any

import yaml

from gemini_webhooks.contracts.openapi_schema import (
    array,
    boolean,
    integer,
    obj,
    string,
    structural,
)


def test_an_object_lists_its_required_fields_only_when_there_are_some() -> None:
    port = integer("Port.", minimum=1)
    assert obj("A target.", {"port": port}, ("port",), oneOf=[]) == {
        "type": "object",
        "description": "A target.",
        "properties": {"port": port},
        "required": ["port"],
        "oneOf": [],
    }
    assert "required" not in obj("Anything.", {})


def test_scalars_and_lists_carry_their_other_keywords() -> None:
    assert string("Name.", minLength=1) == {
        "type": "string",
        "description": "Name.",
        "minLength": 1,
    }
    assert boolean("On.", default=False)["default"] is False
    assert array("Names.", string("Name."), minItems=1)["items"]["type"] == "string"


def _json_schema(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Spec",
        "description": "A spec.",
        "additionalProperties": False,
        "properties": properties,
        "$defs": {
            "Port": {
                "type": "object",
                "title": "Port",
                "description": "A port,\n    on two lines.",
                "additionalProperties": False,
                "properties": {"number": {"type": "integer", "title": "Number", "minimum": 1}},
                "required": ["number"],
            }
        },
    }


def test_references_are_inlined_and_the_referring_fields_description_wins() -> None:
    schema = structural(
        _json_schema(
            first={"$ref": "#/$defs/Port"},
            second={"$ref": "#/$defs/Port", "description": "The second port."},
        )
    )
    port = {
        "type": "object",
        "properties": {"number": {"type": "integer", "minimum": 1}},
        "required": ["number"],
    }
    assert schema == {
        "type": "object",
        "description": "A spec.",
        "properties": {
            "first": {**port, "description": "A port, on two lines."},
            "second": {**port, "description": "The second port."},
        },
    }
    assert list(schema["properties"]["first"]) == ["type", "description", "properties", "required"]


def test_an_optional_field_is_absent_rather_than_null() -> None:
    schema = structural(
        _json_schema(
            name={
                "anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}],
                "default": None,
                "description": "A name.",
            },
            port={"anyOf": [{"$ref": "#/$defs/Port"}, {"type": "null"}], "default": None},
        )
    )
    assert schema["properties"]["name"] == {
        "type": "string",
        "description": "A name.",
        "minLength": 1,
    }
    assert schema["properties"]["port"]["type"] == "object"


def test_a_null_default_is_no_default() -> None:
    # A section read apart (`Any`, its schema given) defaults to None: absent, not null.
    section = {"type": "object", "description": "Read apart.", "default": None, "title": "S"}
    schema = structural(_json_schema(section=section))
    assert schema["properties"]["section"] == {"type": "object", "description": "Read apart."}


def test_int_or_string_and_other_kubernetes_extensions_are_kept() -> None:
    quantity = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
        "pattern": "^[0-9]+m?$",
    }
    schema = structural(_json_schema(limits={"type": "object", "additionalProperties": quantity}))
    assert schema["properties"]["limits"]["additionalProperties"] == quantity


def test_a_definition_used_twice_is_written_out_twice() -> None:
    # Shared nodes would come out of PyYAML as anchors and aliases (`&id001`, `*id001`).
    schema = structural(
        _json_schema(first={"$ref": "#/$defs/Port"}, second={"$ref": "#/$defs/Port"})
    )
    assert "&id" not in yaml.safe_dump(schema)
