"""The receiver's configuration file — rendered by the operator into a ConfigMap, parsed by
`gemini-webhooks receiver --config FILE` at start-up.

The file is YAML (JSON is valid YAML). Every model forbids unknown keys, so a typo fails
start-up with a message that names the bad key (`parse`/`load` raise ReceiverConfigError).
The operator builds a `ReceiverConfig` and writes it with `dump`; the receiver reads it with
`load`. Additions are backward compatible; renames are not — keep names stable.

Minimal example (one static webhook whose secrets live in a Kubernetes Secret, one route):

```yaml
static_webhooks:
  - name: orders
    secrets: {kubernetes: {namespace: team-a, name: orders-signing-secret}}
routes:
  - name: batches
    match: {types: ["batch.*"]}
    targets: [{service: {name: batch-handler, namespace: team-a, port: 8080, path: /events}}]
default_route:
  targets: [{url: "http://catch-all.team-a.svc:8080/"}]
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gemini_webhooks.contracts.delivery import (
    DEFAULT_TOLERANCE_SECONDS,
    GOOGLE_ISSUER,
    GOOGLE_JWKS_URI,
)

# A source name that routes may match besides the static webhooks' names.
DYNAMIC_SOURCE = "dynamic"

Port = Annotated[int, Field(ge=1, le=65535)]
ListenPort = Annotated[int, Field(ge=0, le=65535)]  # 0: an ephemeral port (tests)
PositiveSeconds = Annotated[float, Field(gt=0)]
SENTINEL_ADDRESS_PATTERN = r"^[^\s:]+:[0-9]{1,5}$"  # host:port
DEFAULT_LISTEN_PORT = 8080
DEFAULT_INTERNAL_PORT = 9090
# On the internal port: what the receiver has seen of the operator's health pings.
PING_STATUS_PATH = "/internal/pings"


class ReceiverConfigError(ValueError):
    """The configuration is invalid; the message names each bad key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(_Model):
    """The public endpoint Gemini delivers to (the Service in front of the receiver)."""

    host: str = Field("0.0.0.0", description="Address to bind the delivery endpoint to.")
    port: ListenPort = Field(DEFAULT_LISTEN_PORT, description="Port of the delivery endpoint.")
    path: str = Field(
        "/", pattern=r"^/", description="Path that accepts deliveries (static and dynamic)."
    )


class InternalConfig(_Model):
    """The internal port: /metrics, /healthz, /readyz and /internal/pings (for the operator).

    Not exposed through the public Service; reach it via the pod IP or a separate Service.
    """

    host: str = Field("0.0.0.0", description="Address to bind the internal endpoint to.")
    port: ListenPort = Field(DEFAULT_INTERNAL_PORT, description="Port of the internal endpoint.")


class LimitsConfig(_Model):
    """Bounds on what one request may cost."""

    max_body_bytes: int = Field(
        256 * 1024, ge=1024, description="Largest accepted body; larger ones get 413."
    )
    read_timeout_seconds: PositiveSeconds = Field(
        10.0, description="Time allowed to read one request's body before answering 408."
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description=(
            "Open connections on the public port; when all are open a new one closes the"
            " longest-idle one without a request under way, or is answered 503 if all are busy."
        ),
    )


class ReplayConfig(_Model):
    """Replay protection on `webhook-timestamp` (and the JWT's `iat`)."""

    tolerance_seconds: int = Field(
        DEFAULT_TOLERANCE_SECONDS,
        ge=1,
        description="Reject deliveries older, or further in the future, than this.",
    )
    reload_pending_seconds: int = Field(
        60,
        ge=0,
        le=3600,
        description=(
            "After deliveries verified, a signature matching no loaded secret is answered"
            " 503 `secret_reload_pending` (Gemini retries) for at most this long, once per"
            " secret generation: a rotated secret may not have reached this replica yet."
            " 0: always 401 `bad_signature`."
        ),
    )


class DedupConfig(_Model):
    """Deduplication on `webhook-id` (Gemini retries for 24 h, so remember at least that)."""

    backend: Literal["memory", "redis"] = Field(
        "memory",
        description="`memory`: one replica, bounded map; `redis`: shared by replicas "
        "(needs the `redis` section).",
    )
    ttl_seconds: int = Field(25 * 3600, ge=60, description="How long a `webhook-id` is remembered.")
    max_entries: int = Field(
        1_000_000,
        ge=1,
        description="Memory backend only: the oldest ids are forgotten beyond this count.",
    )


