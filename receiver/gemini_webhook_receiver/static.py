"""Static deliveries: Standard Webhooks HMAC signatures, checked against every loaded secret.

The `standardwebhooks` library's `verify` is not used because it hard-codes a 5-minute
window and raises one error for every failure, while we need a configurable window and
distinct reasons ("matched a revoked secret", "clock skew"). What remains here is the
signature and the comparison loop, done with `hmac.compare_digest`.

The signature is the library's (`Webhook.sign`: base64 of HMAC-SHA256 over
`{id}.{timestamp}.{body}` under the secret's base64-decoded key; tests/receiver/
test_static_signature.py checks that both agree) with the key set up once per secret: an
HMAC object keyed at load, copied per delivery, instead of keying a new one and building a
`datetime` per call: 1.07-1.09x less CPU per delivery (bench/receiver, A/B).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import NamedTuple

from gemini_webhooks.contracts.signing_secret import SECRET_PREFIX, SigningSecrets, truncate_secret

from . import reasons
from .reasons import Rejection

# How many secrets that disappeared from the Secret we still recognise as revoked.
_RETIRED_MEMORY = 16


def keyed_mac(secret: str) -> hmac.HMAC:
    """HMAC-SHA256 keyed with a `whsec_` secret's key, as `standardwebhooks.Webhook` keys
    it: the base64 after the prefix, padding optional. Raises ValueError for an empty or
    undecodable key."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    if not key:
        raise ValueError("empty signing secret")
    return hmac.new(key, digestmod=hashlib.sha256)


def signature(mac: hmac.HMAC, msg_id: str, timestamp: int, body: bytes) -> bytes:
    """The base64 signature (after `v1,`) of a delivery under a keyed MAC (left as is)."""
    signing = mac.copy()
    signing.update(b"%s.%d." % (msg_id.encode(), timestamp))
    signing.update(body)
    return base64.b64encode(signing.digest())


@dataclass(frozen=True)
class LoadedSecret:
    """A secret ready to verify with: keyed once, not per request."""

    index: int  # position in the Secret: 0 is the newest
    fingerprint: str  # the truncated form Gemini itself reports; never the secret
    expires_at: float  # unix seconds; inf while current
    mac: hmac.HMAC = field(repr=False, compare=False)  # copied per delivery, never updated


class StaticMatch(NamedTuple):
    source: str
    secret_index: int
    fingerprint: str


