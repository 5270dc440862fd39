"""The emulator's decisions, as pure functions: no I/O, no clock reads, no randomness of
their own (callers pass `now` and a random source). Everything here is testable alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from gemini_webhooks.contracts.events import ALL_EVENT_TYPES, CATALOGUE, subscription_error

from .errors import invalid_argument

WebhookState = Literal["enabled", "disabled", "disabled_due_to_failed_deliveries"]
USER_SETTABLE_STATES: tuple[str, ...] = ("enabled", "disabled")
UPDATABLE_FIELDS: tuple[str, ...] = ("name", "uri", "subscribed_events", "state")
# Google APIs accept both spellings of a field path in `update_mask`.
_MASK_ALIASES = {"subscribedEvents": "subscribed_events"}
CREATE_FIELDS = ("name", "uri", "subscribed_events")
OUTPUT_ONLY_FIELDS = (
    "id",
    "create_time",
    "update_time",
    "signing_secrets",
    "new_signing_secret",
    "state",
)
MAX_URI_LENGTH = 2048
MAX_NAME_LENGTH = 512

RevocationBehavior = Literal[
    "revoke_previous_secrets_after_h24", "revoke_previous_secrets_immediately"
]
REVOCATION_BEHAVIORS: tuple[str, ...] = (
    "revoke_previous_secrets_after_h24",
    "revoke_previous_secrets_immediately",
)
DEFAULT_REVOCATION: RevocationBehavior = "revoke_previous_secrets_after_h24"


# --- validation -----------------------------------------------------------------------


def validate_uri(value: Any, field: str = "uri") -> str:
    """An absolute http(s) URI with a host, or INVALID_ARGUMENT."""
    if not isinstance(value, str) or not value.strip():
        raise invalid_argument(f"{field} must be a non-empty http(s) URI")
    if len(value) > MAX_URI_LENGTH:
        raise invalid_argument(f"{field} is longer than {MAX_URI_LENGTH} characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise invalid_argument(f"{field} is not a valid URI") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid_argument(f"{field} must be an absolute http or https URI")
    if any(ch.isspace() for ch in value):
        raise invalid_argument(f"{field} must not contain whitespace")
    return value


def validate_subscribed_events(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise invalid_argument("subscribed_events must be a non-empty list of event types")
    events: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise invalid_argument("subscribed_events must contain strings only")
        error = subscription_error(item)
        if error is not None:
            raise invalid_argument(error)
        if item not in events:
            events.append(item)
    return events


def validate_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_argument("name must be a string")
    if len(value) > MAX_NAME_LENGTH:
        raise invalid_argument(f"name is longer than {MAX_NAME_LENGTH} characters")
    return value


def validate_state(value: Any) -> WebhookState:
    if value not in USER_SETTABLE_STATES:
        raise invalid_argument(
            f"state must be one of {', '.join(USER_SETTABLE_STATES)}"
            + (
                " (disabled_due_to_failed_deliveries is set by the service only)"
                if value == "disabled_due_to_failed_deliveries"
                else ""
            )
        )
    state: WebhookState = value
    return state


def _reject_unknown(body: Mapping[str, Any], known: Iterable[str]) -> None:
    allowed = set(known) | set(OUTPUT_ONLY_FIELDS)
    for key in body:
        if key not in allowed:
            raise invalid_argument(f"Invalid JSON payload received. Unknown name {key!r}")


@dataclass(frozen=True)
class NewWebhook:
    name: str
    uri: str
    subscribed_events: list[str]


def parse_create(body: Any) -> NewWebhook:
    """A create request, validated whole before anything is stored."""
    if not isinstance(body, dict):
        raise invalid_argument("request body must be a JSON object")
    _reject_unknown(body, CREATE_FIELDS)
    if "uri" not in body:
        raise invalid_argument("uri is required")
    if "subscribed_events" not in body:
        raise invalid_argument("subscribed_events is required")
    return NewWebhook(
        name=validate_name(body.get("name")),
        uri=validate_uri(body["uri"]),
        subscribed_events=validate_subscribed_events(body["subscribed_events"]),
    )


def parse_update_mask(raw: str | None) -> list[str] | None:
    """The field paths of `update_mask`, or None when no mask was given."""
    if raw is None or not raw.strip():
        return None
    fields: list[str] = []
    for part in raw.split(","):
        path = _MASK_ALIASES.get(part.strip(), part.strip())
        if path not in UPDATABLE_FIELDS:
            raise invalid_argument(
                f"update_mask names an unknown or immutable field {part.strip()!r}; "
                f"updatable fields: {', '.join(UPDATABLE_FIELDS)}"
            )
        if path not in fields:
            fields.append(path)
    return fields


def parse_update(body: Any, mask: list[str] | None) -> dict[str, Any]:
    """The validated changes of an update: with a mask, exactly the masked fields (a masked
    field absent from the body is cleared, which only `name` allows); without, the fields
    given."""
    if not isinstance(body, dict):
        raise invalid_argument("request body must be a JSON object")
    _reject_unknown(body, UPDATABLE_FIELDS)
    fields = mask if mask is not None else [f for f in UPDATABLE_FIELDS if f in body]
    changes: dict[str, Any] = {}
    for field in fields:
        value = body.get(field)
        if field == "name":
            changes["name"] = validate_name(value)
        elif field == "uri":
            changes["uri"] = validate_uri(value)
        elif field == "subscribed_events":
            changes["subscribed_events"] = validate_subscribed_events(value)
        elif field == "state":
            changes["state"] = validate_state(value)
    return changes


def parse_revocation(body: Any) -> RevocationBehavior:
    """The rotation's revocation behaviour; the guide's upper-case spelling is accepted too."""
    if body is None:
        return DEFAULT_REVOCATION
    if not isinstance(body, dict):
        raise invalid_argument("request body must be a JSON object")
    _reject_unknown(body, ("revocation_behavior", "revocationBehavior"))
    raw = body.get("revocation_behavior", body.get("revocationBehavior"))
    if raw is None:
        return DEFAULT_REVOCATION
    if not isinstance(raw, str):
        raise invalid_argument("revocation_behavior must be a string")
    value = raw.lower().removeprefix("revocation_behavior_")
    if value not in REVOCATION_BEHAVIORS:
        raise invalid_argument(
            f"unknown revocation_behavior; expected one of {', '.join(REVOCATION_BEHAVIORS)}"
        )
    behavior: RevocationBehavior = value  # type: ignore[assignment]
    return behavior


def parse_page_size(raw: str | None, default: int = 50, maximum: int = 1000) -> int:
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        raise invalid_argument("page_size must be an integer") from None
    if size < 0:
        raise invalid_argument("page_size must not be negative")
    return default if size == 0 else min(size, maximum)


# --- signing secrets ------------------------------------------------------------------


@dataclass(frozen=True)
class SecretEntry:
    secret: str
    created_at: datetime
    expire_time: datetime | None = None

    def __repr__(self) -> str:  # never show the material
        return f"SecretEntry(created_at={self.created_at!r}, expire_time={self.expire_time!r})"


def valid_secrets(secrets: Sequence[SecretEntry], now: datetime) -> tuple[SecretEntry, ...]:
    """The secrets that sign at `now` (newest first): the current one and any in grace."""
    return tuple(s for s in secrets if s.expire_time is None or now < s.expire_time)


def rotate_secrets(
    secrets: Sequence[SecretEntry],
    new_secret: str,
    behavior: RevocationBehavior,
    now: datetime,
    grace: timedelta,
) -> tuple[SecretEntry, ...]:
    """The secrets after a rotation: the new one first; previous ones dropped at once, or
    kept until `now + grace` (one already in grace keeps its earlier end)."""
    fresh = SecretEntry(secret=new_secret, created_at=now)
    if behavior == "revoke_previous_secrets_immediately":
        return (fresh,)
    deadline = now + grace
    kept = tuple(
        replace(s, expire_time=min(s.expire_time or deadline, deadline))
        for s in valid_secrets(secrets, now)
    )
    return (fresh, *kept)


# --- routing and retries --------------------------------------------------------------


@dataclass(frozen=True)
class WebhookView:
    """What routing needs to know about a registered webhook."""

    id: str
    state: str
    subscribed_events: tuple[str, ...]


def static_targets(webhooks: Iterable[WebhookView], event_type: str) -> list[str]:
    """Ids of the registered webhooks that receive `event_type`: enabled and subscribed."""
    return [w.id for w in webhooks if w.state == "enabled" and event_type in w.subscribed_events]


@dataclass(frozen=True)
class RetryPolicy:
    """Nominal durations (before time scaling)."""

    window: timedelta = timedelta(hours=24)
    base: timedelta = timedelta(seconds=5)
    factor: float = 2.0
    cap: timedelta = timedelta(hours=1)


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> timedelta:
    """Delay before retry number `attempt` (1 = first retry): exponential, capped, with
    "equal jitter" (half fixed, half random) so retries of many events spread out."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    exponent = min(attempt - 1, 60)
    nominal = min(policy.base.total_seconds() * policy.factor**exponent, policy.cap.total_seconds())
    return timedelta(seconds=nominal / 2 + rng.uniform(0, nominal / 2))