class KubernetesSecretRef(_Model):
    """A Kubernetes Secret in the format of `contracts.signing_secret`, watched via the API."""

    namespace: str = Field(min_length=1, description="Namespace of the Secret.")
    name: str = Field(min_length=1, description="Name of the Secret.")


class FileSecretRef(_Model):
    """A mounted Secret: a directory holding `signing-secrets.json`, or that file itself."""

    path: str = Field(min_length=1, description="Directory or file path; reloaded on change.")


class SecretsSource(_Model):
    """Where a static webhook's signing secrets come from: exactly one of the two."""

    kubernetes: KubernetesSecretRef | None = Field(
        None, description="Watch this Secret through the Kubernetes API (no restart on rotation)."
    )
    file: FileSecretRef | None = Field(None, description="Read (and re-read) this path.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretsSource:
        if (self.kubernetes is None) == (self.file is None):
            raise ValueError("set exactly one of 'kubernetes' or 'file'")
        return self


class StaticWebhookConfig(_Model):
    """One static (project-level) webhook whose deliveries this receiver verifies."""

    name: str = Field(
        min_length=1,
        description="Routing `source` name for its deliveries (`dynamic` is reserved).",
    )
    webhook_id: str | None = Field(
        None, description="The Gemini webhook id, for logs (informational)."
    )
    secrets: SecretsSource = Field(description="Where its signing secrets come from.")


class DynamicConfig(_Model):
    """Dynamic (request-level) webhooks: RS256 JWTs in `webhook-signature`."""

    enabled: bool = Field(False, description="Accept JWT-signed deliveries.")
    audiences: list[str] = Field(
        default_factory=list,
        description="Accepted `aud` values (usually the public URI of this receiver).",
    )
    issuer: str = Field(GOOGLE_ISSUER, description="Required `iss`.")
    jwks_uri: str = Field(
        GOOGLE_JWKS_URI, description="Pinned JWKS URI; keys are never fetched from elsewhere."
    )
    jwks_min_refresh_seconds: PositiveSeconds = Field(
        30.0, description="At most one JWKS refresh (on an unknown `kid`) per this interval."
    )
    jwks_max_age_seconds: PositiveSeconds = Field(
        3600.0, description="A cached JWKS older than this is refreshed at the next lookup."
    )
    jwks_max_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Largest JWKS body (after gzip/deflate decoding); a larger one is a failed"
        " refresh (a key set of a few RSA keys is a few KiB).",
    )
    leeway_seconds: int = Field(
        30, ge=0, le=300, description="Clock-skew allowance for `exp`, `iat` and `nbf`."
    )
    job_key_file: str | None = Field(
        None,
        min_length=1,
        description="File holding this receiver's job key (`contracts.dynamic_jobs`), read at "
        "start: a delivery is accepted only if its `user_metadata` carries a valid MAC under "
        "it, i.e. the job was submitted by someone holding the key.",
    )
    accept_jobs_from_any_project: bool = Field(
        False,
        description="Accept dynamic deliveries without checking the job's MAC: any holder of a "
        "Gemini API key, in any project, can then send events here and pick their routes "
        "with `user_metadata`.",
    )

    @model_validator(mode="after")
    def _audiences_when_enabled(self) -> DynamicConfig:
        if self.enabled and not self.audiences:
            raise ValueError("'audiences' must list at least one audience when enabled")
        if self.enabled and self.job_key_file is None and not self.accept_jobs_from_any_project:
            raise ValueError(
                "'job_key_file' is required when enabled (or set "
                "'accept_jobs_from_any_project: true' to accept every Gemini project's jobs)"
            )
        return self


class ServiceTarget(_Model):
    """A Kubernetes Service port, reached at `contracts.service_endpoints.service_url`."""

    name: str = Field(min_length=1, description="Service name.")
    namespace: str = Field(min_length=1, description="Service namespace.")
    port: Port = Field(description="Service port.")
    path: str = Field("/", description="Path on the Service.")


