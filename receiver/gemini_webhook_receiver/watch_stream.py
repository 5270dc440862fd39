"""What a Kubernetes list or watch of one Secret says: its data and resourceVersion, read
with the bounded event reader shared with the operator (`gemini_webhooks.watch_events`).
Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gemini_webhooks import watch_events
from gemini_webhooks.watch_events import (
    MAX_EVENT_BYTES,
    ApiError,
    LineSplitter,
    MalformedEvent,
    OversizedEvent,
    ResourceVersionGone,
    WatchStreamError,
    mapping,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "ApiError",
    "Data",
    "LineSplitter",
    "MalformedEvent",
    "OversizedEvent",
    "ResourceVersionGone",
    "WatchEvent",
    "WatchStreamError",
    "parse_event",
    "parse_list",
]

Data = dict[str, str]  # a Secret's `data`: base64-encoded values


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # ADDED, MODIFIED, DELETED or BOOKMARK
    data: Data | None  # the Secret's data; None when it was deleted (and for a bookmark)
    resource_version: str | None


def _data(secret: dict[str, Any]) -> Data:
    data = mapping(secret.get("data"), "the Secret's data")
    if not all(isinstance(v, str) for v in data.values()):
        raise MalformedEvent("the Secret's data holds a value that is not a string")
    return data


def parse_event(line: bytes) -> WatchEvent:
    """One line of the Secret's watch stream; raises ResourceVersionGone or ApiError for the
    server's ERROR events, MalformedEvent for anything else we do not know."""
    event = watch_events.parse_event(line)
    if event.kind in ("ADDED", "MODIFIED") and event.object is not None:
        return WatchEvent(event.kind, _data(event.object), event.resource_version)
    return WatchEvent(event.kind, None, event.resource_version)


def parse_list(body: bytes) -> tuple[Data | None, str]:
    """A list of the one Secret: its data (None when absent) and the list's resourceVersion."""
    page = watch_events.parse_list(body)
    if not page.items:
        return None, page.resource_version
    return _data(page.items[0]), page.resource_version
