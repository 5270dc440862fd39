from __future__ import annotations

from gemini_webhooks.contracts import events


def test_catalogue_has_all_nine_event_types_from_the_guide() -> None:
    assert len(events.ALL_EVENT_TYPES) == 9


def test_static_webhooks_subscribe_to_the_seven_types_the_sdk_enumerates() -> None:
    from google.genai import webhooks as sdk

    sdk_enum = set(sdk.WebhookSubscribedEvent.__args__[0].__args__)  # type: ignore[attr-defined]
    assert set(events.SUBSCRIBABLE_EVENT_TYPES) == sdk_enum


def test_guide_spelling_batch_completed_is_rejected_with_a_suggestion() -> None:
    message = events.subscription_error("batch.completed")
    assert message is not None and "did you mean 'batch.succeeded'" in message


def test_cancelled_events_are_rejected_for_static_webhooks_with_the_reason() -> None:
    message = events.subscription_error("batch.cancelled")
    assert message is not None and "dynamic" in message


def test_unknown_event_type_names_the_allowed_ones() -> None:
    message = events.subscription_error("nope.nothing")
    assert message is not None and "video.generated" in message