class TargetConfig(_Model):
    """Where an event goes: a Service or a URL (exactly one), and in which format."""

    service: ServiceTarget | None = Field(None, description="An in-cluster Service.")
    url: str | None = Field(None, pattern=r"^https?://", description="An http(s) URL.")
    format: Literal["envelope", "cloudevents"] = Field(
        "envelope",
        description="`envelope`: the envelope JSON as received; `cloudevents`: a CloudEvent "
        "in binary mode (ce-* headers, data as body).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetConfig:
        if (self.service is None) == (self.url is None):
            raise ValueError("set exactly one of 'service' or 'url'")
        return self


class MatchConfig(_Model):
    """All given conditions must hold; an absent condition matches everything."""

    types: list[str] = Field(
        default_factory=list, description="Event type globs (`batch.*`, `video.generated`)."
    )
    sources: list[str] = Field(
        default_factory=list,
        description="Static webhook names and/or `dynamic`.",
    )
    user_metadata: dict[str, str] = Field(
        default_factory=dict,
        description="`user_metadata` key → value glob; each key must be present and match.",
    )


class RouteConfig(_Model):
    """One ordered routing rule; the first rule that matches decides the targets."""

    name: str = Field(min_length=1, description="Rule name (logs and metrics).")
    match: MatchConfig = Field(default_factory=MatchConfig, description="When the rule applies.")
    targets: list[TargetConfig] = Field(min_length=1, description="Every target gets the event.")


class DefaultRouteConfig(_Model):
    """Targets for events that no rule matches."""

    targets: list[TargetConfig] = Field(min_length=1, description="Every target gets the event.")


class DeadLetterConfig(_Model):
    """Where unroutable events go when Redis is not configured (with Redis: the stream)."""

    target: TargetConfig | None = Field(
        None, description="Forward unroutable events here (envelope format)."
    )


class ForwardingConfig(_Model):
    """How events are forwarded to targets."""

    timeout_seconds: PositiveSeconds = Field(5.0, description="Timeout of one forward attempt.")
    inline_deadline_seconds: PositiveSeconds = Field(
        4.0,
        description="Without Redis: total time to deliver before answering 503 "
        "(keep below the few seconds Gemini waits for an answer).",
    )
    inline_attempts: int = Field(2, ge=1, le=10, description="Without Redis: attempts per target.")
    backoff_initial_seconds: PositiveSeconds = Field(0.5, description="First retry delay.")
    backoff_max_seconds: PositiveSeconds = Field(60.0, description="Largest retry delay.")
    backoff_multiplier: float = Field(2.0, ge=1.0, description="Delay growth per attempt.")
    max_connections: int = Field(100, ge=1, description="Connection pool size to targets.")


class SentinelConfig(_Model):
    """Find the Redis primary through Redis Sentinel, and follow it across failovers."""

    addresses: list[Annotated[str, Field(pattern=SENTINEL_ADDRESS_PATTERN)]] = Field(
        min_length=1, description="Sentinels as `host:port`; any one that answers will do."
    )
    master_name: str = Field(min_length=1, description="The monitored primary's name.")
    db: int = Field(0, ge=0, description="Database number on the primary.")


class RedisConfig(_Model):
    """Durable mode: accept into a Redis Stream, deliver from a consumer group.

    An acknowledgement is only as durable as the server: at start-up and on every new
    connection the receiver reads the server's persistence settings and, unless they are
    `appendonly yes` with `appendfsync everysec` or `always`, refuses to run (at start) or
    to acknowledge (later) — unless `accept_data_loss_risk` says to go on regardless.
    """

    url: str | None = Field(
        None,
        pattern=r"^(redis|rediss|unix)://",
        description="Redis URL (or give `sentinel`).",
    )
    sentinel: SentinelConfig | None = Field(
        None, description="Connect through Redis Sentinel instead of a fixed URL."
    )
    accept_data_loss_risk: bool = Field(
        False,
        description="Run even when the server's persistence does not make an acknowledged "
        "event survive a Redis crash; /readyz and `gemini_receiver_redis_durability` say so.",
    )
    wait_replicas: int = Field(
        0,
        ge=0,
        description="Acknowledge only once this many replicas hold the event (`WAIT`); "
        "fewer within `wait_timeout_seconds` answer 503.",
    )
    wait_timeout_seconds: PositiveSeconds = Field(
        1.0, description="How long one `WAIT` for `wait_replicas` may take."
    )
    stream: str = Field("gemini-webhooks:deliveries", description="Stream of accepted events.")
    dead_letter_stream: str = Field(
        "gemini-webhooks:dead-letters", description="Stream of events given up on."
    )
    consumer_group: str = Field("gemini-webhook-receiver", description="Consumer group name.")
    consumer_name: str | None = Field(
        None, description="This replica's consumer name (default: the host name)."
    )
    dedup_key_prefix: str = Field("gemini-webhooks:seen:", description="Prefix of dedup keys.")
    max_attempts: int = Field(12, ge=1, description="Dead-letter after this many attempts.")
    max_age_seconds: PositiveSeconds = Field(
        24 * 3600.0, description="Dead-letter events older than this."
    )
    claim_idle_seconds: PositiveSeconds = Field(
        30.0, description="Reclaim entries pending longer than this (a crashed replica's)."
    )
    stream_maxlen: int = Field(
        1_000_000, ge=1000, description="Approximate cap on each stream's length."
    )
    concurrency: int = Field(16, ge=1, description="Deliveries in flight per replica.")

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> RedisConfig:
        if (self.url is None) == (self.sentinel is None):
            raise ValueError("set exactly one of 'url' or 'sentinel'")
        return self


class LoggingConfig(_Model):
    """Structured logs: one JSON object per line, correlated by `webhook_id`."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["json", "text"] = Field("json", description="Line format.")


class ReceiverConfig(_Model):
    """The whole receiver configuration."""

    listen: ListenConfig = Field(default_factory=ListenConfig)
    internal: InternalConfig = Field(default_factory=InternalConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    static_webhooks: list[StaticWebhookConfig] = Field(
        default_factory=list, description="Static webhooks verified with their secrets."
    )
    dynamic: DynamicConfig = Field(default_factory=DynamicConfig)
    routes: list[RouteConfig] = Field(default_factory=list, description="Ordered rules.")
    default_route: DefaultRouteConfig | None = Field(
        None, description="Targets for events no rule matches."
    )
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    forwarding: ForwardingConfig = Field(default_factory=ForwardingConfig)
    redis: RedisConfig | None = Field(None, description="Durable mode when set.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    cluster_domain: str = Field("cluster.local", description="Cluster DNS domain for Services.")

    @model_validator(mode="after")
    def _consistent(self) -> ReceiverConfig:
        if not self.static_webhooks and not self.dynamic.enabled:
            raise ValueError("configure at least one of 'static_webhooks' or 'dynamic.enabled'")
        names = [w.name for w in self.static_webhooks]
        if DYNAMIC_SOURCE in names:
            raise ValueError(f"static_webhooks: the name {DYNAMIC_SOURCE!r} is reserved")
        if len(set(names)) != len(names):
            raise ValueError("static_webhooks: names must be unique")
        if self.dedup.backend == "redis" and self.redis is None:
            raise ValueError("dedup.backend 'redis' needs the 'redis' section")
        if self.redis is None and self.default_route is None and self.dead_letter.target is None:
            raise ValueError(
                "without 'redis', set 'default_route' or 'dead_letter.target' so that an "
                "unroutable event is never dropped"
            )
        return self


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part[:1].isalpha() and part != "_":
            continue  # pydantic's union branch tags, e.g. "function-after[...]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _explain(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        where = _location(tuple(item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{where}: {message}")
    return "invalid receiver config:\n  " + "\n  ".join(lines)


def from_dict(document: Any) -> ReceiverConfig:
    """Validate an already-parsed document."""
    if not isinstance(document, dict):
        raise ReceiverConfigError("invalid receiver config: expected a mapping at the top level")
    try:
        return ReceiverConfig.model_validate(document)
    except ValidationError as error:
        raise ReceiverConfigError(_explain(error)) from None


def parse(text: str) -> ReceiverConfig:
    """Parse YAML or JSON text."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ReceiverConfigError(f"receiver config is not valid YAML/JSON: {error}") from None
    return from_dict({} if document is None else document)


def load(path: str | Path) -> ReceiverConfig:
    """Read and parse a config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ReceiverConfigError(f"cannot read receiver config {path}: {error.strerror}") from None
    return parse(text)


def to_dict(config: ReceiverConfig) -> dict[str, Any]:
    """The config as plain data, omitting unset optional sections."""
    return config.model_dump(mode="json", exclude_none=True)


def dump(config: ReceiverConfig) -> str:
    """The config as YAML text (what the operator puts in the ConfigMap)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
