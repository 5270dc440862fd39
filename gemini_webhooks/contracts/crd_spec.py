"""A GeminiWebhook's `spec`: the typed view the operator reads a resource with, and the one
definition of every field's description, default, bounds and pattern — the CRD's schema of
`spec` is generated from it (`contracts.crd_spec_schema`).

`spec.receiver` and `spec.healthCheck` are typed by their own models
(`contracts.crd_receiver`) and read apart: their errors are the receiver's and the health
check's (the operator reports them as `InvalidReceiver` and in `DeliveryVerified`), not the
spec's. Of `spec.receiver` the spec reads only what the webhook's URL depends on
(`ReceiverGate`). What the schema cannot say is checked here too: cron syntax, a rotation
interval longer than zero, events a static webhook can subscribe to, "`url` unless a
receiver provides one".
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self

import cronsim
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import CoreSchema

from gemini_webhooks.contracts.crd import (
    ANNOTATION_ROTATE,
    CRON_PATTERN,
    DEFAULT_API_KEY_SECRET_KEY,
    DNS_SUBDOMAIN_PATTERN,
    SECRET_KEY_PATTERN,
    URL_PATTERN,
    WEBHOOK_ID_PATTERN,
    DeletionPolicy,
    Revocation,
    State,
)
from gemini_webhooks.contracts.crd_receiver import (
    Duration,
    HealthCheckSpec,
    ReceiverSpec,
    parse_duration,
)
from gemini_webhooks.contracts.crd_receiver_exposure import ExposeSpec
from gemini_webhooks.contracts.events import SUBSCRIBABLE_EVENT_TYPES, subscription_error
from gemini_webhooks.contracts.openapi_schema import string, structural
from gemini_webhooks.contracts.spec_section import SpecSection, absent_nulls, field_error

# Any instant: cronsim needs one to parse an expression.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
HttpUrl = Annotated[str, Field(max_length=2048, pattern=URL_PATTERN)]
SecretName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]


class SchemaOf:
    """Annotation: in the JSON Schema, `model`'s structural schema in place of the annotated
    type's — for a section the spec holds but reads apart. Built only when a schema is asked
    for, never to read a spec."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def __get_pydantic_json_schema__(self, _core: CoreSchema, _handler: Any) -> dict[str, Any]:
        return structural(self.model.model_json_schema(by_alias=True, mode="validation"))


@functools.lru_cache(maxsize=256)
def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a cron expression, or None. (Remembered: resources share a few
    schedules, and each is read at every reconcile.)"""
    try:
        cronsim.CronSim(expression, _EPOCH)
    except cronsim.CronSimError as error:
        return f"{expression!r} is not a cron expression: {error}"
    return None


def _subscribable(event_type: str) -> str:
    problem = subscription_error(event_type)
    if problem is not None:
        raise ValueError(problem)
    return event_type


# The schema's enum and `_subscribable` admit the same types; the check's message tells a
# misspelling or a type only dynamic webhooks receive.
EventType = Annotated[
    str,
    AfterValidator(_subscribable),
    WithJsonSchema(string("One subscribable event type.", enum=list(SUBSCRIBABLE_EVENT_TYPES))),
]


class _OwnSection(SpecSection):
    """A section of the spec's own fields (not the receiver's), where `null` means absent as
    it always has (the API server drops it too)."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        return absent_nulls(data)


class ApiKeySecretRefSpec(_OwnSection):
    """The Secret (in this namespace) holding the Gemini API key used to manage this
    webhook."""

    name: SecretName = Field(description="Name of the Secret.")
    key: str = Field(
        DEFAULT_API_KEY_SECRET_KEY,
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
        description="Key within the Secret's data.",
    )


class RotationSpec(_OwnSection):
    """When and how the signing secret rotates."""

    at_most_one = ("interval", "schedule")
    interval: Annotated[Duration, Field(max_length=32)] | None = Field(
        None,
        description="Rotate this long after the last rotation, as hours/minutes/seconds "
        "(`720h` = 30 days). Mutually exclusive with `schedule`.",
    )
    schedule: str | None = Field(
        None,
        pattern=CRON_PATTERN,
        max_length=128,
        description="Rotate at the first time matching this 5-field cron expression (UTC) "
        "after the last rotation, e.g. `0 3 1 * *`. Mutually exclusive with `interval`.",
    )
    revocation: Revocation = Field(
        "Grace",
        description="What happens to the previous secret: `Grace` keeps it valid for 24 hours "
        "(Gemini signs with both; consumers never miss a delivery), `Immediate` revokes it at "
        "once.",
    )
    paused: StrictBool = Field(
        False,
        description="Suspend scheduled rotation. Lost secrets are still regained and an "
        "explicit rotation request is still honoured.",
    )

    @field_validator("interval")
    @classmethod
    def _longer_than_zero(cls, interval: str | None) -> str | None:
        if interval is not None and parse_duration(interval) <= timedelta(0):
            raise ValueError("must be longer than zero")
        return interval

    @field_validator("schedule")
    @classmethod
    def _cron(cls, expression: str | None) -> str | None:
        problem = cron_problem(expression) if expression is not None else None
        if problem is not None:
            raise ValueError(problem)
        return expression

    @property
    def period(self) -> timedelta | None:
        """`interval` as a duration."""
        return parse_duration(self.interval) if self.interval is not None else None


