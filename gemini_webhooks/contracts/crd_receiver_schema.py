"""The OpenAPI v3 *structural* schemas of a GeminiWebhook's `spec.receiver` and
`spec.healthCheck`, generated from their one definition, the typed view
`contracts.crd_receiver` (each field's description, default, bounds and pattern are stated
there once). The CRD (`contracts.crd`) embeds them."""

from __future__ import annotations

import copy
from typing import Any

from gemini_webhooks.contracts.crd_receiver import HealthCheckSpec, ReceiverSpec
from gemini_webhooks.contracts.openapi_schema import structural

RECEIVER_SCHEMA: dict[str, Any] = structural(
    ReceiverSpec.model_json_schema(by_alias=True, mode="validation")
)
HEALTH_CHECK_SCHEMA: dict[str, Any] = structural(
    HealthCheckSpec.model_json_schema(by_alias=True, mode="validation")
)


def receiver_schema() -> dict[str, Any]:
    """`spec.receiver` for the CRD (`contracts.crd` embeds it)."""
    return copy.deepcopy(RECEIVER_SCHEMA)


def health_check_schema() -> dict[str, Any]:
    """`spec.healthCheck` for the CRD (`contracts.crd` embeds it)."""
    return copy.deepcopy(HEALTH_CHECK_SCHEMA)
