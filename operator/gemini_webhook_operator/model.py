"""A GeminiWebhook resource read into typed values — the operator's view of the CRD.

The API server validates the schema already; this module re-checks what the schema cannot
express (cron syntax, "url unless a receiver provides one") and what a cluster without
schema validation could let through, with messages that name the field.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import cronsim
from pydantic import ValidationError

from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.crd_receiver import (
    CrdReceiverError,
    ReceiverSpec,
    parse_duration,
    receiver_spec,
)
from gemini_webhooks.contracts.crd_receiver_exposure import ExposeSpec
from gemini_webhooks.contracts.events import subscription_error
from gemini_webhooks.contracts.spec_section import explain_error

# The marker in the remote webhook's `name` that lets the operator find its own webhook
# after a crash, before it could record the webhook's ID anywhere.
MARKER_PREFIX = "[k8s:"
MARKER_RE = re.compile(r"\[k8s:([0-9a-fA-F-]{8,64})\]\s*$")
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class InvalidSpecError(ValueError):
    """The resource's spec cannot be acted on; the message names the field."""


@dataclass(frozen=True)
class RotationPolicy:
    interval: timedelta | None = None
    schedule: str | None = None
    revocation: str = "Grace"
    paused: bool = False

    @property
    def immediate(self) -> bool:
        return self.revocation == "Immediate"


@dataclass(frozen=True)
class WebhookSpec:
    namespace: str
    name: str
    uid: str
    generation: int
    display_name: str
    url: str | None
    events: tuple[str, ...]
    enabled: bool
    api_key_secret: str
    api_key_key: str
    signing_secret_name: str
    rotation: RotationPolicy
    deletion_policy: str
    adopt_id: str | None
    api_base_url: str | None
    receiver_enabled: bool
    rotate_requested: str | None  # the value of the rotate annotation, when present
    # The typed spec.receiver, parsed once; or why it is invalid (the receiver's problem:
    # the reconcile reports it as ReceiverInvalid, not this parse as InvalidSpec).
    receiver_parsed: ReceiverSpec | str
    # The requested rotation's revocation (the rotate-revocation annotation), when set.
    rotate_revocation: str | None = None
    exposed_url: str | None = None  # https://<host><path> of spec.receiver.expose

    @property
    def receiver(self) -> ReceiverSpec:
        """The typed spec.receiver; CrdReceiverError, naming the field, when it is invalid."""
        if isinstance(self.receiver_parsed, str):
            raise CrdReceiverError(self.receiver_parsed)
        return self.receiver_parsed

    @property
    def remote_name(self) -> str:
        """The remote webhook's `name`: the display name plus our marker."""
        return f"{self.display_name} {MARKER_PREFIX}{self.uid}]"

    @property
    def remote_state(self) -> str:
        return "enabled" if self.enabled else "disabled"


def marker_uid(remote_name: str | None) -> str | None:
    """The resource UID carried in a remote webhook's name, if any."""
    if not remote_name:
        return None
    match = MARKER_RE.search(remote_name)
    return match.group(1) if match else None


def _field(spec: dict[str, Any], path: str, kind: type, default: Any = None) -> Any:
    value: Any = spec
    for part in path.split("."):
        if not isinstance(value, dict):
            raise InvalidSpecError(f"spec.{path}: expected an object above this field")
        value = value.get(part)
        if value is None:
            return default
    if not isinstance(value, kind):
        raise InvalidSpecError(f"spec.{path}: expected {kind.__name__}")
    return value


def parse_interval(value: str, field: str) -> timedelta:
    try:
        interval = parse_duration(value)
    except (ValueError, CrdReceiverError):
        raise InvalidSpecError(
            f"{field}: {value!r} is not a duration like '720h' or '1h30m'"
        ) from None
    if interval <= timedelta(0):
        raise InvalidSpecError(f"{field}: must be longer than zero")
    return interval


