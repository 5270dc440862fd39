"""A GeminiWebhook resource read into typed values — the operator's view of the CRD.

The spec is read by its typed view (`contracts.crd_spec`), the model the CRD's schema is
generated from: it re-checks what the API server validated already, what a cluster without
schema validation could let through and what the schema cannot express (cron syntax,
"url unless a receiver provides one"), with messages that name the field. `spec.receiver`
is read apart: its errors are the receiver's (`InvalidReceiver`), not the spec's.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.crd_receiver import CrdReceiverError, ReceiverSpec, receiver_spec
from gemini_webhooks.contracts.crd_spec import GeminiWebhookSpec
from gemini_webhooks.contracts.spec_section import explain_error

# The marker in the remote webhook's `name` that lets the operator find its own webhook
# after a crash, before it could record the webhook's ID anywhere.
MARKER_PREFIX = "[k8s:"
MARKER_RE = re.compile(r"\[k8s:([0-9a-fA-F-]{8,64})\]\s*$")


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


def parse(body: dict[str, Any]) -> WebhookSpec:
    """Read a GeminiWebhook object. Raises InvalidSpecError naming the field."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise InvalidSpecError("spec: required")
    try:
        typed = GeminiWebhookSpec.model_validate(spec)
    except ValidationError as error:
        raise InvalidSpecError(explain_error("spec", error)) from None
    annotations = metadata.get("annotations") or {}
    rotate_revocation = annotations.get(crd.ANNOTATION_ROTATE_REVOCATION)
    if rotate_revocation is not None and rotate_revocation not in crd.REVOCATIONS:
        raise InvalidSpecError(
            f"annotation {crd.ANNOTATION_ROTATE_REVOCATION}: must be one of "
            f"{', '.join(crd.REVOCATIONS)}, not {rotate_revocation!r}"
        )
    name = str(metadata.get("name", ""))
    rotation = typed.rotation
    return WebhookSpec(
        namespace=str(metadata.get("namespace", "default")),
        name=name,
        uid=str(metadata.get("uid", "")),
        generation=int(metadata.get("generation") or 0),
        display_name=typed.display_name or name,
        url=typed.url,
        events=tuple(typed.events),
        enabled=typed.state == "Enabled",
        api_key_secret=typed.api_key_secret_ref.name,
        api_key_key=typed.api_key_secret_ref.key,
        signing_secret_name=typed.signing_secret_name
        or f"{name}{crd.DEFAULT_SIGNING_SECRET_SUFFIX}",
        rotation=RotationPolicy(
            interval=rotation.period,
            schedule=rotation.schedule,
            revocation=rotation.revocation,
            paused=rotation.paused,
        ),
        deletion_policy=typed.deletion_policy,
        adopt_id=typed.webhook_id,
        api_base_url=typed.api_base_url,
        receiver_enabled=typed.receiver_enabled,
        rotate_requested=annotations.get(crd.ANNOTATION_ROTATE),
        rotate_revocation=rotate_revocation,
        exposed_url=typed.exposed_url,
        receiver_parsed=_receiver(spec),
    )


def _receiver(spec: dict[str, Any]) -> ReceiverSpec | str:
    try:
        return receiver_spec(spec)
    except CrdReceiverError as error:
        return str(error)


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
