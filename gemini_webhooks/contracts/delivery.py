"""The wire format of one delivery: what the emulator sends and the receiver verifies.

Static webhooks: Standard Webhooks headers, HMAC-SHA256 signatures (`v1,<base64>`), one per
currently valid secret, space separated. Dynamic webhooks: the same `webhook-id` and
`webhook-timestamp` headers, and `webhook-signature` holding an RS256 JWT whose claims are
the envelope plus the registered claims below. The scheme is told apart by the header's
shape (`signature_scheme`).
"""

from __future__ import annotations

import re
from typing import Literal

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

ENVELOPE_VERSION = "v1"

# Google's JWKS for dynamic webhooks, and the issuer its tokens carry by default.
GOOGLE_JWKS_URI = "https://generativelanguage.googleapis.com/.well-known/jwks.json"
GOOGLE_ISSUER = "https://generativelanguage.googleapis.com"
JWKS_PATH = "/.well-known/jwks.json"
JWT_ALGORITHM = "RS256"

# Registered JWT claims a dynamic delivery carries besides the envelope's own fields.
# `jti` equals the `webhook-id` header; `aud` is the target URI unless configured otherwise.
JWT_REGISTERED_CLAIMS = ("iss", "aud", "iat", "exp", "jti")

# The type of the WebhookService's test event (sent by `webhooks.ping`).
PING_EVENT_TYPE = "webhook.ping"

# Replay window the guide asks every receiver to enforce.
DEFAULT_TOLERANCE_SECONDS = 5 * 60


_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_HMAC_SHAPE = re.compile(r"^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$")
# Space-separated `v<N>[suffix],<value>` entries (extra spaces between them allowed).
_SIGNATURE_LIST = re.compile(r"v\d+[a-z]*,\S+(?: +v\d+[a-z]*,\S+)*")

Scheme = Literal["hmac", "jwt"]


def signature_scheme(header_value: str) -> Scheme | None:
    """Which scheme signed a delivery, from the shape of its `webhook-signature` header.

    Any space-separated `v[N],...` list is Standard Webhooks (the verifier ignores versions
    it does not know); three base64url segments are a JWT; anything else is malformed.
    """
    value = header_value.strip()
    if _JWT_SHAPE.match(value):
        return "jwt"
    if _SIGNATURE_LIST.fullmatch(value):
        return "hmac"
    return None


def is_hmac_v1_list(header_value: str) -> bool:
    """True when every entry is a well-formed `v1,<base64>` signature."""
    return bool(_HMAC_SHAPE.match(header_value.strip()))
