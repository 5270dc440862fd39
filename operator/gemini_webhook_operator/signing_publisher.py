"""Publishes a webhook's signing secrets to its Secret (Crossplane's connection-details
publisher): the one Gemini showed at creation or rotation goes there before anything else
happens, grace ends are dated as Gemini reports them, ended secrets are dropped.

Transitions of the set are `signing`'s (pure); the writes are `signing_store`'s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gemini_webhook_operator import signing
from gemini_webhook_operator.diff import RemoteWebhook
from gemini_webhook_operator.kube import Kube
from gemini_webhook_operator.signing_store import HeldSecrets, write_signing_secret
from gemini_webhooks.contracts.signing_secret import SigningSecrets


@dataclass(frozen=True)
class SecretPublisher:
    """The signing Secret of one resource (`body`), named `name`."""

    kube: Kube
    body: Mapping[str, Any]
    name: str

    async def _write(self, secrets: SigningSecrets, base: HeldSecrets) -> HeldSecrets:
        return await write_signing_secret(self.kube, self.body, self.name, secrets, base)

    async def created(
        self, remote_id: str, secret: str, now: datetime, held: HeldSecrets
    ) -> SigningSecrets:
        """The secret Gemini showed at creation, as the set's only one."""
        fresh = signing.fresh(remote_id, secret, now)
        return (await self._write(fresh, held)).secrets or fresh

    async def rotated(
        self,
        held: HeldSecrets,
        remote: RemoteWebhook,
        new_secret: str,
        now: datetime,
        *,
        immediate: bool,
    ) -> tuple[SigningSecrets, HeldSecrets]:
        """The secret Gemini showed at rotation, current; the previous ones in grace (or
        gone, `immediate`). Returns the set and the Secret as written."""
        rotated = signing.rotated(
            held.secrets,
            remote.id,
            new_secret,
            now,
            immediate=immediate,
            remote_truncated=remote.truncated_secrets,
        )
        written = await self._write(rotated, held)
        return written.secrets or rotated, written

    async def dated(
        self, secrets: SigningSecrets, remote: RemoteWebhook, written: HeldSecrets
    ) -> SigningSecrets:
        """The grace ends Gemini reports for the previous secrets, not the ones we assumed."""
        dated = signing.with_remote_expiries(
            secrets, remote.truncated_secrets, remote.secret_expiries
        )
        if dated is None:
            return secrets
        return (await self._write(dated, written)).secrets or dated

    async def pruned(
        self, secrets: SigningSecrets, remote: RemoteWebhook, now: datetime, held: HeldSecrets
    ) -> tuple[SigningSecrets, int]:
        """Grace ends dated as Gemini reports them and ended secrets dropped, written only if
        that changes the set. Returns the set and how many secrets were dropped."""
        dated = signing.with_remote_expiries(
            secrets, remote.truncated_secrets, remote.secret_expiries
        )
        kept = signing.pruned(dated or secrets, now, remote.truncated_secrets) or dated
        if kept is None:
            return secrets, 0
        written = await self._write(kept, held)
        return written.secrets or kept, len(secrets.secrets) - len(kept.secrets)
