"""The OpenAPI v3 *structural* schema of a GeminiWebhook's `spec`, and of its `receiver` and
`healthCheck` sections, generated from their one definition, the typed view
(`contracts.crd_spec`, `contracts.crd_receiver`): each field's description, default, bounds
and pattern are stated there once. The CRD (`contracts.crd`) embeds it; the operator, which
only reads specs, never builds it."""

from __future__ import annotations

import copy
from typing import Any

from gemini_webhooks.contracts.crd_spec import GeminiWebhookSpec
from gemini_webhooks.contracts.openapi_schema import structural

SPEC_SCHEMA: dict[str, Any] = structural(
    GeminiWebhookSpec.model_json_schema(by_alias=True, mode="validation")
)
RECEIVER_SCHEMA: dict[str, Any] = SPEC_SCHEMA["properties"]["receiver"]
HEALTH_CHECK_SCHEMA: dict[str, Any] = SPEC_SCHEMA["properties"]["healthCheck"]


def spec_schema() -> dict[str, Any]:
    """`spec` for the CRD (`contracts.crd` embeds it)."""
    return copy.deepcopy(SPEC_SCHEMA)
