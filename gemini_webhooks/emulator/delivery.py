"""The delivery engine: sends envelopes to webhooks, signs them, retries, keeps a log.

Each (event, target) pair is one delivery with a stable `webhook-id`; it runs as its own
task, so a slow or failing endpoint only ever delays itself. A per-target semaphore bounds
how many requests one endpoint holds open, and every request has a timeout.
Static deliveries are signed per Standard Webhooks with every currently valid secret;
dynamic ones carry an RS256 JWT (claims = envelope + iss/aud/iat/exp/jti).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import standardwebhooks

from gemini_webhooks.contracts.delivery import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
)
from gemini_webhooks.contracts.egress_proxy import ProxySettings, ProxySettingsError
from gemini_webhooks.contracts.times import rfc3339

from . import decisions
from .clock import Clock, TimeScale
from .keys import KeyRing
from .webhooks import WebhookStore

log = logging.getLogger("gemini_webhooks.emulator.delivery")

Kind = Literal["static", "dynamic"]
State = Literal["pending", "delivered", "failed", "abandoned"]

_SERVICE_HOST = re.compile(r"^(?P<name>[^.]+)\.(?P<namespace>[^.]+)\.svc(\.[^/]*)?$")


def resolve_target(uri: str, overrides: Mapping[str, str]) -> tuple[str, str | None]:
    """Where to connect for `uri`, like curl's `--resolve`: an override keyed by
    `host:port`, or for a cluster Service host by `namespace/name:port`, replaces the
    address. Returns the URL to connect to and the Host header to send (None = as is)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    candidates = [f"{host}:{port}"]
    match = _SERVICE_HOST.match(host)
    if match:
        candidates.append(f"{match['namespace']}/{match['name']}:{port}")
    for key in candidates:
        address = overrides.get(key)
        if address:
            return urlunsplit((parts.scheme, address, parts.path, parts.query, "")), parts.netloc
    return uri, None


def _proxy_for(url: str) -> str | None:
    try:
        return ProxySettings.from_environ(os.environ).proxy_for(url)
    except ProxySettingsError as error:
        log.warning(json.dumps({"msg": "ignoring the proxy variables", "error": str(error)}))
        return None


@dataclass
class Attempt:
    number: int
    time: str
    status_code: int | None
    error: str | None
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "time": self.time,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 3),
        }


@dataclass
class Delivery:
    id: str  # the `webhook-id` header, stable across retries
    event_id: str
    event_type: str
    kind: Kind
    uri: str
    body: bytes = field(repr=False)
    envelope: dict[str, Any] = field(repr=False)
    created_at: datetime
    webhook_id: str | None = None
    counts_for_health: bool = True
    state: State = "pending"
    reason: str | None = None
    next_attempt_at: datetime | None = None
    attempts: list[Attempt] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "kind": self.kind,
            "webhook_id": self.webhook_id,
            "uri": self.uri,
            "state": self.state,
            "reason": self.reason,
            "created_at": rfc3339(self.created_at, "microseconds"),
            "next_attempt_at": rfc3339(self.next_attempt_at, "microseconds")
            if self.next_attempt_at
            else None,
            "attempts": [a.to_json() for a in self.attempts],
            "envelope": self.envelope,
        }


@dataclass(frozen=True)
class DeliverySettings:
    timeout: float = 5.0  # real seconds; not scaled: it bounds an HTTP exchange
    per_target_concurrency: int = 4
    retry: decisions.RetryPolicy = field(default_factory=decisions.RetryPolicy)
    disable_after: timedelta = timedelta(hours=24)  # nominal, scaled by the time scale
    jwt_lifetime: timedelta = timedelta(minutes=5)  # real: receivers check it against now
    issuer: str = "https://generativelanguage.googleapis.com"
    max_log_entries: int = 10_000  # settled deliveries beyond this are forgotten, oldest first


