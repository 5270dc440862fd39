"""Batch jobs as the Gemini API's `batches` surface shows them (long-running operations
named `batches/{id}`), each finishing by itself after the configured run time."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gemini_webhooks.contracts.times import rfc3339

from .decisions import validate_uri
from .errors import failed_precondition, invalid_argument, not_found

Outcome = Literal["succeeded", "failed", "cancelled", "expired"]
OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "cancelled", "expired")
_STATE = {
    "pending": "BATCH_STATE_PENDING",
    "running": "BATCH_STATE_RUNNING",
    "succeeded": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "cancelled": "BATCH_STATE_CANCELLED",
    "expired": "BATCH_STATE_EXPIRED",
}
MAX_WEBHOOK_URIS = 10
MAX_METADATA_BYTES = 16 * 1024


@dataclass(frozen=True)
class WebhookConfig:
    uris: tuple[str, ...]
    user_metadata: dict[str, Any] | None


def parse_webhook_config(value: Any) -> WebhookConfig | None:
    """A request-level webhook config (`uris` + optional `user_metadata`), validated."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_argument("webhook_config must be an object")
    unknown = set(value) - {"uris", "user_metadata", "userMetadata"}
    if unknown:
        raise invalid_argument(f"webhook_config has unknown field {sorted(unknown)[0]!r}")
    uris = value.get("uris")
    if not isinstance(uris, list) or not uris:
        raise invalid_argument("webhook_config.uris must be a non-empty list of URIs")
    if len(uris) > MAX_WEBHOOK_URIS:
        raise invalid_argument(f"webhook_config.uris allows at most {MAX_WEBHOOK_URIS} URIs")
    checked = tuple(validate_uri(u, "webhook_config.uris[]") for u in uris)
    metadata = value.get("user_metadata", value.get("userMetadata"))
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise invalid_argument("webhook_config.user_metadata must be an object")
        if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise invalid_argument("webhook_config.user_metadata is too large")
    return WebhookConfig(uris=checked, user_metadata=metadata)


@dataclass(frozen=True)
class NewBatch:
    model: str
    display_name: str
    source: dict[str, Any]
    webhook_config: WebhookConfig | None


def parse_create(model: str, body: Any) -> NewBatch:
    if not isinstance(body, dict) or not isinstance(body.get("batch"), dict):
        raise invalid_argument("request body must be an object with a 'batch' object")
    batch = body["batch"]
    unknown = set(batch) - {"inputConfig", "displayName", "webhookConfig", "model", "priority"}
    if unknown:
        raise invalid_argument(f"batch has unknown field {sorted(unknown)[0]!r}")
    source = batch.get("inputConfig")
    if (
        not isinstance(source, dict)
        or len([k for k in ("fileName", "requests") if source.get(k) is not None]) != 1
    ):
        raise invalid_argument("batch.inputConfig needs exactly one of fileName or requests")
    name = batch.get("displayName", "")
    if not isinstance(name, str):
        raise invalid_argument("batch.displayName must be a string")
    if not model or "/" in model.strip("/"):
        raise invalid_argument("model name is not valid")
    return NewBatch(
        model=f"models/{model}",
        display_name=name,
        source=source,
        webhook_config=parse_webhook_config(batch.get("webhookConfig")),
    )


@dataclass
class Batch:
    id: str
    seq: int
    model: str
    display_name: str
    webhook_config: WebhookConfig | None
    create_time: datetime
    update_time: datetime
    state: str = "pending"
    end_time: datetime | None = None
    output_file: str | None = None
    error: dict[str, Any] | None = None
    planned: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"batches/{self.id}"

    @property
    def done(self) -> bool:
        return self.state in OUTCOMES

    def operation(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "name": self.name,
            "model": self.model,
            "displayName": self.display_name,
            "state": _STATE[self.state],
            "createTime": rfc3339(self.create_time, "microseconds"),
            "updateTime": rfc3339(self.update_time, "microseconds"),
        }
        if self.end_time is not None:
            metadata["endTime"] = rfc3339(self.end_time, "microseconds")
        if self.output_file is not None:
            metadata["output"] = {"responsesFile": self.output_file}
        operation: dict[str, Any] = {"name": self.name, "metadata": metadata, "done": self.done}
        if self.error is not None:
            operation["error"] = self.error
        return operation


class BatchStore:
    def __init__(self) -> None:
        self._batches: dict[str, Batch] = {}
        self._seq = 0

    def clear(self) -> None:
        self._batches.clear()

    def create(self, request: NewBatch, now: datetime) -> Batch:
        self._seq += 1
        batch = Batch(
            id=secrets.token_hex(8),
            seq=self._seq,
            model=request.model,
            display_name=request.display_name,
            webhook_config=request.webhook_config,
            create_time=now,
            update_time=now,
        )
        self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id.removeprefix("batches/"))
        if batch is None:
            raise not_found(f"batch {batch_id!r} not found")
        return batch

    def delete(self, batch_id: str) -> None:
        batch = self.get(batch_id)
        del self._batches[batch.id]

    def all(self) -> list[Batch]:
        return sorted(self._batches.values(), key=lambda b: b.seq)

    @staticmethod
    def finish(
        batch: Batch,
        outcome: Outcome,
        now: datetime,
        *,
        error_code: int | str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        """Move a batch to its final state; the event `data` that goes with it."""
        if batch.done:
            raise failed_precondition(f"batch {batch.name} is already {batch.state}")
        batch.state = outcome
        batch.end_time = now
        batch.update_time = now
        data: dict[str, Any] = {"id": batch.name}
        if outcome == "succeeded":
            batch.output_file = f"files/batch-{batch.id}-results"
            data["output_file_uri"] = batch.output_file
        elif outcome == "failed":
            code = error_code if error_code is not None else 13
            message = error_message or "batch failed"
            batch.error = {"code": code, "message": message}
            data.update(error_code=code, error_message=message)
        return data
