"""The GeminiWebhook's `spec.receiver` and `spec.healthCheck`: the typed view, its limits
and defaults.

Two faces of one contract:
- `ReceiverSpec` / `HealthCheckSpec` (here): pydantic models (camelCase aliases), which the
  operator uses to read a resource. They reject unknown keys, so a resource that slipped
  past admission (or a cluster without schema validation) still fails with a message
  naming the field.
- `crd_receiver_schema.RECEIVER_SCHEMA`: the OpenAPI v3 *structural* schema of the same
  fields that the CRD (`contracts.crd`) embeds, built from the limits, defaults and
  patterns defined here. A test keeps both faces in step.

The receiver section maps onto the receiver's own config (`contracts.receiver_config`);
the operator renders that mapping in `gemini_webhook_operator.receiver_resources`.
Field names follow Kubernetes conventions (camelCase); routes mirror the receiver's routes.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from gemini_webhooks.contracts.crd import DURATION_PATTERN
from gemini_webhooks.contracts.delivery import (
    DEFAULT_TOLERANCE_SECONDS,
    GOOGLE_ISSUER,
    GOOGLE_JWKS_URI,
)
from gemini_webhooks.contracts.receiver_config import SENTINEL_ADDRESS_PATTERN

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}

DEFAULT_REPLICAS = 1
MAX_REPLICAS = 20
DEFAULT_SERVICE_PORT = 80
DEFAULT_HEALTH_INTERVAL = "10m"
MIN_HEALTH_INTERVAL_SECONDS = 60
DEFAULT_WAIT_TIMEOUT = "1s"
HOST_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$"
# An HTTP path the receiver serves: no query, no fragment, no spaces.
PATH_PATTERN = r"^/[^\s?#]*$"

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
    return timedelta(seconds=seconds)


class _Spec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, min_length=2)]
Quantity = int | str


class ServiceRefSpec(_Spec):
    name: str = Field(min_length=1)
    namespace: str | None = Field(None, min_length=1)
    port: int = Field(ge=1, le=65535)
    path: str = Field("/", pattern="^/")


class TargetSpec(_Spec):
    service: ServiceRefSpec | None = None
    url: str | None = Field(None, pattern="^https?://")
    format: Literal["envelope", "cloudevents"] = "envelope"

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetSpec:
        if (self.service is None) == (self.url is None):
            raise ValueError("set exactly one of 'service' or 'url'")
        return self


class MatchSpec(_Spec):
    types: list[str] = Field(default_factory=list)
    sources: list[Literal["static", "dynamic"]] = Field(default_factory=list)
    user_metadata: dict[str, str] = Field(default_factory=dict)


class RouteSpec(_Spec):
    name: str = Field(min_length=1)
    match: MatchSpec = Field(default_factory=MatchSpec)
    targets: list[TargetSpec] = Field(min_length=1)


class DefaultRouteSpec(_Spec):
    targets: list[TargetSpec] = Field(min_length=1)


class DeadLetterSpec(_Spec):
    target: TargetSpec


class DynamicSpec(_Spec):
    enabled: bool = False
    audiences: list[str] = Field(default_factory=list)
    issuer: str = GOOGLE_ISSUER
    jwks_uri: str = Field(GOOGLE_JWKS_URI, pattern="^https?://")
    accept_jobs_from_any_project: bool = False


class SentinelSpec(_Spec):
    addresses: list[Annotated[str, Field(pattern=SENTINEL_ADDRESS_PATTERN)]] = Field(min_length=1)
    master_name: str = Field(min_length=1)
    db: int = Field(0, ge=0)


class RedisSpec(_Spec):
    url: str | None = Field(None, pattern="^(redis|rediss|unix)://")
    sentinel: SentinelSpec | None = None
    accept_data_loss_risk: bool = False
    wait_replicas: int = Field(0, ge=0)
    wait_timeout: Duration = DEFAULT_WAIT_TIMEOUT

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> RedisSpec:
        if (self.url is None) == (self.sentinel is None):
            raise ValueError("set exactly one of 'url' or 'sentinel'")
        if parse_duration(self.wait_timeout).total_seconds() == 0:
            raise ValueError("waitTimeout must be at least 1s")
        return self


class DedupSpec(_Spec):
    ttl: Duration = "25h"
    max_entries: int = Field(1_000_000, ge=1)


class ResourcesSpec(_Spec):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class ServiceSpec(_Spec):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(DEFAULT_SERVICE_PORT, ge=1, le=65535)


Host = Annotated[str, Field(pattern=HOST_PATTERN, max_length=253)]
HttpPath = Annotated[str, Field(pattern=PATH_PATTERN, max_length=1024)]


class IssuerSpec(_Spec):
    name: str = Field(min_length=1, max_length=253)
    kind: Literal["Issuer", "ClusterIssuer"] = "ClusterIssuer"


class IngressTLSSpec(_Spec):
    secret_name: str | None = Field(
        None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253
    )
    issuer: IssuerSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> IngressTLSSpec:
        if (self.secret_name is None) == (self.issuer is None):
            raise ValueError("set exactly one of 'secretName' or 'issuer'")
        return self


class IngressExposeSpec(_Spec):
    ingress_class_name: str | None = None
    host: Host
    path: HttpPath = "/"
    tls: IngressTLSSpec
    annotations: dict[str, str] = Field(default_factory=dict)


class ParentRefSpec(_Spec):
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(None, min_length=1, max_length=63)
    section_name: str | None = Field(None, min_length=1, max_length=253)


class HTTPRouteExposeSpec(_Spec):
    parent_refs: list[ParentRefSpec] = Field(min_length=1, max_length=32)
    hostnames: list[Host] = Field(min_length=1, max_length=16)
    path: HttpPath = "/"


class ExposeSpec(_Spec):
    ingress: IngressExposeSpec | None = None
    http_route: HTTPRouteExposeSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ExposeSpec:
        if (self.ingress is None) == (self.http_route is None):
            raise ValueError("set exactly one of 'ingress' or 'httpRoute'")
        return self

    @property
    def host(self) -> str:
        if self.ingress is not None:
            return self.ingress.host
        assert self.http_route is not None
        return self.http_route.hostnames[0]

    @property
    def path(self) -> str:
        if self.ingress is not None:
            return self.ingress.path
        assert self.http_route is not None
        return self.http_route.path

    @property
    def url(self) -> str:
        """The webhook's URL behind this route."""
        return f"https://{self.host}{self.path}"


