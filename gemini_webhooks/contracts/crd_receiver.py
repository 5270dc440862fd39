"""The GeminiWebhook's `spec.receiver` and `spec.healthCheck`: the typed view, its limits,
defaults and descriptions — the one definition of these fields.

- `ReceiverSpec` / `HealthCheckSpec` (here, with `expose` and `networkPolicy` in
  `contracts.crd_receiver_exposure`): pydantic models (camelCase aliases), which the
  operator uses to read a resource. They reject unknown keys, so a resource that slipped
  past admission (or a cluster without schema validation) still fails with a message
  naming the field.
- `crd_spec_schema.RECEIVER_SCHEMA`: the OpenAPI v3 *structural* schema that the CRD
  (`contracts.crd`) embeds, generated from `ReceiverSpec`: each field's `description`,
  default, bounds and pattern are stated once, on the model; a section's description is its
  class docstring unless the field gives its own.

The receiver section maps onto the receiver's own config (`contracts.receiver_config`);
the operator renders that mapping in `gemini_webhook_operator.receiver_resources`.
Field names follow Kubernetes conventions (camelCase); routes mirror the receiver's routes.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, StringConstraints, ValidationError, WithJsonSchema, field_validator

from gemini_webhooks.contracts.crd import DURATION_PATTERN
from gemini_webhooks.contracts.crd_receiver_exposure import ExposeSpec, NetworkPolicySpec
from gemini_webhooks.contracts.delivery import (
    DEFAULT_TOLERANCE_SECONDS,
    GOOGLE_ISSUER,
    GOOGLE_JWKS_URI,
)
from gemini_webhooks.contracts.receiver_config import SENTINEL_ADDRESS_PATTERN
from gemini_webhooks.contracts.spec_section import SpecSection, explain_error

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}

DEFAULT_REPLICAS = 1
MAX_REPLICAS = 20
DEFAULT_SERVICE_PORT = 80
DEFAULT_HEALTH_INTERVAL = "10m"
MIN_HEALTH_INTERVAL_SECONDS = 60
DEFAULT_WAIT_TIMEOUT = "1s"

# OTEL_TRACES_SAMPLER's values that the OpenTelemetry SDK ships.
TracesSampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
TRACES_SAMPLERS: tuple[str, ...] = get_args(TracesSampler)
DEFAULT_TRACES_SAMPLER: TracesSampler = "parentbased_always_on"
OTLP_ENDPOINT_PATTERN = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
SAMPLER_ARG_PATTERN = r"^(0(\.[0-9]+)?|1(\.0+)?)$"


class CrdReceiverError(ValueError):
    """`spec.receiver` or `spec.healthCheck` is invalid; the message names the field."""


def parse_duration(value: str) -> timedelta:
    """An hours/minutes/seconds duration ("1h30m", the CRD's `DURATION_PATTERN`)."""
    if not value or not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: expected e.g. '90s', '5m', '1h30m'")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"([0-9]+)([hms])", value))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # the pattern bounds the form, not the size
        raise ValueError(f"duration {value!r} is too long") from None


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, min_length=2)]
# The pattern controller-gen emits for resource.Quantity (a string's; an integer is a count).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
NonEmpty = Annotated[str, Field(min_length=1)]


class ServiceRefSpec(SpecSection):
    """A Service in the cluster."""

    name: str = Field(min_length=1, description="Service name.")
    namespace: str | None = Field(
        None,
        min_length=1,
        description="Service namespace; defaults to the GeminiWebhook's namespace.",
    )
    port: int = Field(ge=1, le=65535, description="Service port.")
    path: str = Field("/", pattern="^/", description="Path on the Service.")


class TargetSpec(SpecSection):
    """Where an event goes: exactly one of `service` or `url`."""

    exactly_one = ("service", "url")
    service: ServiceRefSpec | None = None
    url: str | None = Field(None, pattern="^https?://", description="An http(s) URL.")
    format: Literal["envelope", "cloudevents"] = Field(
        "envelope",
        description="`envelope`: the envelope JSON as received; `cloudevents`: a CloudEvent in "
        "binary mode (ce-* headers, data as body).",
    )


Targets = Annotated[
    list[TargetSpec], Field(min_length=1, description="Every target receives the event.")
]


