"""Dynamic deliveries: an RS256 JWT in `webhook-signature`, verified with PyJWT.

Keys come only from the pinned JWKS URI; an unknown `kid` triggers a refresh at most once
per `jwks_min_refresh_seconds` (so forged kids cannot turn us into a fetch amplifier). A
key set that is not a well-formed JWKS, or that offers an RSA key under 2048 bits, is a
failed refresh: the last good key set stays in use.
The token's header and claims are parsed before PyJWT sees them: nesting bounded
(`json_depth`), numbers that survive our own orjson, NumericDates that are JSON numbers.
What is forwarded is what was authenticated: the envelope rebuilt from the verified
claims; a non-empty body must equal it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from gemini_webhooks import json_depth
from gemini_webhooks.contracts.delivery import JWT_ALGORITHM, JWT_REGISTERED_CLAIMS
from gemini_webhooks.contracts.egress_proxy import DIRECT, ProxySettings
from gemini_webhooks.contracts.receiver_config import DynamicConfig

from . import metrics, reasons
from .logs import log
from .reasons import Rejection

Fetch = Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True)
class DynamicMatch:
    envelope: dict[str, Any]
    claims: dict[str, Any]  # the registered claims (iss, aud, iat, exp, jti)
    kid: str

    @property
    def envelope_json(self) -> bytes:
        return _json(self.envelope)

    @property
    def claims_json(self) -> bytes:
        return _json(self.claims)


def _json(value: Any) -> bytes:
    """orjson, or the standard library for what orjson refuses (integers beyond 64 bits,
    which a token's JSON may carry): the forwarded JSON is exactly what was signed."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


RefreshOutcome = Literal["ok", "rate_limited", "error"]  # also the metric's label values

# RFC 7518 §3.3: RS256 keys of fewer bits must not be used.
MIN_RSA_BITS = 2048


class JwksError(ValueError):
    """The fetched document is not a key set we can use; says why, never key material."""


def parse_jwks(raw: bytes) -> dict[str, jwt.PyJWK]:
    """The RS256 signing keys of a JWKS document, by `kid`. Keys of other types, algorithms
    or uses, and keys without a `kid`, are left out; anything malformed, an RSA key that
    is weak or private, or no usable key at all refuses the whole document (JwksError):
    such a document must not replace a good key set."""
    try:
        document = orjson.loads(raw)  # depth bounded (1,024) without recursion
    except orjson.JSONDecodeError:
        raise JwksError("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("not an object with a 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kty"), str):
            raise JwksError("a key is not an object with a 'kty'")
        kid = entry.get("kid")
        if (
            entry["kty"] != "RSA"
            or entry.get("alg", JWT_ALGORITHM) != JWT_ALGORITHM
            or entry.get("use", "sig") != "sig"
            or not isinstance(kid, str)
            or not kid
        ):
            continue
        try:
            key = jwt.PyJWK(entry, algorithm=JWT_ALGORITHM)
        except jwt.PyJWTError:
            raise JwksError("an RSA key is not valid") from None
        if not isinstance(key.key, RSAPublicKey):
            raise JwksError("an RSA key is private")
        if key.key.key_size < MIN_RSA_BITS:
            raise JwksError(f"an RSA key has {key.key.key_size} bits, under {MIN_RSA_BITS}")
        keys[kid] = key
    if not keys:
        raise JwksError("no RS256 signing key with a kid")
    return keys


class JwksCache:
    def __init__(self, config: DynamicConfig, fetch: Fetch) -> None:
        self._config = config
        self._fetch = fetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")  # when the key set in use was requested
        self._received_at = float("-inf")  # ... and when it arrived
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self, *, forced: bool = False, since: float | None = None) -> RefreshOutcome:
        """Fetch the JWKS unless one was fetched within the minimum interval, or one
        arrived `since` (while this caller waited for another's refresh)."""
        async with self._lock:
            if since is not None and self._received_at >= since:
                return "ok"
            now = time.monotonic()
            if now - self._last_attempt < self._config.jwks_min_refresh_seconds:
                metrics.jwks_refreshes.labels("rate_limited").inc()
                return "rate_limited"
            self._last_attempt = now
            try:
                keys = parse_jwks(await self._fetch(self._config.jwks_uri))
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as e:
                metrics.jwks_refreshes.labels("error").inc()
                detail = str(e) if isinstance(e, JwksError) else None
                log(30, "jwks refresh failed", error=type(e).__name__, detail=detail, forced=forced)
                return "error"
            self._keys = keys
            self._fetched_at = now
            self._received_at = time.monotonic()
            metrics.jwks_refreshes.labels("ok").inc()
            log(20, "jwks refreshed", keys=len(self._keys))
            return "ok"

    async def key(self, kid: str) -> jwt.PyJWK | Rejection:
        key = self._keys.get(kid)
        asked_at = time.monotonic()
        outcome: RefreshOutcome | None = None
        if key is None or asked_at - self._fetched_at > self._config.jwks_max_age_seconds:
            outcome = await self.refresh(forced=key is None, since=asked_at)
            key = self._keys.get(kid)
        if key is not None:
            return key
        return unknown_kid(bool(self._keys), self._received_at >= asked_at, outcome)


def unknown_kid(
    have_keys: bool, refreshed_since_asked: bool, outcome: RefreshOutcome | None
) -> Rejection:
    """Why a kid is not in the key set. Final (401) only if a key set that arrived after
    the token did lacks it — one this token's refresh fetched, or one fetched meanwhile for
    another token. Otherwise the refresh failed, or was rate-limited (forged kids spent it,
    or a real new key came just after another refresh): 503, so that Gemini retries."""
    if not have_keys or (outcome == "error" and not refreshed_since_asked):
        return reasons.JWKS_UNAVAILABLE
    if refreshed_since_asked:
        return reasons.UNKNOWN_KID
    return reasons.JWKS_RATE_LIMITED


def _claims_error(error: jwt.PyJWTError) -> Rejection:
    if isinstance(error, jwt.ExpiredSignatureError):
        return reasons.TOKEN_EXPIRED
    if isinstance(error, jwt.ImmatureSignatureError):  # iat or nbf ahead of our clock
        return reasons.CLOCK_SKEW
    if isinstance(error, jwt.InvalidAudienceError):
        return reasons.WRONG_AUDIENCE
    if isinstance(error, jwt.InvalidIssuerError):
        return reasons.WRONG_ISSUER
    return reasons.INVALID_TOKEN


# Numbers that do not travel between JSON parsers (RFC 8259 §6): NaN and Infinity (not
# JSON, though the standard library reads them), and numbers beyond the IEEE 754 double
# range. Our own orjson, which reads forwarded envelopes back (CloudEvents targets, the
# Redis queue), refuses those, and writes NaN and infinities as null.
def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number beyond the double range")
    return value


def _double_range_int(text: str) -> int:
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise ValueError("an integer beyond the double range") from None
    return value


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def _unverified_json(token: str) -> tuple[Any, Any] | None:
    """The token's header and claims, parsed as PyJWT will parse them but with their depth
    bounded first and their numbers interoperable; None if they are not such JSON."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = (
            json_depth.loads(
                jwt.utils.base64url_decode(part),
                parse_float=_finite_float,
                parse_int=_double_range_int,
                parse_constant=_not_json,
            )
            for part in parts[:2]
        )
    except ValueError:  # not base64url, not UTF-8, not JSON, or nested too deeply
        return None
    return header, claims


# NumericDate claims (RFC 7519 §2): JSON numbers. PyJWT passes them through int(), which
# takes "1700000000" and true as well.
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")


def numeric_dates_are_numbers(claims: dict[str, Any]) -> bool:
    return all(type(claims[c]) in (int, float) for c in NUMERIC_DATE_CLAIMS if c in claims)


async def verify(
    config: DynamicConfig,
    jwks: JwksCache,
    token: str,
    msg_id: str,
    body: bytes,
    now: float,
    tolerance: int,
) -> DynamicMatch | Rejection:
    parsed = _unverified_json(token)
    if parsed is None or not isinstance(parsed[0], dict):
        return reasons.INVALID_TOKEN
    header, unverified = parsed
    if header.get("alg") != JWT_ALGORITHM:
        return reasons.UNSUPPORTED_ALGORITHM
    # Checked before the signature: refusing unsigned claims costs nothing, and PyJWT
    # would convert these before we could see them.
    if not isinstance(unverified, dict) or not numeric_dates_are_numbers(unverified):
        return reasons.INVALID_TOKEN
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        return reasons.UNKNOWN_KID
    key = await jwks.key(kid)
    if isinstance(key, Rejection):
        return key
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            audience=config.audiences,
            issuer=config.issuer,
            leeway=config.leeway_seconds,
            # The key set holds no weak key; should one get there, it verifies nothing
            # (and raises instead of warning).
            options={
                "require": ["iss", "aud", "iat", "exp", "jti"],
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.PyJWTError as error:
        return _claims_error(error)
    except (TypeError, ValueError, OverflowError):  # claims of a shape PyJWT did not expect
        return reasons.INVALID_TOKEN
    if claims["iat"] < now - tolerance - config.leeway_seconds:
        return reasons.TIMESTAMP_EXPIRED
    if claims["jti"] != msg_id:
        return reasons.ID_MISMATCH
    envelope = {k: v for k, v in claims.items() if k not in JWT_REGISTERED_CLAIMS and k != "nbf"}
    if not isinstance(envelope.get("type"), str):
        return reasons.INVALID_TOKEN
    if body.strip():
        try:
            # Parsed as PyJWT parsed the claims (the standard library), so that equal JSON
            # compares equal (orjson turns integers beyond 64 bits into floats).
            sent = json_depth.loads(body)
        except ValueError:  # not JSON, not UTF-8, or nested too deeply
            return reasons.BODY_MISMATCH
        if sent != envelope:
            return reasons.BODY_MISMATCH
    registered = {k: claims[k] for k in JWT_REGISTERED_CLAIMS if k in claims}
    return DynamicMatch(envelope=envelope, claims=registered, kid=kid)


def aiohttp_fetch(
    session_factory: Callable[[], aiohttp.ClientSession],
    timeout: float,
    max_bytes: int,
    proxies: ProxySettings = DIRECT,
) -> Fetch:
    """GET the whole body, whatever its framing (length, chunked, or until the close), as
    decoded (gzip, deflate), through the proxy `proxies` name for it: more than
    `max_bytes` of it raises JwksError."""

    async def fetch(uri: str) -> bytes:
        async with session_factory().get(
            uri,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            proxy=proxies.proxy_for(uri),
        ) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise JwksError(f"body over {max_bytes} bytes")
            return bytes(body)

    return fetch
