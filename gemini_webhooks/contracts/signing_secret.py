"""The Kubernetes Secret that holds a webhook's signing secrets — written by the operator,
read by the receiver and by any consumer that wants to verify deliveries itself.

Data keys (all values UTF-8, base64-encoded by Kubernetes as usual):
- `signing-secrets.json`: `{"version": 1, "webhookId": "...", "secrets": [...]}`, newest
  first; each secret is `{"secret": "whsec_...", "createdAt": RFC 3339,
  "expireTime": RFC 3339 or null}`. `expireTime` is set on a previous secret during a
  rotation's grace period; the operator removes it once that time has passed.
- `current`: the newest secret alone, for consumers that take a single value
  (e.g. `env: WEBHOOK_SECRET` from `secretKeyRef`).

Labels identify the Secret's owner; the Secret is also owned (ownerReference) by its
GeminiWebhook, so deleting the resource collects it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gemini_webhooks.contracts.times import parse_rfc3339, rfc3339

FORMAT_VERSION = 1
KEY_SECRETS = "signing-secrets.json"
KEY_CURRENT = "current"

API_GROUP = "gemini.webhooks.dev"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "gemini-webhook-operator"
LABEL_WEBHOOK = f"{API_GROUP}/webhook"
LABEL_COMPONENT = f"{API_GROUP}/component"
COMPONENT_SIGNING_SECRET = "signing-secret"

SECRET_PREFIX = "whsec_"


class SecretFormatError(ValueError):
    """The Secret does not hold signing secrets in the documented format.

    Messages never include secret material.
    """


@dataclass(frozen=True)
class SigningSecret:
    secret: str = field(repr=False)
    created_at: datetime
    expire_time: datetime | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.expire_time is None or now < self.expire_time

    @property
    def truncated(self) -> str:
        return truncate_secret(self.secret)


@dataclass(frozen=True)
class SigningSecrets:
    webhook_id: str
    secrets: tuple[SigningSecret, ...]  # newest first

    @property
    def current(self) -> SigningSecret | None:
        return self.secrets[0] if self.secrets else None

    def valid(self, now: datetime) -> tuple[SigningSecret, ...]:
        return tuple(s for s in self.secrets if s.valid_at(now))


def truncate_secret(secret: str) -> str:
    """A short, non-usable fingerprint of a secret: `whsec_abcd...wxyz`.

    The receiver reports the secret it verified with this way. The remote's own
    `signing_secrets[].truncated_secret` may look different; read it with `remote_identity`.
    """
    body = secret.removeprefix(SECRET_PREFIX)
    return f"{SECRET_PREFIX}{body[:4]}...{body[-4:]}"


# Fewer visible characters than this are no evidence either way: too many secrets share them.
MIN_VISIBLE = 8

Identity = Literal["known", "unknown", "unverifiable"]
KNOWN: Identity = "known"
UNKNOWN: Identity = "unknown"
UNVERIFIABLE: Identity = "unverifiable"


def visible_parts(truncated: str) -> tuple[str, str] | None:
    """The visible head and tail of a truncated secret, or None when the form says nothing
    about which secret it denotes.

    Readable forms: `whsec_<head>...<tail>`, `whsec_<head>…<tail>` and `*`-masked
    `whsec_<head>***<tail>`, with at least `MIN_VISIBLE` characters after `whsec_`. Anything
    else (empty, fully masked, too short, another prefix, no mask) is unreadable.
    """
    for mark in ("...", "\u2026"):
        if mark in truncated:
            head, _, tail = truncated.partition(mark)
            break
    else:
        if "*" not in truncated:
            return None
        head, tail = truncated.split("*", 1)[0], truncated.rsplit("*", 1)[-1]
    if not head.startswith(SECRET_PREFIX) or "*" in head + tail:
        return None
    if len(head) - len(SECRET_PREFIX) + len(tail) < MIN_VISIBLE:
        return None
    return head, tail


def matches_truncated(secret: str, truncated: str) -> bool:
    """Does `truncated` (as a remote reports it) readably denote `secret`?"""
    parts = visible_parts(truncated)
    if parts is None:
        return False
    head, tail = parts
    return secret.startswith(head) and secret.endswith(tail)


def remote_identity(secret: str, reported: Sequence[str]) -> Identity:
    """What the remote's `signing_secrets[].truncated_secret` list says about `secret`.

    `known`: an entry denotes it. `unknown`: the list is non-empty, every entry is readable
    and none denotes it — the only answer that proves the remote no longer signs with it.
    `unverifiable`: no entry denotes it and the list is empty or has unreadable entries.
    """
    if any(matches_truncated(secret, truncated) for truncated in reported):
        return KNOWN
    if reported and all(visible_parts(truncated) is not None for truncated in reported):
        return UNKNOWN
    return UNVERIFIABLE


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise SecretFormatError(f"{what}: expected an RFC 3339 string")
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise SecretFormatError(f"{what}: not an RFC 3339 time with its zone")
    return parsed


def encode(secrets: SigningSecrets) -> dict[str, str]:
    """The Secret's `stringData` for these secrets."""
    document = {
        "version": FORMAT_VERSION,
        "webhookId": secrets.webhook_id,
        "secrets": [
            {
                "secret": s.secret,
                "createdAt": rfc3339(s.created_at, "auto"),
                "expireTime": rfc3339(s.expire_time, "auto") if s.expire_time else None,
            }
            for s in secrets.secrets
        ],
    }
    data = {KEY_SECRETS: json.dumps(document, separators=(",", ":"))}
    if secrets.current is not None:
        data[KEY_CURRENT] = secrets.current.secret
    return data