def next_retry(
    first_attempt_at: datetime,
    now: datetime,
    attempt: int,
    policy: RetryPolicy,
    rng: random.Random,
    scale: float = 1.0,
) -> timedelta | None:
    """The (scaled) wait before the next attempt, or None when the retry window is spent."""
    delay = backoff_delay(attempt, policy, rng) / scale
    if now + delay > first_attempt_at + policy.window / scale:
        return None
    return delay


def should_disable(failing_since: datetime | None, now: datetime, window: timedelta) -> bool:
    """A static webhook is disabled once its deliveries have failed, without one success,
    for `window` (already scaled)."""
    return failing_since is not None and now - failing_since >= window


# --- events ---------------------------------------------------------------------------


def event_data(
    event_type: str, given: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The `data` of an event: the catalogue's fields, taken from `given` or `defaults`;
    extra fields in `given` are kept (the envelope is a snapshot, not a closed schema)."""
    if event_type not in ALL_EVENT_TYPES:
        raise invalid_argument(
            f"unknown event type {event_type!r}; known: {', '.join(ALL_EVENT_TYPES)}"
        )
    spec = next(s for s in CATALOGUE.values() if s.type.value == event_type)
    data: dict[str, Any] = {}
    for field in spec.data_fields:
        value = given.get(field, defaults.get(field))
        if value is None:
            raise invalid_argument(f"data.{field} is required for {event_type}")
        data[field] = value
    for key, value in given.items():
        if key not in data:
            data[key] = value
    return data