class LabelSelectorSpec(_Spec):
    match_labels: dict[str, str] = Field(default_factory=dict)


class IPBlockSpec(_Spec):
    cidr: str = Field(min_length=1)
    except_: list[str] = Field(default_factory=list, alias="except")


class PeerSpec(_Spec):
    namespace_selector: LabelSelectorSpec | None = None
    pod_selector: LabelSelectorSpec | None = None
    ip_block: IPBlockSpec | None = None


class NetworkPolicySpec(_Spec):
    enabled: bool = True
    public_from: list[PeerSpec] | None = Field(None, max_length=32)


class TracingSpec(_Spec):
    otlp_endpoint: str = Field(pattern=OTLP_ENDPOINT_PATTERN, max_length=2048)
    service_name: str | None = Field(None, min_length=1, max_length=253)
    sampler: TracesSampler = DEFAULT_TRACES_SAMPLER
    sampler_arg: str | None = Field(None, pattern=SAMPLER_ARG_PATTERN)


class ReceiverSpec(_Spec):
    enabled: bool = False
    replicas: int = Field(DEFAULT_REPLICAS, ge=1, le=MAX_REPLICAS)
    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: ResourcesSpec | None = None
    routes: list[RouteSpec] = Field(default_factory=list)
    default_route: DefaultRouteSpec | None = None
    dead_letter: DeadLetterSpec | None = None
    dynamic: DynamicSpec = Field(default_factory=DynamicSpec)
    redis: RedisSpec | None = None
    dedup: DedupSpec = Field(default_factory=DedupSpec)
    replay_tolerance: Duration = f"{DEFAULT_TOLERANCE_SECONDS // 60}m"
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    expose: ExposeSpec | None = None
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    tracing: TracingSpec | None = None


class HealthCheckSpec(_Spec):
    """`spec.healthCheck` (its schema lives in `contracts.crd`)."""

    enabled: bool = False
    interval: Duration = DEFAULT_HEALTH_INTERVAL

    @model_validator(mode="after")
    def _not_too_often(self) -> HealthCheckSpec:
        # Each ping is a WebhookService call; the steady-state budget is one per interval.
        if parse_duration(self.interval).total_seconds() < MIN_HEALTH_INTERVAL_SECONDS:
            raise ValueError("interval must be at least 1m")
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
