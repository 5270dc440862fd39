"""The external side of a reconciliation (Crossplane's `ExternalClient`): observe, create,
update, rotate and delete one GeminiWebhook's remote webhook through the WebhookService.

It knows neither conditions nor Events nor the signing Secret: it answers what it found
and what it did, and the reconciler reports it (`reconciler.py`) and publishes the secrets
Gemini shows (`signing_publisher.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gemini_webhook_operator import signing
from gemini_webhook_operator.diff import Desired, RemoteWebhook, changes
from gemini_webhook_operator.model import WebhookSpec, marker_uid
from gemini_webhook_operator.webhookservice import WebhookService
from gemini_webhook_operator.webhookservice_errors import NotFound, WebhookServiceError


@dataclass(frozen=True)
class Observation:
    """The remote webhook found for a resource, and how it was found."""

    remote: RemoteWebhook | None
    found_by_marker: bool = False  # not by a recorded ID: a crash lost the record
    # Others carrying our marker: several crashes before the ID was recorded (all ours).
    duplicates: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class RemoteClient:
    """One API key's WebhookService, as one resource's reconciliation uses it."""

    service: WebhookService

    async def observe(
        self, spec: WebhookSpec, recorded: tuple[str | None, ...], max_age: float
    ) -> Observation:
        """Find this resource's remote webhook: the adopted one, else by the `recorded` IDs
        (the status's, the signing Secret's), else by the marker (our UID) in its name — in
        the shared listing of the remote webhooks if it is at most `max_age` seconds old."""
        service = self.service
        if spec.adopt_id:
            found = await service.find(spec.adopt_id, max_age)
            if found is None:
                try:  # adopted webhooks may be newer than the shared inventory
                    found = await service.get(spec.adopt_id)
                except NotFound:
                    return Observation(None)
            return Observation(found)
        for candidate in recorded:
            if candidate:
                found = await service.find(candidate, max_age)
                if found is not None:
                    return Observation(found)
        mine = await service.find_by_marker(lambda w: marker_uid(w.name) == spec.uid, max_age)
        if not mine:
            return Observation(None)
        # A crash between creating a webhook and recording it leaves it findable by our
        # marker; more than one means several such crashes: the first is the one to keep.
        mine.sort(key=lambda w: w.id)
        keep, *extra = mine
        return Observation(keep, True, tuple(d.id for d in extra))

    async def create(self, spec: WebhookSpec, url: str) -> tuple[RemoteWebhook, str | None]:
        """Create the webhook; the signing secret Gemini shows this once (None: none)."""
        return await self.service.create(spec.remote_name, url, spec.events)

    async def disable(self, remote: RemoteWebhook) -> RemoteWebhook:
        return await self.service.update(remote.id, {"state": "disabled"})

    async def update(
        self, spec: WebhookSpec, url: str, remote: RemoteWebhook
    ) -> tuple[RemoteWebhook, dict[str, Any]]:
        """Update only the fields that differ from the spec; no call when none does."""
        fields = changes(Desired(spec.remote_name, url, spec.events, spec.remote_state), remote)
        if not fields:
            return remote, fields
        return await self.service.update(remote.id, fields), fields

    async def rotate(self, remote: RemoteWebhook, *, immediate: bool) -> str:
        """A new signing secret (shown this once); the previous one ends now or after grace."""
        return await self.service.rotate(remote.id, signing.revocation_behavior(immediate))

    async def refresh(self, remote: RemoteWebhook) -> RemoteWebhook | None:
        """The webhook as it is now; None (and the shared listing dropped) if unreadable."""
        try:
            return await self.service.get(remote.id)
        except WebhookServiceError:
            self.service.invalidate()
            return None

    async def delete_one(self, webhook_id: str) -> None:
        await self.service.delete(webhook_id)

    async def delete(self, uid: str, known: str | None, max_age: float) -> None:
        """Delete the `known` webhook and every one carrying this resource's marker."""
        ids = {known} if known else set()
        mine = await self.service.find_by_marker(lambda w: marker_uid(w.name) == uid, max_age)
        ids.update(w.id for w in mine)
        for webhook in sorted(i for i in ids if i):
            await self.delete_one(webhook)
