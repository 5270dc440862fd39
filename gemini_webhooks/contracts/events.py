"""The Gemini webhook event catalogue — the one place that lists event types.

Decision (see DIGEST.md): a *static* webhook may subscribe only to the seven types that the
WebhookService's own enum lists (the `google-genai` SDK's `WebhookSubscribedEvent`).
The two `*.cancelled` types are in the guide's catalogue but not in that enum: Gemini sends
them to *dynamic* (request-level) webhooks, which receive every event of their job.
The guide's sample spelling `batch.completed` is in neither list; it is rejected with a
message that names `batch.succeeded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventType(StrEnum):
    BATCH_SUCCEEDED = "batch.succeeded"
    BATCH_CANCELLED = "batch.cancelled"
    BATCH_EXPIRED = "batch.expired"
    BATCH_FAILED = "batch.failed"
    INTERACTION_REQUIRES_ACTION = "interaction.requires_action"
    INTERACTION_COMPLETED = "interaction.completed"
    INTERACTION_FAILED = "interaction.failed"
    INTERACTION_CANCELLED = "interaction.cancelled"
    VIDEO_GENERATED = "video.generated"


@dataclass(frozen=True)
class EventSpec:
    type: EventType
    when: str
    data_fields: tuple[str, ...]
    subscribable: bool


CATALOGUE: dict[EventType, EventSpec] = {
    spec.type: spec
    for spec in (
        EventSpec(EventType.BATCH_SUCCEEDED, "batch finished", ("id", "output_file_uri"), True),
        EventSpec(EventType.BATCH_CANCELLED, "user cancelled the batch", ("id",), False),
        EventSpec(EventType.BATCH_EXPIRED, "batch not processed in time", ("id",), True),
        EventSpec(
            EventType.BATCH_FAILED,
            "system or validation error",
            ("id", "error_code", "error_message"),
            True,
        ),
        EventSpec(
            EventType.INTERACTION_REQUIRES_ACTION, "function call needs the user", ("id",), True
        ),
        EventSpec(
            EventType.INTERACTION_COMPLETED, "long-running interaction succeeded", ("id",), True
        ),
        EventSpec(
            EventType.INTERACTION_FAILED,
            "interaction failed",
            ("id", "error_code", "error_message"),
            True,
        ),
        EventSpec(EventType.INTERACTION_CANCELLED, "interaction was cancelled", ("id",), False),
        EventSpec(
            EventType.VIDEO_GENERATED, "video generation finished", ("file_id", "video_uri"), True
        ),
    )
}

ALL_EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)
SUBSCRIBABLE_EVENT_TYPES: tuple[str, ...] = tuple(
    spec.type.value for spec in CATALOGUE.values() if spec.subscribable
)

# Spellings seen in the wild (the guide's sample) mapped to what the API means.
KNOWN_MISSPELLINGS: dict[str, str] = {"batch.completed": "batch.succeeded"}


def subscription_error(event_type: str) -> str | None:
    """Why `event_type` cannot be subscribed to by a static webhook, or None if it can."""
    if event_type in SUBSCRIBABLE_EVENT_TYPES:
        return None
    if event_type in KNOWN_MISSPELLINGS:
        return (
            f"unknown event type {event_type!r}: did you mean {KNOWN_MISSPELLINGS[event_type]!r}?"
        )
    if event_type in ALL_EVENT_TYPES:
        return (
            f"event type {event_type!r} is delivered only to dynamic (request-level) webhooks; "
            f"a static webhook can subscribe to: {', '.join(SUBSCRIBABLE_EVENT_TYPES)}"
        )
    return (
        f"unknown event type {event_type!r}; "
        f"a static webhook can subscribe to: {', '.join(SUBSCRIBABLE_EVENT_TYPES)}"
    )
