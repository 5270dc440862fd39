"""The OpenAPI v3 *structural* schema of a GeminiWebhook's `spec.receiver`, generated from
its one definition, the typed view `contracts.crd_receiver` (each field's description,
default, bounds and pattern are stated there once). The CRD (`contracts.crd`) embeds it."""

from __future__ import annotations

import copy
from typing import Any

from gemini_webhooks.contracts.crd_receiver import ReceiverSpec
from gemini_webhooks.contracts.openapi_schema import structural

RECEIVER_SCHEMA: dict[str, Any] = structural(
    ReceiverSpec.model_json_schema(by_alias=True, mode="validation")
)


def receiver_schema() -> dict[str, Any]:
    """`spec.receiver` for the CRD (`contracts.crd` embeds it)."""
    return copy.deepcopy(RECEIVER_SCHEMA)