class ReceiverGate(BaseModel):
    """What the webhook's URL depends on in `spec.receiver`: whether a receiver is deployed
    and where it is exposed. The rest of the section is `ReceiverSpec`'s."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, alias_generator=to_camel, populate_by_name=True
    )
    enabled: StrictBool = False
    expose: ExposeSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _exposed_only_when_enabled(cls, data: Any) -> Any:
        # A receiver that is not deployed publishes nothing: its `expose` is only
        # `ReceiverSpec`'s to check (an invalid receiver, not an invalid spec).
        data = absent_nulls(data)
        if isinstance(data, dict) and data.get("enabled") is not True and "expose" in data:
            return {key: value for key, value in data.items() if key != "expose"}
        return data

    @property
    def exposed_url(self) -> str | None:
        """https://<host><path> of `expose`, when the receiver is deployed and exposed."""
        return self.expose.url if self.enabled and self.expose is not None else None


class GeminiWebhookSpec(_OwnSection):
    """The desired webhook: where Gemini delivers which events, the API key to manage it with,
    where its signing secrets are kept and how they rotate."""

    display_name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Human-readable name of the remote webhook. The operator appends a marker "
        "with this resource's UID so that it can always find its own webhook.",
    )
    url: HttpUrl | None = Field(
        None,
        description="The URL Gemini delivers events to (`https://...`; `http://` only for local "
        "emulators). When `receiver.enabled` is true and this is omitted, the operator uses "
        "`https://<host><path>` of `receiver.expose`, or — only with an emulator named by "
        "`apiBaseUrl` — the receiver Service's cluster URL. For Google's API it must be a "
        "public `https://` URL.",
    )
    events: list[EventType] = Field(
        min_length=1,
        max_length=len(SUBSCRIBABLE_EVENT_TYPES),
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Event types this webhook subscribes to. A static webhook can subscribe "
        "to: " + ", ".join(SUBSCRIBABLE_EVENT_TYPES) + ". (`*.cancelled` events reach only "
        "dynamic webhooks; `batch.completed` is spelled `batch.succeeded`.)",
    )
    state: State = Field(
        "Enabled",
        description="Desired remote state. `Disabled` keeps the webhook (and its secrets) but "
        "stops deliveries. A webhook Gemini disabled after failed deliveries is reported, not "
        "re-enabled behind your back: set `Disabled` then `Enabled` to re-enable it.",
    )
    api_key_secret_ref: ApiKeySecretRefSpec
    signing_secret_name: SecretName | None = Field(
        None,
        description="Name of the Secret the operator writes the signing secrets to (format: "
        "docs/operator.md). Defaults to `<metadata.name>-signing-secret`. Must not be an "
        "existing Secret that this resource does not own.",
    )
    rotation: RotationSpec = Field(
        default_factory=RotationSpec,
        description="When and how the signing secret rotates. Without `interval` or `schedule` "
        f"it rotates only when requested (annotation `{ANNOTATION_ROTATE}`) or when the "
        "operator must regain a lost secret.",
    )
    deletion_policy: DeletionPolicy = Field(
        "Delete",
        description="What deleting this resource does to the remote webhook: `Delete` deletes "
        "it, `Orphan` leaves it in place.",
    )
    webhook_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=WEBHOOK_ID_PATTERN,
        description="Adopt the existing remote webhook with this ID instead of creating one. "
        "The operator rotates its signing secret once to obtain a secret it holds.",
    )
    api_base_url: HttpUrl | None = Field(
        None,
        description="Override the Gemini API base URL (for the local emulator or a proxy).",
    )
    # Read apart (their own errors): here for the schema, and unread.
    health_check: Annotated[Any, SchemaOf(HealthCheckSpec)] = None
    receiver: Annotated[ReceiverGate | None, SchemaOf(ReceiverSpec)] = None

    @field_validator("events", mode="before")
    @classmethod
    def _at_least_one(cls, events: Any) -> Any:
        if events == []:
            raise ValueError("subscribe to at least one event type")
        return events

    @field_validator("events")
    @classmethod
    def _each_once(cls, events: list[str]) -> list[str]:
        if len(set(events)) != len(events):
            raise ValueError("lists an event type twice")
        return events

    @model_validator(mode="after")
    def _url_or_receiver(self) -> Self:
        receiver = self.receiver or ReceiverGate()
        if self.url is None and not receiver.enabled:
            raise field_error(type(self), "url", "required unless spec.receiver.enabled is true")
        if self.url is not None and receiver.exposed_url is not None:
            raise field_error(
                type(self),
                "url",
                "leave it unset with spec.receiver.expose (the URL is derived as "
                "https://<host><path>)",
            )
        return self

    @property
    def receiver_enabled(self) -> bool:
        return self.receiver is not None and self.receiver.enabled

    @property
    def exposed_url(self) -> str | None:
        """https://<host><path> of `spec.receiver.expose`, when the receiver is deployed."""
        return self.receiver.exposed_url if self.receiver is not None else None