def check_schedule(expression: str, field: str = "spec.rotation.schedule") -> str:
    try:
        cronsim.CronSim(expression, _EPOCH)
    except cronsim.CronSimError as error:
        message = f"{field}: {expression!r} is not a cron expression: {error}"
        raise InvalidSpecError(message) from None
    return expression


def parse(body: dict[str, Any]) -> WebhookSpec:
    """Read a GeminiWebhook object. Raises InvalidSpecError naming the field."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise InvalidSpecError("spec: required")
    name = str(metadata.get("name", ""))
    events = _field(spec, "events", list)
    if not events:
        raise InvalidSpecError("spec.events: subscribe to at least one event type")
    for index, event in enumerate(events):
        error = subscription_error(str(event))
        if error is not None:
            raise InvalidSpecError(f"spec.events[{index}]: {error}")
    if len(set(events)) != len(events):
        raise InvalidSpecError("spec.events: lists an event type twice")
    api_key_secret = _field(spec, "apiKeySecretRef.name", str)
    if not api_key_secret:
        raise InvalidSpecError("spec.apiKeySecretRef.name: required")
    state = _field(spec, "state", str, "Enabled")
    if state not in crd.STATES:
        raise InvalidSpecError(f"spec.state: must be one of {', '.join(crd.STATES)}")
    interval_text = _field(spec, "rotation.interval", str)
    schedule = _field(spec, "rotation.schedule", str)
    if interval_text and schedule:
        raise InvalidSpecError("spec.rotation: set either interval or schedule, not both")
    revocation = _field(spec, "rotation.revocation", str, "Grace")
    if revocation not in crd.REVOCATIONS:
        raise InvalidSpecError(
            f"spec.rotation.revocation: must be one of {', '.join(crd.REVOCATIONS)}"
        )
    deletion_policy = _field(spec, "deletionPolicy", str, "Delete")
    if deletion_policy not in crd.DELETION_POLICIES:
        raise InvalidSpecError(
            f"spec.deletionPolicy: must be one of {', '.join(crd.DELETION_POLICIES)}"
        )
    receiver_enabled = bool(_field(spec, "receiver.enabled", bool, False))
    url = _field(spec, "url", str)
    if url is None and not receiver_enabled:
        raise InvalidSpecError("spec.url: required unless spec.receiver.enabled is true")
    exposed_url = _exposed_url(spec) if receiver_enabled else None
    if url is not None and exposed_url is not None:
        raise InvalidSpecError(
            "spec.url: leave it unset with spec.receiver.expose (the URL is derived as "
            "https://<host><path>)"
        )
    if url is not None and not re.fullmatch(crd.URL_PATTERN, url):
        raise InvalidSpecError("spec.url: must be an http(s) URL")
    base_url = _field(spec, "apiBaseUrl", str)
    if base_url is not None and not re.fullmatch(crd.URL_PATTERN, base_url):
        raise InvalidSpecError("spec.apiBaseUrl: must be an http(s) URL")
    annotations = metadata.get("annotations") or {}
    rotate_revocation = annotations.get(crd.ANNOTATION_ROTATE_REVOCATION)
    if rotate_revocation is not None and rotate_revocation not in crd.REVOCATIONS:
        raise InvalidSpecError(
            f"annotation {crd.ANNOTATION_ROTATE_REVOCATION}: must be one of "
            f"{', '.join(crd.REVOCATIONS)}, not {rotate_revocation!r}"
        )
    return WebhookSpec(
        namespace=str(metadata.get("namespace", "default")),
        name=name,
        uid=str(metadata.get("uid", "")),
        generation=int(metadata.get("generation") or 0),
        display_name=_field(spec, "displayName", str) or name,
        url=url,
        events=tuple(events),
        enabled=state == "Enabled",
        api_key_secret=api_key_secret,
        api_key_key=_field(spec, "apiKeySecretRef.key", str, crd.DEFAULT_API_KEY_SECRET_KEY),
        signing_secret_name=_field(spec, "signingSecretName", str)
        or f"{name}{crd.DEFAULT_SIGNING_SECRET_SUFFIX}",
        rotation=RotationPolicy(
            interval=parse_interval(interval_text, "spec.rotation.interval")
            if interval_text
            else None,
            schedule=check_schedule(schedule) if schedule else None,
            revocation=revocation,
            paused=bool(_field(spec, "rotation.paused", bool, False)),
        ),
        deletion_policy=deletion_policy,
        adopt_id=_field(spec, "webhookId", str),
        api_base_url=base_url,
        receiver_enabled=receiver_enabled,
        rotate_requested=annotations.get(crd.ANNOTATION_ROTATE),
        rotate_revocation=rotate_revocation,
        exposed_url=exposed_url,
        receiver_parsed=_receiver(spec),
    )


def _receiver(spec: dict[str, Any]) -> ReceiverSpec | str:
    try:
        return receiver_spec(spec)
    except CrdReceiverError as error:
        return str(error)


def _exposed_url(spec: dict[str, Any]) -> str | None:
    raw = _field(spec, "receiver.expose", dict)
    if raw is None:
        return None
    try:
        return ExposeSpec.model_validate(raw).url
    except ValidationError as error:
        raise InvalidSpecError(explain_error("spec.receiver.expose", error)) from None


# --- Can Google's Gemini API deliver to the URL? -----------------------------------------

GOOGLE_API_DOMAIN = "googleapis.com"
# Names that resolve only inside a cluster or a host (RFC 6762 `.local`, RFC 8375
# `.home.arpa`, Kubernetes' `.svc`, and the `.internal` names clouds give private hosts).
_INTERNAL_SUFFIXES = (".svc", ".local", ".internal", ".home.arpa", ".localhost")


def talks_to_google(api_base_url: str | None) -> bool:
    """True when the resource manages its webhook through Google's API, not an emulator."""
    if api_base_url is None:
        return True
    host = (urlsplit(api_base_url).hostname or "").lower()
    return host == GOOGLE_API_DOMAIN or host.endswith("." + GOOGLE_API_DOMAIN)


