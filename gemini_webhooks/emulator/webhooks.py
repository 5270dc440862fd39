"""WebhookService state: the registered webhooks, their secrets and their pages.

Every mutation validates first (in `decisions`) and then changes state in one step, so a
refused request never leaves a half-made webhook.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from gemini_webhooks.contracts.signing_secret import SECRET_PREFIX
from gemini_webhooks.contracts.times import rfc3339

from . import decisions
from .errors import invalid_argument, not_found


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


ReportingMode = Literal["truncated", "masked", "empty", "absent"]
REPORTING_MODES: tuple[str, ...] = get_args(ReportingMode)


@dataclass(frozen=True)
class SecretReporting:
    """How the API shows `signing_secrets`: its own format, not the operator's.

    `truncated`: `whsec_` + the first `head` and last `tail` characters of the secret's
    body around `...` (4 and 4 by default); `masked`: `whsec_********` for every entry;
    `empty`: an empty list; `absent`: no `signing_secrets` field at all. The real API's
    choice is not documented: these let tests show the operator copes with each.
    """

    mode: ReportingMode = "truncated"
    head: int = 4
    tail: int = 4

    def __post_init__(self) -> None:
        if self.mode not in REPORTING_MODES:
            raise ValueError(f"mode must be one of {', '.join(REPORTING_MODES)}")
        if not (0 <= self.head <= 16 and 0 <= self.tail <= 16):
            raise ValueError("head and tail must be between 0 and 16")

    def show(self, secret: str) -> str:
        if self.mode == "masked":
            return SECRET_PREFIX + "*" * 8
        body = secret.removeprefix(SECRET_PREFIX)
        tail = body[len(body) - self.tail :] if self.tail else ""
        return f"{SECRET_PREFIX}{body[: self.head]}...{tail}"

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "head": self.head, "tail": self.tail}


@dataclass
class Webhook:
    id: str
    seq: int
    name: str
    uri: str
    subscribed_events: list[str]
    state: decisions.WebhookState
    create_time: datetime
    update_time: datetime
    secrets: tuple[decisions.SecretEntry, ...] = field(repr=False)
    failing_since: datetime | None = None

    def valid_secrets(self, now: datetime) -> tuple[decisions.SecretEntry, ...]:
        return decisions.valid_secrets(self.secrets, now)

    def view(self) -> decisions.WebhookView:
        return decisions.WebhookView(self.id, self.state, tuple(self.subscribed_events))

    def resource(
        self, now: datetime, reporting: SecretReporting = SecretReporting()
    ) -> dict[str, Any]:
        """The Webhook as the API shows it (never a full secret)."""
        signing: list[dict[str, Any]] = []
        for entry in self.valid_secrets(now) if reporting.mode != "empty" else ():
            item: dict[str, Any] = {"truncated_secret": reporting.show(entry.secret)}
            if entry.expire_time is not None:
                item["expire_time"] = rfc3339(entry.expire_time, "microseconds")
            signing.append(item)
        shown: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "uri": self.uri,
            "subscribed_events": list(self.subscribed_events),
            "state": self.state,
            "create_time": rfc3339(self.create_time, "microseconds"),
            "update_time": rfc3339(self.update_time, "microseconds"),
        }
        if reporting.mode != "absent":
            shown["signing_secrets"] = signing
        return shown


class PageTokens:
    """Opaque page tokens: the creation sequence number of the last webhook shown, MACed so a
    client cannot forge or mangle one. Listing by sequence keeps pages stable while
    webhooks are added (they appear at the end) or removed (nothing shifts)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def encode(self, after_seq: int) -> str:
        payload = str(after_seq).encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(payload + b"." + mac).decode().rstrip("=")

    def decode(self, token: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload, _, mac = raw.partition(b".")
            expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:12]
            if not hmac.compare_digest(mac, expected):
                raise ValueError
            return int(payload.decode())
        except (ValueError, UnicodeDecodeError):
            raise invalid_argument("page_token is not valid") from None


class WebhookStore:
    def __init__(self, reporting: SecretReporting | None = None) -> None:
        self.default_reporting = reporting or SecretReporting()
        self._webhooks: dict[str, Webhook] = {}
        self._seq = itertools.count(1)
        self.tokens = PageTokens()
        self.reporting = self.default_reporting

    def show(self, webhook: Webhook, now: datetime) -> dict[str, Any]:
        return webhook.resource(now, self.reporting)

    def __iter__(self) -> Iterator[Webhook]:
        return iter(list(self._webhooks.values()))

    def clear(self) -> None:
        self._webhooks.clear()
        self.reporting = self.default_reporting

    def create(self, request: decisions.NewWebhook, now: datetime) -> tuple[Webhook, str]:
        secret = new_signing_secret()
        webhook = Webhook(
            id=secrets.token_hex(8),
            seq=next(self._seq),
            name=request.name,
            uri=request.uri,
            subscribed_events=request.subscribed_events,
            state="enabled",
            create_time=now,
            update_time=now,
            secrets=(decisions.SecretEntry(secret=secret, created_at=now),),
        )
        self._webhooks[webhook.id] = webhook
        return webhook, secret

    def get(self, webhook_id: str) -> Webhook:
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            raise not_found(f"webhook {webhook_id!r} not found")
        return webhook

    def find(self, webhook_id: str) -> Webhook | None:
        return self._webhooks.get(webhook_id)

    def delete(self, webhook_id: str) -> None:
        self.get(webhook_id)
        del self._webhooks[webhook_id]

    def update(self, webhook_id: str, changes: dict[str, Any], now: datetime) -> Webhook:
        webhook = self.get(webhook_id)
        changed = {k: v for k, v in changes.items() if getattr(webhook, k) != v}
        for key, value in changed.items():
            setattr(webhook, key, value)
        if changed.get("state") == "enabled":
            webhook.failing_since = None
        if changed:
            webhook.update_time = now
        return webhook

    def rotate(
        self,
        webhook_id: str,
        behavior: decisions.RevocationBehavior,
        now: datetime,
        grace: timedelta,
    ) -> str:
        webhook = self.get(webhook_id)
        secret = new_signing_secret()
        webhook.secrets = decisions.rotate_secrets(webhook.secrets, secret, behavior, now, grace)
        webhook.update_time = now
        return secret

    def page(self, page_size: int, page_token: str | None) -> tuple[list[Webhook], str | None]:
        after = self.tokens.decode(page_token) if page_token else 0
        ordered = sorted((w for w in self._webhooks.values() if w.seq > after), key=lambda w: w.seq)
        items = ordered[:page_size]
        more = len(ordered) > page_size
        return items, (self.tokens.encode(items[-1].seq) if more and items else None)
