"""The receiver: its secrets, Redis and consumer started and stopped, each delivery taken
from verification to acceptance, and what the internal endpoints report.

`handle_delivery` is the hot path: read headers, verify (static or dynamic, by the shape of
`webhook-signature`), check the replay window, deduplicate, then either enqueue into Redis
or forward inline. Every rejection is a `Rejection` with its own 4xx and metric label.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import generate_latest

from gemini_webhooks.contracts.delivery import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    signature_scheme,
)
from gemini_webhooks.contracts.egress_proxy import ProxySettings
from gemini_webhooks.contracts.receiver_config import DYNAMIC_SOURCE, ReceiverConfig
from gemini_webhooks.contracts.signing_secret import SigningSecrets

from . import metrics, reasons, static
from .acceptance import UNAVAILABLE, Acceptance, Answer, redis_failed
from .dedup import MemoryDedup
from .delivery import Targets
from .durability import DurabilityGate
from .forwarding import Event, Forwarder
from .job_origin import JobOrigin
from .logs import log
from .reasons import Rejection
from .secret_sources import FileSecretSource, KubernetesSecretSource, SecretSource
from .verification import PingRecord, Verifier

if TYPE_CHECKING:
    import aiohttp

    # Imported where used: the Redis client only in Redis mode, PyJWT and cryptography only
    # with dynamic webhooks enabled (together a fifth of an idle receiver's memory).
    import redis.asyncio as aioredis

    from .redis_consumer import Consumer
    from .shared_pings import SharedPings
    from .tracing import Tracing

_MAX_ID_LENGTH = 256
_STARTUP_CHECK_SECONDS = 10.0
_JSON = "application/json"


class RedisNotDurable(RuntimeError):
    """Redis mode refused at start-up: the server would not keep what we acknowledge."""


_PING = b'{"status":"ping"}'
_PINGS_UNAVAILABLE = b'{"error":"redis_unavailable","message":"shared ping records unreadable"}'


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _valid_now(secret_set: static.SecretSet) -> float:
    return secret_set.valid_count(time.time())


class Receiver:
    def __init__(self, config: ReceiverConfig, tracing: Tracing | None = None) -> None:
        self.config = config
        # Set only when the OTEL_* environment turns tracing on (`start_tracing`).
        self.tracing = tracing
        # The proxy variables, read once: each target's proxy is decided when first used.
        # A malformed one stops the start (ProxySettingsError), naming the variable.
        self.proxies = ProxySettings.from_environ(os.environ)
        self.targets = Targets(config, self.proxies)
        self.secret_sets = [static.SecretSet(w.name) for w in config.static_webhooks]
        self.sources: list[SecretSource] = []
        self.pings: dict[str, PingRecord] = {}
        self.redis: aioredis.Redis | None = None
        self.durability: DurabilityGate | None = None
        self.shared_pings: SharedPings | None = None  # Redis mode: every replica's pings
        self.consumer: Consumer | None = None
        # The job key is read here, before anything starts: a missing one stops the process.
        self.verifier = Verifier(
            config,
            self.secret_sets,
            JobOrigin.from_config(config.dynamic) if config.dynamic.enabled else None,
        )
        self._session: aiohttp.ClientSession | None = None
        self.forwarder = Forwarder(config.forwarding.max_connections, self.session, tracing)
        self.acceptance = Acceptance(config.forwarding, self.targets, self.forwarder, tracing)
        self._rejections = {
            r.reason: (
                metrics.deliveries.labels("rejected", r.reason),
                orjson.dumps({"error": r.reason, "message": r.message}),
            )
            for r in vars(reasons).values()
            if isinstance(r, Rejection)
        }
        self._count_ping = metrics.deliveries.labels("ping", "ok")
        self._count_failed = metrics.deliveries.labels("failed", "not_delivered")
        self._inflight = 0
        self._idle = asyncio.Event()
        # Computed at scrape time: no per-request cost, and grace periods that end between
        # reloads are reflected.
        metrics.inflight.set_function(lambda: self._inflight)
        for secret_set in self.secret_sets:
            metrics.loaded_secrets.labels(secret_set.name).set_function(
                functools.partial(_valid_now, secret_set)
            )
        self.accepting = False

    # ---- lifecycle -------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The client for https targets and the JWKS, made (and aiohttp imported) on the
        first request that needs it: a receiver forwarding over plain http never loads it."""
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.config.forwarding.max_connections, keepalive_timeout=30
                ),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _on_secrets(self, secret_set: static.SecretSet, update: SigningSecrets | None) -> None:
        first_load = not secret_set.loaded
        before = tuple(s.fingerprint for s in secret_set.secrets)
        if update is None:
            secret_set.replace(SigningSecrets(webhook_id="", secrets=()))
            log(30, "signing-secret Secret is gone; no secret accepted", webhook=secret_set.name)
        else:
            secret_set.replace(update)
        if not first_load and before != tuple(s.fingerprint for s in secret_set.secrets):
            self.verifier.last_reload = time.time()
        count = secret_set.valid_count(time.time())
        metrics.secret_reloads.labels(secret_set.name, "ok").inc()
        log(20, "signing secrets loaded", webhook=secret_set.name, valid_secrets=count)

    async def _open_redis(self) -> None:
        """Connect and check the server's persistence before anything else starts; refuse
        (RedisNotDurable) unless it keeps acknowledged events or the risk is accepted. An
        unreachable Redis is not refused: the first connection made later is checked."""
        cfg = self.config.redis
        assert cfg is not None
        from .redis_connection import open_client

        self.durability = DurabilityGate(cfg.accept_data_loss_risk)
        self.acceptance.durability = self.durability
        self.redis = open_client(cfg, self.durability)
        try:
            async with asyncio.timeout(_STARTUP_CHECK_SECONDS):
                await self.redis.ping()
        except redis_failed(TimeoutError) as error:
            log(
                30,
                "redis unreachable at start-up; checking it on connect",
                error=type(error).__name__,
            )
            return
        if self.durability.state == "refused":
            await self.redis.aclose()
            self.redis = None
            raise RedisNotDurable(f"refusing Redis mode: {self.durability.verdict.message}")

    async def start(self) -> None:
        cfg = self.config
        if cfg.redis is not None:
            await self._open_redis()
        for webhook, secret_set in zip(cfg.static_webhooks, self.secret_sets, strict=True):

            def update(value: SigningSecrets | None, s: static.SecretSet = secret_set) -> None:
                self._on_secrets(s, value)

            if webhook.secrets.file is not None:
                source: SecretSource = FileSecretSource(webhook.name, webhook.secrets.file, update)
            else:
                assert webhook.secrets.kubernetes is not None
                source = KubernetesSecretSource(webhook.name, webhook.secrets.kubernetes, update)
            await source.start()
            self.sources.append(source)
        if cfg.dynamic.enabled:
            from . import dynamic

            self.verifier.jwks = dynamic.JwksCache(
                cfg.dynamic,
                dynamic.aiohttp_fetch(
                    self.session,
                    cfg.forwarding.timeout_seconds,
                    cfg.dynamic.jwks_max_bytes,
                    self.proxies,
                ),
            )
        if cfg.redis is not None:
            assert self.redis is not None
            from .redis_consumer import Consumer
            from .redis_stream import Stream
            from .shared_pings import SharedPings

            redis_dedup = cfg.dedup.backend == "redis"
            stream = self.acceptance.stream = Stream(
                self.redis, cfg.redis, cfg.dedup.ttl_seconds if redis_dedup else None
            )
            self.shared_pings = SharedPings(
                self.redis, cfg.redis.stream, cfg.redis.dedup_key_prefix, cfg.dedup.ttl_seconds
            )
            self.consumer = Consumer(
                stream, self.targets, cfg.forwarding, self.forwarder, self.tracing
            )
            await self.consumer.start()
            if not redis_dedup:
                dedup = MemoryDedup(cfg.dedup.ttl_seconds, cfg.dedup.max_entries)
                self.acceptance.memory_dedup = dedup
        elif cfg.dedup.backend == "memory":
            dedup = MemoryDedup(cfg.dedup.ttl_seconds, cfg.dedup.max_entries)
            self.acceptance.memory_dedup = dedup
        # With `dedup.backend: redis` the stream's accept script deduplicates (SET NX EX).
        self.accepting = True

    async def stop(self, drain_seconds: float = 10.0) -> None:
        self.accepting = False
        deadline = time.monotonic() + drain_seconds
        if self._inflight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_seconds):
                    await self._idle.wait()
        if self.consumer is not None:
            await self.consumer.stop(max(deadline - time.monotonic(), 0.5))
        for source in self.sources:
            await source.stop()
        self.forwarder.close()
        if self._session is not None:
            await self._session.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        now = time.time()
        checks: dict[str, Any] = {s.name: s.valid_count(now) > 0 for s in self.secret_sets}
        if self.redis is not None:
            try:
                async with asyncio.timeout(2.0):
                    checks["redis"] = bool(await self.redis.ping())
            except redis_failed(TimeoutError):
                checks["redis"] = False
        if self.durability is not None:
            checks["redis_durable_or_risk_accepted"] = self.durability.allows_acknowledging
        checks["accepting"] = self.accepting
        return all(checks.values()), checks

    # ---- hot path --------------------------------------------------------------------

    def rejected(self, rejection: Rejection, msg_id: str | None) -> bytes:
        """Count and log a rejection; its answer's body."""
        counter, body = self._rejections[rejection.reason]
        counter.inc()
        if self.tracing is not None:
            self.tracing.rejected(rejection.reason)
        log(20, "delivery rejected", webhook_id=msg_id, reason=rejection.reason)
        return body

    def _reject(self, rejection: Rejection, msg_id: str | None) -> Answer:
        return rejection.status, self.rejected(rejection, msg_id)

    async def handle_delivery(self, headers: dict[str, str], body: bytes) -> Answer:
        """One delivery, its head and whole body already read (and bounded) by the public
        port (`public.py`); header names are lower-case."""
        started = time.perf_counter()
        self._inflight += 1
        self._idle.clear()
        try:
            return await self._handle(headers, body)
        except Exception as error:  # a bug must not crash the server or leak details
            log(
                50,
                "internal error handling delivery",
                webhook_id=headers.get(HEADER_ID, "")[:_MAX_ID_LENGTH] or None,
                error=type(error).__name__,
            )
            self._count_failed.inc()
            return 503, UNAVAILABLE
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
            metrics.ack_seconds.observe(time.perf_counter() - started)

    async def _handle(self, headers: dict[str, str], body: bytes) -> Answer:
        msg_id = headers.get(HEADER_ID)
        raw_timestamp = headers.get(HEADER_TIMESTAMP)
        signature = headers.get(HEADER_SIGNATURE)
        if not msg_id or not raw_timestamp or not signature:
            return self._reject(reasons.MISSING_HEADERS, msg_id)
        if len(msg_id) > _MAX_ID_LENGTH or not msg_id.isprintable() or " " in msg_id:
            return self._reject(reasons.MALFORMED_ID, None)
        timestamp = static.parse_timestamp(raw_timestamp)
        if timestamp is None:
            return self._reject(reasons.MALFORMED_TIMESTAMP, msg_id)
        scheme = signature_scheme(signature)
        if scheme is None:
            return self._reject(reasons.MALFORMED_SIGNATURE, msg_id)
        if not self.accepting:
            self._count_failed.inc()
            return 503, UNAVAILABLE
        if body and _media_type(headers.get("content-type", "")) != _JSON:
            return self._reject(reasons.WRONG_CONTENT_TYPE, msg_id)
        now = time.time()
        if scheme == "hmac":
            verified = self.verifier.static(msg_id, timestamp, signature, body, now)
        else:
            verified = await self.verifier.dynamic(msg_id, timestamp, signature, body, now)
        if isinstance(verified, Rejection):
            return self._reject(verified, msg_id)
        event, ping = verified
        if self.tracing is not None:
            self.tracing.verified(event)
        if ping is not None:
            return await self._record_ping(event, ping)
        return await self.acceptance.accept(event)

    async def _record_ping(self, event: Event, ping: PingRecord) -> Answer:
        """Keep a verified ping for the health check, once per `webhook-id`: a replay is
        answered as a duplicate and changes nothing the health check reads."""
        if self.shared_pings is not None:
            fresh = await self._share(ping)
            if fresh is None:
                self._count_failed.inc()
                return 503, UNAVAILABLE
        else:
            memory = self.acceptance.memory_dedup
            assert memory is not None  # without Redis, dedup is in memory
            fresh = memory.claim(ping.webhook_id)
        if not fresh:
            return self.acceptance.duplicate(event)
        self.pings[ping.source] = ping
        metrics.last_ping_timestamp_seconds.labels(ping.source).set(ping.received_at)
        self._count_ping.inc()
        log(
            20,
            "ping received",
            webhook_id=ping.webhook_id,
            source=ping.source,
            secret_index=ping.secret_index,
        )
        return 200, _PING

    async def _share(self, ping: PingRecord) -> bool | None:
        """Record a verified ping for every replica (False: a replay, already recorded);
        None (answer 503, so that Gemini retries) when Redis cannot take it: a ping only
        this pod knows of would be reported as not received by the others."""
        assert self.shared_pings is not None
        try:
            return await self.shared_pings.record(ping.source, ping.webhook_id, ping.as_json())
        except redis_failed() as error:
            log(
                40,
                "redis unavailable; ping not recorded, answering 503",
                webhook_id=ping.webhook_id,
                error=type(error).__name__,
            )
            return None

    # ---- internal endpoint -----------------------------------------------------------

    async def handle_metrics(self) -> tuple[int, bytes]:
        return 200, generate_latest()

    async def handle_healthz(self) -> tuple[int, bytes]:
        return 200, b'{"status":"ok"}'

    async def handle_readyz(self) -> tuple[int, bytes]:
        ok, checks = await self.ready()
        body: dict[str, Any] = {"ready": ok, "checks": checks}
        if self.durability is not None:
            body["redis_durability"] = self.durability.as_json()
        return 200 if ok else 503, orjson.dumps(body)

    def ping_sources(self) -> list[str]:
        sources = [s.name for s in self.secret_sets]
        return [*sources, DYNAMIC_SOURCE] if self.config.dynamic.enabled else sources

    async def handle_pings(self) -> tuple[int, bytes]:
        if self.shared_pings is None:
            pings = {name: record.as_json() for name, record in self.pings.items()}
        else:
            from .shared_pings import SharedPingError

            try:
                pings = await self.shared_pings.read(self.ping_sources())
            except redis_failed(SharedPingError) as error:
                log(40, "shared ping records unreadable", error=type(error).__name__)
                return 503, _PINGS_UNAVAILABLE
        return 200, orjson.dumps({"pings": pings})
