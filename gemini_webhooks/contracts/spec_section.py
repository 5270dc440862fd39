"""The base of a GeminiWebhook spec's typed sections (`contracts.crd_receiver` and
`contracts.crd_receiver_exposure`): pydantic models with camelCase names that reject unknown
keys, whose JSON Schema `openapi_schema.structural` turns into the CRD's; and their errors as
lines naming the field."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.alias_generators import to_camel


def _one_of_schema(schema: dict[str, Any], model: type[SpecSection]) -> None:
    """The schema's side of `exactly_one`: what the API server checks before we read it."""
    if model.exactly_one is not None:
        schema["oneOf"] = [{"required": [name]} for name in model.exactly_one]


class SpecSection(BaseModel):
    """A section of the spec. Its docstring is the schema's description of the object (a
    field's own description, where given, wins); `exactly_one` names (by their camelCase
    names) fields of which a valid object sets exactly one."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        json_schema_extra=_one_of_schema,
    )
    exactly_one: ClassVar[tuple[str, str] | None] = None

    @model_validator(mode="after")
    def _exactly_one_is_set(self) -> Self:
        if self.exactly_one is not None:
            fields = type(self).model_fields
            names = {field.alias or name: name for name, field in fields.items()}
            given = [alias for alias in self.exactly_one if getattr(self, names[alias]) is not None]
            if len(given) != 1:
                first, second = self.exactly_one
                raise ValueError(f"set exactly one of {first!r} or {second!r}")
        return self


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
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{where}: {message.removeprefix('Value error, ')}")
    return "; ".join(lines)