def encode_data(secrets: SigningSecrets) -> dict[str, str]:
    """The Secret's `data` (base64) for these secrets."""
    return {k: base64.b64encode(v.encode()).decode() for k, v in encode(secrets).items()}


def decode(string_data: dict[str, str]) -> SigningSecrets:
    """Parse a Secret's decoded data. Raises SecretFormatError, never leaking material."""
    raw = string_data.get(KEY_SECRETS)
    if raw is None:
        raise SecretFormatError(f"missing key {KEY_SECRETS!r}")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):  # the C decoder's recursion is bounded and clean
        raise SecretFormatError(f"{KEY_SECRETS}: not valid JSON") from None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise SecretFormatError(f"{KEY_SECRETS}: expected an object with version 1")
    webhook_id = document.get("webhookId")
    items = document.get("secrets")
    if not isinstance(webhook_id, str) or not isinstance(items, list):
        raise SecretFormatError(f"{KEY_SECRETS}: needs 'webhookId' and a 'secrets' list")
    parsed: list[SigningSecret] = []
    for index, item in enumerate(items):
        where = f"{KEY_SECRETS}: secrets[{index}]"
        if not isinstance(item, dict):
            raise SecretFormatError(f"{where}: expected an object")
        secret = item.get("secret")
        if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
            raise SecretFormatError(f"{where}.secret: expected a string starting with whsec_")
        expire = item.get("expireTime")
        parsed.append(
            SigningSecret(
                secret=secret,
                created_at=_parse_time(item.get("createdAt"), f"{where}.createdAt"),
                expire_time=None if expire is None else _parse_time(expire, f"{where}.expireTime"),
            )
        )
    return SigningSecrets(webhook_id=webhook_id, secrets=tuple(parsed))


def decode_data(data: dict[str, str]) -> SigningSecrets:
    """Parse a Secret's `data` (base64 values)."""
    try:
        string_data = {k: base64.b64decode(v, validate=True).decode() for k, v in data.items()}
    except (ValueError, UnicodeDecodeError):
        raise SecretFormatError("Secret data is not valid base64 UTF-8") from None
    return decode(string_data)
