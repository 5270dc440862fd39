"""Observed remote webhook vs. desired spec: which fields differ (the `update_mask`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gemini_webhooks.contracts.crd import REMOTE_DISABLED_BY_FAILURES

DISABLED_BY_FAILURES = REMOTE_DISABLED_BY_FAILURES


@dataclass(frozen=True)
class RemoteWebhook:
    """A remote webhook as observed (never carries secret material)."""

    id: str
    name: str | None
    uri: str | None
    subscribed_events: tuple[str, ...]
    state: str | None
    truncated_secrets: tuple[str, ...] = ()
    secret_expiries: tuple[datetime | None, ...] = ()


@dataclass(frozen=True)
class Desired:
    name: str
    uri: str
    subscribed_events: tuple[str, ...]
    state: str  # "enabled" | "disabled"


def changes(desired: Desired, observed: RemoteWebhook) -> dict[str, Any]:
    """The fields to send in an update, by remote field name; empty when in sync.

    A webhook Gemini disabled after failed deliveries is not re-enabled behind the user's
    back: only an explicit `Disabled` is sent, and re-enabling takes `Disabled` then
    `Enabled` (the operator then sees `disabled` and enables it).
    """
    fields: dict[str, Any] = {}
    if observed.name != desired.name:
        fields["name"] = desired.name
    if observed.uri != desired.uri:
        fields["uri"] = desired.uri
    if set(observed.subscribed_events) != set(desired.subscribed_events):
        fields["subscribed_events"] = list(desired.subscribed_events)
    if observed.state != desired.state and not (
        observed.state == DISABLED_BY_FAILURES and desired.state == "enabled"
    ):
        fields["state"] = desired.state
    return fields