class MatchSpec(SpecSection):
    """When the rule applies; every given condition must hold, an absent one matches
    everything."""

    types: list[NonEmpty] = Field(
        default_factory=list, description="Event type globs, e.g. `batch.*`, `video.generated`."
    )
    sources: list[Literal["static", "dynamic"]] = Field(
        default_factory=list,
        description="Delivery sources: `static` (this webhook) and/or `dynamic` (request-level "
        "webhooks).",
    )
    user_metadata: dict[str, str] = Field(
        default_factory=dict,
        description="`user_metadata` key to value glob; each key must be present and match.",
    )


class RouteSpec(SpecSection):
    """One routing rule."""

    name: str = Field(min_length=1, description="Rule name (logs and metrics).")
    match: MatchSpec = Field(default_factory=MatchSpec)
    targets: Targets


class DefaultRouteSpec(SpecSection):
    """Targets for events no rule matches. Without `redis`, set this or `deadLetter` so that
    an unroutable event is never dropped."""

    targets: Targets


class DeadLetterSpec(SpecSection):
    """Where unroutable events go when `redis` is not set (with Redis: a stream)."""

    target: TargetSpec


class DynamicSpec(SpecSection):
    """Also accept dynamic (request-level) webhooks, signed with RS256 JWTs."""

    enabled: bool = Field(False, description="Accept JWT-signed deliveries.")
    audiences: list[NonEmpty] = Field(
        default_factory=list,
        description="Accepted `aud` values, usually the public URI of this receiver.",
    )
    issuer: str = Field(GOOGLE_ISSUER, description="Required `iss` claim.")
    jwks_uri: str = Field(
        GOOGLE_JWKS_URI, pattern="^https?://", description="JWKS URI pinned for verification."
    )
    accept_jobs_from_any_project: bool = Field(
        False,
        description="Accept dynamic deliveries of any Gemini project's jobs. By default only "
        "jobs whose `user_metadata` carries a MAC under this receiver's job key (the Secret "
        "`<name>-dynamic-job-key`, which the operator creates; `gemini-webhooks "
        "webhook-config` signs it) are accepted: Google signs every project's deliveries "
        "alike, so with this set anyone with a Gemini API key can send events here and choose "
        "their routes through `user_metadata`.",
    )


class SentinelSpec(SpecSection):
    """Find the primary through Redis Sentinel and follow it across failovers."""

    addresses: list[Annotated[str, Field(pattern=SENTINEL_ADDRESS_PATTERN)]] = Field(
        min_length=1,
        description="Sentinels as `host:port`, e.g. `redis-sentinel.team-a.svc:26379`.",
    )
    master_name: str = Field(min_length=1, description="The monitored primary's name.")
    db: int = Field(0, ge=0, description="Database number on the primary.")


class RedisSpec(SpecSection):
    """Durable mode: accept deliveries into a Redis Stream and share deduplication between
    replicas; exactly one of `url` or `sentinel`. The receiver refuses a server without
    `appendonly yes` and `appendfsync everysec` (or `always`)."""

    exactly_one = ("url", "sentinel")
    url: str | None = Field(
        None,
        pattern="^(redis|rediss|unix)://",
        description="Redis URL, e.g. `redis://redis.team-a.svc:6379/0`; it is written to the "
        "receiver's ConfigMap, so it must not carry a password.",
    )
    sentinel: SentinelSpec | None = None
    accept_data_loss_risk: bool = Field(
        False,
        description="Run even when the server's persistence does not make an acknowledged "
        "event survive a Redis crash; the receiver's /readyz and the "
        "`gemini_receiver_redis_durability` metric then say `at_risk`.",
    )
    wait_replicas: int = Field(
        0,
        ge=0,
        description="Acknowledge an event only once this many replicas hold it (`WAIT`); "
        "fewer within `waitTimeout` answer 503 so that Gemini retries.",
    )
    wait_timeout: Duration = Field(
        DEFAULT_WAIT_TIMEOUT, description="How long one `WAIT` for `waitReplicas` may take."
    )

    @field_validator("wait_timeout")
    @classmethod
    def _waits_at_all(cls, wait_timeout: str) -> str:
        if parse_duration(wait_timeout).total_seconds() == 0:
            raise ValueError("must be at least 1s")
        return wait_timeout


class DedupSpec(SpecSection):
    """Deduplication on `webhook-id` (Gemini retries for 24 h)."""

    ttl: Duration = Field("25h", description="How long a `webhook-id` is remembered.")
    max_entries: int = Field(
        1_000_000,
        ge=1,
        description="Without Redis: the oldest ids are forgotten beyond this count.",
    )


