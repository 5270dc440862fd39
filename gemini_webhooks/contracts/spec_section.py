"""The base of a GeminiWebhook spec's typed sections (`contracts.crd_spec`,
`contracts.crd_receiver` and `contracts.crd_receiver_exposure`): pydantic models with camelCase
names that reject unknown keys, whose JSON Schema `openapi_schema.structural` turns into the
CRD's; and their errors as lines naming the field, never showing the value."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from gemini_webhooks.contracts.crd import DURATION_PATTERN, URL_PATTERN

# What a string that does not match one of the CRD's patterns should have been, in words
# (pydantic would show the regular expression).
PATTERN_MEANINGS = {
    DURATION_PATTERN: "must be a duration in hours/minutes/seconds, like '720h' or '1h30m'",
    URL_PATTERN: "must be an http(s) URL",
}


def _composition_schema(schema: dict[str, Any], model: type[SpecSection]) -> None:
    """The schema's side of `exactly_one` and `at_most_one`: what the API server checks
    before we read it."""
    if model.exactly_one is not None:
        schema["oneOf"] = [{"required": [name]} for name in model.exactly_one]
    if model.at_most_one is not None:
        schema["not"] = {"required": list(model.at_most_one)}


class SpecSection(BaseModel):
    """A section of the spec. Its docstring is the schema's description of the object (a
    field's own description, where given, wins); `exactly_one` names (by their camelCase
    names) fields of which a valid object sets exactly one, `at_most_one` fields of which it
    sets one or none."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        json_schema_extra=_composition_schema,
    )
    exactly_one: ClassVar[tuple[str, str] | None] = None
    at_most_one: ClassVar[tuple[str, str] | None] = None

    @model_validator(mode="after")
    def _composition_holds(self) -> Self:
        if self.exactly_one is not None:
            if len(self._given(self.exactly_one)) != 1:
                first, second = self.exactly_one
                raise ValueError(f"set exactly one of {first!r} or {second!r}")
        if self.at_most_one is not None:
            if len(self._given(self.at_most_one)) > 1:
                first, second = self.at_most_one
                raise ValueError(f"set either {first!r} or {second!r}, not both")
        return self

    def _given(self, aliases: tuple[str, str]) -> list[str]:
        fields = type(self).model_fields
        names = {field.alias or name: name for name, field in fields.items()}
        return [alias for alias in aliases if getattr(self, names[alias]) is not None]


def absent_nulls(data: Any) -> Any:
    """An object's fields without those set to `null`: absent, as the API server reads them
    (it drops them before defaulting), for a resource that did not pass one."""
    if isinstance(data, dict) and None in data.values():
        return {key: value for key, value in data.items() if value is not None}
    return data


def field_error(model: type[BaseModel], field: str, message: str) -> ValidationError:
    """An error of `model`'s `field` (its camelCase name) found by a validator of the whole
    model (one that compares fields): raised there, it is reported at the field."""
    detail = InitErrorDetails(
        type=PydanticCustomError("value_error", message), loc=(field,), input=None
    )
    return ValidationError.from_exception_data(model.__name__, [detail])


def explain_error(section: str, error: ValidationError) -> str:
    """A pydantic error as one line per field, each named from `section` down."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        where = section
        for part in item["loc"]:
            if isinstance(part, int):
                where += f"[{part}]"
            elif part[:1].isalpha():
                where += f".{part}"
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "model_type":
            message = "expected an object"
        elif item["type"] == "string_pattern_mismatch":
            pattern = str((item.get("ctx") or {}).get("pattern"))
            message = PATTERN_MEANINGS.get(pattern, item["msg"])
        else:
            message = item["msg"]
        lines.append(f"{where}: {message.removeprefix('Value error, ')}")
    return "; ".join(lines)
