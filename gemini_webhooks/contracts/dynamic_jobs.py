"""Dynamic webhooks for our own jobs only: the job key and the MAC in `user_metadata`.

Google signs every dynamic delivery with the same key and puts no project in the token, so
a valid JWT with our URL as audience proves only that *someone* submitted a job naming our
receiver. What proves the job is ours is a MAC, under a key only we hold, of the job's
`user_metadata`, carried inside that `user_metadata` under the reserved key `JOB_MAC_KEY`:

    user_metadata = {"team": "finance", "gemini.webhooks.dev/job-mac": "v1,<base64url>"}

The MAC is HMAC-SHA256(job key, canonical JSON of `user_metadata` without `JOB_MAC_KEY`).
Canonical JSON: keys sorted, separators `,` and `:`, ASCII only (`\\uXXXX` escapes), UTF-8.
Values must be strings (routing matches only strings anyway): `sign` refuses anything
else, and `verify` treats metadata with a non-string value, a non-string key or a
canonical form over `MAX_CANONICAL_BYTES` as not ours — JSON numbers do not survive every
round trip byte for byte, and a MAC that depends on how a float was printed would reject
our own jobs at random.

The job key is per receiver: random, `KEY_BYTES` bytes, kept by the operator in a Secret
(`job_key_secret_name`, data key `SECRET_KEY`, the key as unpadded base64url text) that it
creates once and never regenerates — jobs in flight carry MACs under it. The same module
signs (the client helper) and verifies (the receiver), so the two cannot drift apart.

What the MAC does not do: bind the metadata to one job. Anyone who learns a signed
`user_metadata` (it reaches the route targets, as Gemini sends it) can reuse it in a job
of their own; treat signed metadata as you would a bearer token for those routes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

from gemini_webhooks.contracts.signing_secret import (
    API_GROUP,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_WEBHOOK,
    MANAGED_BY,
)

JOB_MAC_KEY = f"{API_GROUP}/job-mac"
MAC_VERSION = "v1"
KEY_BYTES = 32  # 256 bits
MAX_CANONICAL_BYTES = 16 * 1024

SECRET_KEY = "job-key"
COMPONENT_JOB_KEY = "dynamic-job-key"
SECRET_SUFFIX = "-dynamic-job-key"
_MAX_NAME = 253  # a Secret's name is a DNS subdomain


class JobKeyError(ValueError):
    """The job key is missing or malformed. Messages never include key material."""


class MetadataError(ValueError):
    """`user_metadata` cannot be signed (a non-string value, too large, the reserved key)."""


def job_key_secret_name(webhook_name: str) -> str:
    """The name of the Secret holding a GeminiWebhook's job key."""
    name = webhook_name + SECRET_SUFFIX
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(webhook_name.encode()).hexdigest()[:8]
    head = webhook_name[: _MAX_NAME - len(SECRET_SUFFIX) - 9].rstrip("-.")
    return f"{head}-{digest}{SECRET_SUFFIX}"


def job_key_labels(webhook_name: str) -> dict[str, str]:
    """Labels of the job-key Secret (as the signing Secret's, with its own component)."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_WEBHOOK: webhook_name[:63].rstrip("-."),
        LABEL_COMPONENT: COMPONENT_JOB_KEY,
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def generate_key() -> str:
    """A fresh job key, as the text stored in the Secret."""
    return _b64url(secrets.token_bytes(KEY_BYTES))


def decode_key(text: str) -> bytes:
    """The key bytes of a stored job key; JobKeyError if it is not one."""
    value = text.strip()
    if not value or any(c not in _B64URL for c in value):
        raise JobKeyError("the job key is not unpadded base64url text")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise JobKeyError("the job key is not unpadded base64url text") from None
    if len(raw) < KEY_BYTES:
        raise JobKeyError(f"the job key is shorter than {KEY_BYTES} bytes")
    return raw


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def canonical(user_metadata: Mapping[str, Any]) -> bytes | None:
    """The bytes the MAC covers, or None when the metadata cannot be ours (a non-string key
    or value, or larger than `MAX_CANONICAL_BYTES`). `JOB_MAC_KEY` is left out."""
    fields = {k: v for k, v in user_metadata.items() if k != JOB_MAC_KEY}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
        return None
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if len(text) > MAX_CANONICAL_BYTES:
        return None
    return text.encode("ascii")


def _mac(key: bytes, body: bytes) -> str:
    return f"{MAC_VERSION},{_b64url(hmac.new(key, body, hashlib.sha256).digest())}"


def sign(user_metadata: Mapping[str, str], key: bytes) -> dict[str, str]:
    """`user_metadata` with its MAC under `key` added; MetadataError if it cannot be signed."""
    if JOB_MAC_KEY in user_metadata:
        raise MetadataError(f"{JOB_MAC_KEY!r} is reserved for the job's MAC")
    body = canonical(user_metadata)
    if body is None:
        raise MetadataError(
            "user_metadata must map strings to strings, at most "
            f"{MAX_CANONICAL_BYTES} bytes as canonical JSON"
        )
    return {**user_metadata, JOB_MAC_KEY: _mac(key, body)}


def verify(user_metadata: Any, key: bytes) -> bool:
    """Whether `user_metadata` (as the verified envelope carries it) holds a valid MAC
    under `key`. Anything else — absent, not a mapping, no MAC, another key, a changed
    field, a non-string value — is False. Constant-time comparison."""
    if not isinstance(user_metadata, Mapping):
        return False
    given = user_metadata.get(JOB_MAC_KEY)
    if not isinstance(given, str) or len(given) > 64 or not given.isascii():
        return False
    body = canonical(user_metadata)
    if body is None:
        return False
    return hmac.compare_digest(given.encode(), _mac(key, body).encode())
