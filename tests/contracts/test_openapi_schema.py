"""The builders of our CRD's OpenAPI schemas: type and description first, then the rest."""

from __future__ import annotations

from gemini_webhooks.contracts.openapi_schema import array, boolean, integer, obj, string


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