class SecretSet:
    """The secrets of one static webhook; replaced atomically on every reload."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.secrets: tuple[LoadedSecret, ...] = ()
        self.retired: tuple[LoadedSecret, ...] = ()
        self.loaded = False

    def replace(self, secrets: SigningSecrets) -> None:
        loaded = tuple(
            LoadedSecret(
                index=i,
                fingerprint=truncate_secret(s.secret),
                expires_at=s.expire_time.timestamp() if s.expire_time else float("inf"),
                mac=keyed_mac(s.secret),
            )
            for i, s in enumerate(secrets.secrets)
        )
        kept = {s.fingerprint for s in loaded}
        gone = tuple(s for s in self.secrets if s.fingerprint not in kept)
        self.retired = (gone + tuple(r for r in self.retired if r.fingerprint not in kept))[
            :_RETIRED_MEMORY
        ]
        self.secrets = loaded
        self.loaded = True

    def valid_count(self, now: float) -> int:
        return sum(1 for s in self.secrets if now < s.expires_at)


# The last second a `datetime` holds (9999-12-31T23:59:59Z): the library signs a
# `datetime`, and its own `verify` calls a timestamp beyond it an invalid header, not a
# stale one — so do we, whatever the signature (no secret is needed to decide it).
MAX_TIMESTAMP = 253402300799


def parse_timestamp(value: str) -> int | None:
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    timestamp = int(value)
    return timestamp if timestamp <= MAX_TIMESTAMP else None


def _candidates(signature_header: str) -> list[bytes]:
    return [
        part[3:].encode("utf-8", "surrogateescape")
        for part in signature_header.split(" ")
        if part.startswith("v1,")
    ]


def _matches(
    secret: LoadedSecret, msg_id: str, timestamp: int, body: bytes, candidates: list[bytes]
) -> bool:
    expected = signature(secret.mac, msg_id, timestamp, body)
    # Every candidate is compared (no early exit) so timing does not reveal which matched.
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(expected, candidate)
    return found


def verify(
    sets: list[SecretSet],
    msg_id: str,
    timestamp: int,
    signature_header: str,
    body: bytes,
    now: float,
) -> StaticMatch | Rejection:
    """Which webhook and secret signed this delivery, or why none did."""
    candidates = _candidates(signature_header)
    if not candidates:
        return reasons.BAD_SIGNATURE
    any_loaded = False
    for secret_set in sets:
        for secret in secret_set.secrets:
            any_loaded = True
            if now < secret.expires_at and _matches(secret, msg_id, timestamp, body, candidates):
                return StaticMatch(secret_set.name, secret.index, secret.fingerprint)
    if not any_loaded:
        return reasons.NO_SECRETS
    for secret_set in sets:
        stale = [s for s in secret_set.secrets if now >= s.expires_at] + list(secret_set.retired)
        for secret in stale:
            if _matches(secret, msg_id, timestamp, body, candidates):
                return reasons.REVOKED_SECRET
    return reasons.BAD_SIGNATURE


def check_window(timestamp: int, now: float, tolerance: int) -> Rejection | None:
    if timestamp < now - tolerance:
        return reasons.TIMESTAMP_EXPIRED
    if timestamp > now + tolerance:
        return reasons.CLOCK_SKEW
    return None


# --- an unknown signature while a rotated secret may still be on its way ---------------
#
# After `rotateSigningSecret` Gemini signs with the new secret at once; a replica answers
# before its Secret watch (or mounted file) has brought that secret in. Gemini retries any
# non-2xx, but a final-looking 401 `bad_signature` is what a forgery gets, so a replica that
# was verifying deliveries a moment ago and now sees a signature it cannot place answers 503
# `secret_reload_pending` instead, for a bounded time.
#
# What opens that time is evidence an unauthenticated request cannot produce: a delivery
# this replica verified (only Gemini holds the secret), and the absence of any reload since
# (once the Secret changed after it, the lag a rotation explains is over). A request that
# proved nothing changes neither, so it can neither open the window nor spend it: a forgery
# inside the window is answered 503 too, and costs the genuine rotation nothing.


@dataclass(frozen=True)
class ReloadEvidence:
    """What the rule below reads (unix seconds; None: never)."""

    last_verified: float | None = None  # a static delivery verified
    last_reload: float | None = None  # the loaded secrets changed (not the first load)


def unknown_signature(evidence: ReloadEvidence, now: float, hold: float) -> Rejection:
    """The answer to a fresh, well-formed delivery whose signatures match no loaded (nor
    revoked) secret. First reason that fires:

    - the rule is off (`hold` <= 0): 401 `bad_signature`;
    - nothing verified within `hold` before now: 401 — nothing suggests a rotation (a
      replica that was idle, or never verified anything, or a rotation's lag that lasted
      longer than `hold`);
    - the loaded secrets changed since that verification: 401 — the reload a rotation
      would explain has happened, and the new secret does not match either;
    - otherwise: 503 `secret_reload_pending`.
    """
    if hold <= 0:
        return reasons.BAD_SIGNATURE
    verified = evidence.last_verified
    if verified is None or now - verified >= hold:
        return reasons.BAD_SIGNATURE
    if evidence.last_reload is not None and evidence.last_reload >= verified:
        return reasons.BAD_SIGNATURE
    return reasons.SECRET_RELOAD_PENDING


def has_candidates(signature_header: str) -> bool:
    """Whether the header carries any `v1,` signature (one that no secret matched is
    unknown; a header without any is plain bad)."""
    return bool(_candidates(signature_header))
