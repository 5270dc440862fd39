"""RS256 signing keys for dynamic webhooks, and the JWKS that publishes them.

A rollover makes a new key the signer and keeps the previous one in the JWKS for an
overlap period, so receivers that cached the old key set keep verifying in-flight tokens.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gemini_webhooks.contracts.delivery import JWT_ALGORITHM


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    created_at: datetime
    retire_at: datetime | None = None

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": JWT_ALGORITHM})
        return jwk


def generate_key(now: datetime) -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(
        kid=f"emulator-{secrets.token_hex(6)}", private_key=private_key, created_at=now
    )


def published(keys: tuple[SigningKey, ...], now: datetime) -> tuple[SigningKey, ...]:
    """Keys in the JWKS at `now`: the signer and any retired key still in its overlap."""
    return tuple(k for k in keys if k.retire_at is None or now < k.retire_at)


class KeyRing:
    def __init__(self, now: datetime) -> None:
        self._keys: tuple[SigningKey, ...] = (generate_key(now),)

    @property
    def signer(self) -> SigningKey:
        return self._keys[0]

    def rollover(self, now: datetime, overlap: timedelta) -> SigningKey:
        fresh = generate_key(now)
        retired = tuple(
            SigningKey(k.kid, k.private_key, k.created_at, k.retire_at or now + overlap)
            for k in published(self._keys, now)
        )
        self._keys = (fresh, *retired)
        return fresh

    def jwks(self, now: datetime) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in published(self._keys, now)]}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.signer
        return jwt.encode(
            claims, key.private_key, algorithm=JWT_ALGORITHM, headers={"kid": key.kid}
        )
