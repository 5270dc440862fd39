"""`receiver_resources`' renderers and the health checker called as the operator calls them:
with the resource's typed spec (the operator parses it once per reconcile or health tick
into a `WebhookSpec`); an invalid `spec.receiver` refused as the reconciler refuses it."""

from __future__ import annotations

from typing import Any

from gemini_webhook_operator import receiver_resources
from gemini_webhook_operator.model import WebhookSpec, parse
from gemini_webhook_operator.receiver_resources import ReceiverRenderError, ReceiverSettings
from gemini_webhooks.contracts import receiver_config as rc
from gemini_webhooks.contracts.crd_receiver import CrdReceiverError, ReceiverSpec, receiver_spec


def typed(resource: dict[str, Any]) -> ReceiverSpec:
    try:
        return receiver_spec(resource.get("spec") or {})
    except CrdReceiverError as error:
        raise ReceiverRenderError(str(error)) from None


def render(resource: dict[str, Any], settings: ReceiverSettings) -> list[dict[str, Any]]:
    return receiver_resources.render(resource, typed(resource), settings)


def receiver_config(resource: dict[str, Any], settings: ReceiverSettings) -> rc.ReceiverConfig:
    return receiver_resources.receiver_config(resource, typed(resource), settings)


def public_url(resource: dict[str, Any], **kwargs: Any) -> str:
    return receiver_resources.public_url(resource, typed(resource), **kwargs)


# What `model.parse` needs beyond the health check and the receiver.
PARSEABLE = {"events": ["batch.succeeded"], "apiKeySecretRef": {"name": "gemini-api-key"}}


def parsed(resource: dict[str, Any]) -> tuple[dict[str, Any], WebhookSpec]:
    """The resource and the spec the operator parses once from it (`tick`'s arguments)."""
    return resource, parse(resource)