class DeliveryEngine:
    def __init__(
        self,
        *,
        clock: Clock,
        scale: TimeScale,
        settings: DeliverySettings,
        webhooks: WebhookStore,
        keys: KeyRing,
        overrides: Callable[[], Mapping[str, str]],
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.scale = scale
        self.settings = settings
        self.webhooks = webhooks
        self.keys = keys
        self._overrides = overrides
        self._rng = rng or random.Random()  # noqa: S311 — jitter, not security
        self._log: dict[str, Delivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)

    async def stop(self) -> None:
        await self.cancel_all()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def reset(self) -> None:
        await self.cancel_all()
        self._log.clear()
        self._gates.clear()

    # --- the log ----------------------------------------------------------------------

    def deliveries(
        self,
        *,
        webhook_id: str | None = None,
        event_type: str | None = None,
        event_id: str | None = None,
        state: str | None = None,
    ) -> list[Delivery]:
        return [
            d
            for d in self._log.values()
            if (webhook_id is None or d.webhook_id == webhook_id)
            and (event_type is None or d.event_type == event_type)
            and (event_id is None or d.event_id == event_id)
            and (state is None or d.state == state)
        ]

    def _trim_log(self) -> None:
        excess = len(self._log) - self.settings.max_log_entries
        if excess <= 0:
            return
        settled = [k for k, d in self._log.items() if d.state != "pending"][:excess]
        for key in settled:
            del self._log[key]

    def get(self, delivery_id: str) -> Delivery | None:
        return self._log.get(delivery_id)

    async def idle(self) -> None:
        """Wait until no delivery is in flight or waiting for a retry."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- submitting -------------------------------------------------------------------

    def submit_static(
        self,
        event_id: str,
        envelope: dict[str, Any],
        webhook_ids: list[str],
        *,
        counts_for_health: bool = True,
    ) -> list[Delivery]:
        body = json.dumps(envelope, separators=(",", ":")).encode()
        created = []
        for webhook_id in webhook_ids:
            webhook = self.webhooks.find(webhook_id)
            if webhook is None:
                continue
            delivery = Delivery(
                id=f"msg_{secrets.token_hex(12)}",
                event_id=event_id,
                event_type=envelope["type"],
                kind="static",
                uri=webhook.uri,
                body=body,
                envelope=envelope,
                created_at=self.clock.now(),
                webhook_id=webhook_id,
                counts_for_health=counts_for_health,
            )
            created.append(self._start(delivery, gate_key=f"static:{webhook_id}"))
        return created

    def submit_dynamic(
        self, event_id: str, envelope: dict[str, Any], uris: list[str]
    ) -> list[Delivery]:
        body = json.dumps(envelope, separators=(",", ":")).encode()
        created = []
        for uri in dict.fromkeys(uris):
            delivery = Delivery(
                id=f"msg_{secrets.token_hex(12)}",
                event_id=event_id,
                event_type=envelope["type"],
                kind="dynamic",
                uri=uri,
                body=body,
                envelope=envelope,
                created_at=self.clock.now(),
                counts_for_health=False,
            )
            created.append(self._start(delivery, gate_key=f"dynamic:{uri}"))
        return created

    def _start(self, delivery: Delivery, gate_key: str) -> Delivery:
        self._log[delivery.id] = delivery
        self._trim_log()
        gate = self._gates.setdefault(
            gate_key, asyncio.Semaphore(self.settings.per_target_concurrency)
        )
        task = asyncio.get_running_loop().create_task(self._run(delivery, gate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    # --- running one delivery ---------------------------------------------------------

    async def _run(self, delivery: Delivery, gate: asyncio.Semaphore) -> None:
        first_attempt_at: datetime | None = None
        try:
            while True:
                uri = self._current_uri(delivery)
                if uri is None:
                    return
                now = self.clock.now()
                first_attempt_at = first_attempt_at or now
                async with gate:
                    ok = await self._attempt(delivery, uri)
                now = self.clock.now()
                if ok:
                    self._finish(delivery, "delivered", None)
                    self._record_health(delivery, success=True, now=now)
                    return
                if self._record_health(delivery, success=False, now=now):
                    self._finish(delivery, "abandoned", "webhook disabled after sustained failures")
                    return
                wait = decisions.next_retry(
                    first_attempt_at,
                    now,
                    len(delivery.attempts),
                    self.settings.retry,
                    self._rng,
                    self.scale.factor,
                )
                if wait is None:
                    # A full retry window of failures is "sustained" by definition.
                    if self._disable(delivery, now):
                        reason = "retry window exhausted; webhook disabled"
                    else:
                        reason = "retry window exhausted"
                    self._finish(delivery, "failed", reason)
                    return
                delivery.next_attempt_at = now + wait
                await self.clock.sleep(wait.total_seconds())
        except asyncio.CancelledError:
            if delivery.state == "pending":
                self._finish(delivery, "abandoned", "emulator stopped or reset")
            raise

    def _current_uri(self, delivery: Delivery) -> str | None:
        if delivery.kind == "dynamic":
            return delivery.uri
        webhook = self.webhooks.find(delivery.webhook_id or "")
        if webhook is None:
            self._finish(delivery, "abandoned", "webhook deleted")
            return None
        if webhook.state != "enabled" and delivery.counts_for_health:
            self._finish(delivery, "abandoned", f"webhook is {webhook.state}")
            return None
        delivery.uri = webhook.uri
        return webhook.uri

    def _finish(self, delivery: Delivery, state: State, reason: str | None) -> None:
        delivery.state = state
        delivery.reason = reason
        delivery.next_attempt_at = None
        log.info(
            json.dumps(
                {
                    "msg": "delivery finished",
                    "delivery_id": delivery.id,
                    "event_type": delivery.event_type,
                    "kind": delivery.kind,
                    "webhook_id": delivery.webhook_id,
                    "state": state,
                    "reason": reason,
                    "attempts": len(delivery.attempts),
                }
            )
        )

    def _record_health(self, delivery: Delivery, *, success: bool, now: datetime) -> bool:
        """Track a static webhook's failure streak; True when it has just been disabled."""
        if delivery.kind != "static" or not delivery.counts_for_health:
            return False
        webhook = self.webhooks.find(delivery.webhook_id or "")
        if webhook is None:
            return False
        if success:
            webhook.failing_since = None
            return False
        if webhook.failing_since is None:
            webhook.failing_since = now
        window = self.scale.delta(self.settings.disable_after)
        if decisions.should_disable(webhook.failing_since, now, window):
            return self._disable(delivery, now)
        return webhook.state != "enabled"

    def _disable(self, delivery: Delivery, now: datetime) -> bool:
        """Disable the static webhook of `delivery` for failed deliveries; True if done."""
        if delivery.kind != "static" or not delivery.counts_for_health:
            return False
        webhook = self.webhooks.find(delivery.webhook_id or "")
        if webhook is None or webhook.state != "enabled":
            return False
        webhook.state = "disabled_due_to_failed_deliveries"
        webhook.update_time = now
        log.warning(
            json.dumps(
                {
                    "msg": "webhook disabled",
                    "webhook_id": webhook.id,
                    "state": webhook.state,
                    "failing_since": rfc3339(webhook.failing_since or now, "microseconds"),
                }
            )
        )
        return True

    def _headers(self, delivery: Delivery, uri: str, now: datetime) -> dict[str, str]:
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "gemini-webhooks-emulator",
            HEADER_ID: delivery.id,
            HEADER_TIMESTAMP: str(timestamp),
        }
        if delivery.kind == "static":
            webhook = self.webhooks.find(delivery.webhook_id or "")
            valid = webhook.valid_secrets(now) if webhook else ()
            payload = delivery.body.decode()
            signatures = [
                standardwebhooks.Webhook(entry.secret).sign(delivery.id, now, payload)
                for entry in valid
            ]
            headers[HEADER_SIGNATURE] = " ".join(signatures)
        else:
            claims = dict(delivery.envelope)
            claims.update(
                {
                    "iss": self.settings.issuer,
                    "aud": uri,
                    "iat": timestamp,
                    "exp": timestamp + int(self.settings.jwt_lifetime.total_seconds()),
                    "jti": delivery.id,
                }
            )
            headers[HEADER_SIGNATURE] = self.keys.sign(claims)
        return headers

    async def _attempt(self, delivery: Delivery, uri: str) -> bool:
        assert self._session is not None, "engine not started"
        now = self.clock.now()
        headers = self._headers(delivery, uri, now)
        url, host = resolve_target(uri, self._overrides())
        if host is not None:
            headers["host"] = host  # an override: straight to the address it names
        # Else as a client reaches a URL: through HTTP(S)_PROXY unless NO_PROXY says
        # otherwise (the sandbox names its proxy there), read at each attempt.
        proxy = None if host is not None else _proxy_for(url)
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(
                url,
                data=delivery.body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                proxy=proxy,
            ) as response:
                status = response.status
                await response.content.read(64 * 1024)
        except TimeoutError:
            error = f"timed out after {self.settings.timeout:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        elapsed = (time.perf_counter() - started) * 1000
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"HTTP {status}"
        delivery.attempts.append(
            Attempt(
                len(delivery.attempts) + 1, rfc3339(now, "microseconds"), status, error, elapsed
            )
        )
        log.info(
            json.dumps(
                {
                    "msg": "delivery attempt",
                    "delivery_id": delivery.id,
                    "event_type": delivery.event_type,
                    "kind": delivery.kind,
                    "webhook_id": delivery.webhook_id,
                    "attempt": len(delivery.attempts),
                    "status_code": status,
                    "error": error,
                    "duration_ms": round(elapsed, 1),
                }
            )
        )
        return ok
