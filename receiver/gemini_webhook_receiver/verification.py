"""What a delivery proves: its signature verified (static HMAC, or a dynamic JWT and the
job's origin), its timestamp in the replay window, its body an event envelope; the event
(and, for a ping, the record the health check reads) built from what was authenticated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from gemini_webhooks.contracts.delivery import PING_EVENT_TYPE
from gemini_webhooks.contracts.receiver_config import DYNAMIC_SOURCE, ReceiverConfig
from gemini_webhooks.contracts.times import rfc3339

from . import metrics, reasons, static
from .forwarding import Event
from .job_origin import JobOrigin
from .reasons import Rejection

if TYPE_CHECKING:
    # PyJWT and cryptography only with dynamic webhooks enabled.
    from . import dynamic


@dataclass
class PingRecord:
    source: str
    webhook_id: str
    received_at: float
    scheme: str
    secret_index: int | None
    secret_fingerprint: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "webhook_id": self.webhook_id,
            "received_at": rfc3339(datetime.fromtimestamp(self.received_at, UTC), "auto"),
            "scheme": self.scheme,
            "secret_index": self.secret_index,
            "secret_fingerprint": self.secret_fingerprint,
        }


Verified = tuple[Event, PingRecord | None]


class Verifier:
    """Verifies deliveries against the receiver's secrets and JWKS, keeping the evidence
    the unknown-signature rule reads (static.unknown_signature): when a static delivery
    last verified (written on every one) and when the secrets last changed."""

    def __init__(
        self,
        config: ReceiverConfig,
        secret_sets: list[static.SecretSet],
        job_origin: JobOrigin | None,
    ) -> None:
        self.config = config
        self.secret_sets = secret_sets
        self.job_origin = job_origin
        self.tolerance = config.replay.tolerance_seconds
        self.reload_hold = config.replay.reload_pending_seconds
        self.jwks: dynamic.JwksCache | None = None  # set at start, with dynamic webhooks
        self.last_verified: float | None = None
        self.last_reload: float | None = None
        self._verify_hmac = metrics.verification_seconds.labels("hmac")
        self._verify_jwt = metrics.verification_seconds.labels("jwt")

    def static(
        self, msg_id: str, timestamp: int, signature: str, body: bytes, now: float
    ) -> Verified | Rejection:
        if not self.secret_sets:
            return reasons.BAD_SIGNATURE
        try:
            body.decode()  # a JSON body is UTF-8: checked before any other work
        except UnicodeDecodeError:
            return reasons.MALFORMED_BODY
        started = time.perf_counter()
        match = static.verify(self.secret_sets, msg_id, timestamp, signature, body, now)
        self._verify_hmac.observe(time.perf_counter() - started)
        window = static.check_window(timestamp, now, self.tolerance)
        if isinstance(match, Rejection):
            if (
                match is reasons.BAD_SIGNATURE
                and window is None
                and static.has_candidates(signature)
            ):
                evidence = static.ReloadEvidence(self.last_verified, self.last_reload)
                match = static.unknown_signature(evidence, now, self.reload_hold)
            return match
        if window is not None:
            return window
        self.last_verified = now
        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError:
            return reasons.MALFORMED_BODY
        if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str):
            return reasons.MALFORMED_BODY
        event_type: str = envelope["type"]
        if event_type == PING_EVENT_TYPE:
            return Event(msg_id, match.source, "hmac", event_type, body), PingRecord(
                match.source, msg_id, now, "hmac", match.secret_index, match.fingerprint
            )
        event = Event(
            msg_id,
            match.source,
            "hmac",
            event_type,
            body,
            received_at=now,
            user_metadata=envelope.get("user_metadata"),
        )
        return event, None

    async def dynamic(
        self, msg_id: str, timestamp: int, token: str, body: bytes, now: float
    ) -> Verified | Rejection:
        if self.jwks is None:
            return reasons.DYNAMIC_DISABLED
        window = static.check_window(timestamp, now, self.tolerance)
        if window is not None:
            return window
        from . import dynamic  # imported at start-up, with dynamic webhooks enabled

        started = time.perf_counter()
        match = await dynamic.verify(
            self.config.dynamic, self.jwks, token, msg_id, body, now, self.tolerance
        )
        self._verify_jwt.observe(time.perf_counter() - started)
        if isinstance(match, Rejection):
            return match
        if self.job_origin is not None and (foreign := self.job_origin.check(match.envelope)):
            return foreign
        event_type: str = match.envelope["type"]
        event = Event(
            msg_id,
            DYNAMIC_SOURCE,
            "jwt",
            event_type,
            match.envelope_json,
            claims=match.claims_json,
            received_at=now,
            user_metadata=match.envelope.get("user_metadata"),
        )
        if event_type == PING_EVENT_TYPE:
            return event, PingRecord(DYNAMIC_SOURCE, msg_id, now, "jwt", None, match.kid)
        return event, None