def cluster_internal(host: str, cluster_domain: str = "cluster.local") -> bool:
    """True when `host` cannot be reached from the internet (name or address)."""
    host = host.lower().rstrip(".")
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    if "." not in host or host == "localhost":
        return True
    suffixes = (*_INTERNAL_SUFFIXES, "." + cluster_domain.lower(), ".svc." + cluster_domain)
    return host.endswith(suffixes)


def registration_problem(
    spec: WebhookSpec,
    *,
    default_api_base_url: str | None = None,
    cluster_domain: str = "cluster.local",
) -> str | None:
    """Why Google could never deliver to the URL this resource would register, or None.

    Emulators and proxies (`spec.apiBaseUrl` or the operator's `--api-base-url` naming a
    host other than Google's) keep their cluster-internal and loopback URLs.
    """
    if not talks_to_google(spec.api_base_url or default_api_base_url):
        return None
    url = spec.url or spec.exposed_url
    if url is None:
        return (
            "spec.receiver.expose: required for Google's Gemini API — Google cannot reach the "
            "receiver's cluster-internal Service; set spec.receiver.expose.ingress (or "
            ".httpRoute) to publish it, or spec.url to the https:// URL your own ingress "
            "serves it at"
        )
    parts = urlsplit(url)
    field = "spec.url" if spec.url else "spec.receiver.expose"
    if parts.scheme != "https":
        return f"{field}: Google's Gemini API delivers only to https:// URLs"
    if cluster_internal(parts.hostname or "", cluster_domain):
        return (
            f"{field}: {parts.hostname!r} is a cluster-internal host that Google's Gemini API "
            "cannot reach; use a public DNS name (spec.receiver.expose publishes the receiver)"
        )
    return None