class ResourcesSpec(SpecSection):
    """Compute resources of the receiver container; defaults to the operator's."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Minimum resources, e.g. `cpu: 50m`, `memory: 64Mi`."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Maximum resources, e.g. `memory: 256Mi`."
    )


class ServiceSpec(SpecSection):
    """The Service in front of the receiver; the webhook's `url` should reach it."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="Service type."
    )
    port: int = Field(
        DEFAULT_SERVICE_PORT, ge=1, le=65535, description="Service port for deliveries."
    )


class TracingSpec(SpecSection):
    """OpenTelemetry traces of every delivery (a span per delivery, a child span per forward
    attempt, W3C `traceparent` sent to every target), exported over OTLP/HTTP; off when
    absent. Sets the receiver's standard `OTEL_*` environment."""

    otlp_endpoint: str = Field(
        pattern=OTLP_ENDPOINT_PATTERN,
        max_length=2048,
        description="OTLP/HTTP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g. "
        "`http://otel-collector.observability.svc:4318`: spans go to its `/v1/traces`. The "
        "receiver's NetworkPolicy lets it reach that host's port.",
    )
    service_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="The spans' `service.name` (`OTEL_SERVICE_NAME`); default: the receiver's "
        "Deployment name.",
    )
    sampler: TracesSampler = Field(
        DEFAULT_TRACES_SAMPLER,
        description="Which traces are kept (`OTEL_TRACES_SAMPLER`); the `parentbased_` ones "
        "follow an incoming `traceparent`'s decision.",
    )
    sampler_arg: str | None = Field(
        None,
        pattern=SAMPLER_ARG_PATTERN,
        description="The ratio kept by the `traceidratio` samplers (`OTEL_TRACES_SAMPLER_ARG`), "
        "from 0 to 1.",
    )


class ReceiverSpec(SpecSection):
    """A receiver deployed for this webhook: verifies every delivery's signature, drops
    replays and duplicates, and forwards events to the routes' targets."""

    enabled: bool = Field(False, description="Deploy the receiver.")
    replicas: int = Field(
        DEFAULT_REPLICAS,
        ge=1,
        le=MAX_REPLICAS,
        description="Receiver pods; more than one also gets a PodDisruptionBudget (use `redis` "
        "to share deduplication between replicas).",
    )
    image: str | None = Field(
        None, description="Receiver image; defaults to the operator's configured receiver image."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy of the receiver container."
    )
    resources: ResourcesSpec | None = None
    routes: list[RouteSpec] = Field(
        default_factory=list,
        description="Ordered routing rules; the first rule that matches an event decides its "
        "targets.",
    )
    default_route: DefaultRouteSpec | None = None
    dead_letter: DeadLetterSpec | None = None
    dynamic: DynamicSpec = Field(default_factory=DynamicSpec)
    redis: RedisSpec | None = None
    dedup: DedupSpec = Field(default_factory=DedupSpec)
    replay_tolerance: Duration = Field(
        f"{DEFAULT_TOLERANCE_SECONDS // 60}m",
        description="Reject deliveries whose `webhook-timestamp` is older (or further in the "
        "future) than this.",
    )
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Receiver log level."
    )
    expose: ExposeSpec | None = None
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    tracing: TracingSpec | None = None


class HealthCheckSpec(SpecSection):
    """End-to-end health: the operator pings the webhook periodically and after every
    rotation, and reports whether the receiver verified the ping as the `DeliveryVerified`
    condition."""

    enabled: bool = Field(False, description="Run the periodic ping check.")
    interval: Duration = Field(
        DEFAULT_HEALTH_INTERVAL,
        max_length=32,
        description="Time between pings, as hours/minutes/seconds.",
    )

    @field_validator("interval")
    @classmethod
    def _not_too_often(cls, interval: str) -> str:
        # Each ping is a WebhookService call; the steady-state budget is one per interval.
        if parse_duration(interval).total_seconds() < MIN_HEALTH_INTERVAL_SECONDS:
            raise ValueError("must be at least 1m")
        return interval


def receiver_spec(spec: dict[str, Any]) -> ReceiverSpec:
    """The typed `spec.receiver` of a GeminiWebhook (defaults when absent)."""
    try:
        return ReceiverSpec.model_validate(spec.get("receiver") or {})
    except ValidationError as error:
        raise CrdReceiverError(explain_error("spec.receiver", error)) from None


def health_check_spec(spec: dict[str, Any]) -> HealthCheckSpec:
    """The typed `spec.healthCheck` of a GeminiWebhook (defaults when absent)."""
    try:
        return HealthCheckSpec.model_validate(spec.get("healthCheck") or {})
    except ValidationError as error:
        raise CrdReceiverError(explain_error("spec.healthCheck", error)) from None
