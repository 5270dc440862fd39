"""The receiver process: the public delivery endpoint and the internal endpoint.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gemini_webhooks.contracts.delivery import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    PING_EVENT_TYPE,
    signature_scheme,
)
from gemini_webhooks.contracts.egress_proxy import ProxySettings
from gemini_webhooks.contracts.receiver_config import DYNAMIC_SOURCE, ReceiverConfig
from gemini_webhooks.contracts.signing_secret import SigningSecrets
from gemini_webhooks.contracts.times import rfc3339
from gemini_webhooks.tracing import configured as tracing_configured
from gemini_webhooks.tracing import tracer_provider

from . import metrics, reasons, static
from .dedup import MemoryDedup
from .delivery import Targets, deliver_inline
from .durability import DurabilityGate
from .forwarding import Event, Forwarder
from .internal import JSON, Endpoint, InternalServer
from .job_origin import JobOrigin
from .logs import log
from .public import PublicServer
from .reasons import Rejection
from .secret_sources import FileSecretSource, KubernetesSecretSource, SecretSource

if TYPE_CHECKING:
    import aiohttp

    # Imported where used: the Redis client only in Redis mode, PyJWT and cryptography only
    # with dynamic webhooks enabled (together a fifth of an idle receiver's memory).
    import redis.asyncio as aioredis

    from . import dynamic
    from .queue import Admitted, Consumer, Stream
    from .shared_pings import SharedPings
    from .tracing import Tracing

PINGS_PATH = "/internal/pings"
_MAX_ID_LENGTH = 256
_STARTUP_CHECK_SECONDS = 10.0
_JSON = "application/json"


class RedisNotDurable(RuntimeError):
    """Redis mode refused at start-up: the server would not keep what we acknowledge."""


def _redis_failed(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """What a call to Redis raises when the server cannot answer, for an `except` clause.
    Python evaluates it only once such a call has raised, so in Redis mode only, which has
    imported the Redis client already."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, *more)


Answer = tuple[int, bytes]  # status and JSON body of the public port's answer


_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'
_PING = b'{"status":"ping"}'
_UNAVAILABLE = b'{"error":"unavailable","message":"not delivered; retry later"}'
_PINGS_UNAVAILABLE = b'{"error":"redis_unavailable","message":"shared ping records unreadable"}'


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _valid_now(secret_set: static.SecretSet) -> float:
    return secret_set.valid_count(time.time())


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


class Receiver:
    def __init__(self, config: ReceiverConfig, tracing: Tracing | None = None) -> None:
        self.config = config
        # Set only when the OTEL_* environment turns tracing on (`start_tracing`).
        self.tracing = tracing
        self.tolerance = config.replay.tolerance_seconds
        self.reload_hold = config.replay.reload_pending_seconds
        # The unknown-signature rule's evidence (static.unknown_signature): when a static
        # delivery last verified (written on every one) and when the secrets last changed.
        self._last_verified: float | None = None
        self._last_reload: float | None = None
        # The proxy variables, read once: each target's proxy is decided when first used.
        # A malformed one stops the start (ProxySettingsError), naming the variable.
        self.proxies = ProxySettings.from_environ(os.environ)
        self.targets = Targets(config, self.proxies)
        self.secret_sets = [static.SecretSet(w.name) for w in config.static_webhooks]
        self.sources: list[SecretSource] = []
        self.pings: dict[str, PingRecord] = {}
        self.redis: aioredis.Redis | None = None
        self.durability: DurabilityGate | None = None
        self.stream: Stream | None = None
        self.shared_pings: SharedPings | None = None  # Redis mode: every replica's pings
        self.consumer: Consumer | None = None
        self.memory_dedup: MemoryDedup | None = None
        self.jwks: dynamic.JwksCache | None = None
        # Read here, before anything starts: a missing job key stops the process at once.
        self.job_origin = JobOrigin.from_config(config.dynamic) if config.dynamic.enabled else None
        self._session: aiohttp.ClientSession | None = None
        self.forwarder = Forwarder(config.forwarding.max_connections, self.session, tracing)
        self._rejections = {
            r.reason: (
                metrics.deliveries.labels("rejected", r.reason),
                orjson.dumps({"error": r.reason, "message": r.message}),
            )
            for r in vars(reasons).values()
            if isinstance(r, Rejection)
        }
        self._count_accepted = metrics.deliveries.labels("accepted", "ok")
        self._count_duplicate = metrics.deliveries.labels("duplicate", "ok")
        self._count_ping = metrics.deliveries.labels("ping", "ok")
        self._count_failed = metrics.deliveries.labels("failed", "not_delivered")
        self._verify_hmac = metrics.verification_seconds.labels("hmac")
        self._verify_jwt = metrics.verification_seconds.labels("jwt")
        self._inflight = 0
        self._idle = asyncio.Event()
        # Ids claimed in this process whose delivery (or enqueueing) is still under way,
        # with the duplicates waiting for its outcome: a duplicate must not be acknowledged
        # before the first copy is delivered or stored (if that fails, both get 503).
        self._settling: dict[str, list[asyncio.Future[bool]]] = {}
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
            self._last_reload = time.time()
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
        self.redis = open_client(cfg, self.durability)
        try:
            await asyncio.wait_for(self.redis.ping(), _STARTUP_CHECK_SECONDS)
        except _redis_failed(TimeoutError) as error:
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

            self.jwks = dynamic.JwksCache(
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
            from .queue import Consumer, Stream
            from .shared_pings import SharedPings

            redis_dedup = cfg.dedup.backend == "redis"
            self.stream = Stream(
                self.redis, cfg.redis, cfg.dedup.ttl_seconds if redis_dedup else None
            )
            self.shared_pings = SharedPings(
                self.redis, cfg.redis.stream, cfg.redis.dedup_key_prefix, cfg.dedup.ttl_seconds
            )
            self.consumer = Consumer(
                self.stream, self.targets, cfg.forwarding, self.forwarder, self.tracing
            )
            await self.consumer.start()
            if not redis_dedup:
                self.memory_dedup = MemoryDedup(cfg.dedup.ttl_seconds, cfg.dedup.max_entries)
        elif cfg.dedup.backend == "memory":
            self.memory_dedup = MemoryDedup(cfg.dedup.ttl_seconds, cfg.dedup.max_entries)
        # With `dedup.backend: redis` the stream's accept script deduplicates (SET NX EX).
        self.accepting = True

    async def stop(self, drain_seconds: float = 10.0) -> None:
        self.accepting = False
        deadline = time.monotonic() + drain_seconds
        if self._inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_seconds)
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
                checks["redis"] = bool(await asyncio.wait_for(self.redis.ping(), 2.0))
            except _redis_failed(TimeoutError):
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
            return 503, _UNAVAILABLE
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
            return 503, _UNAVAILABLE
        if body and _media_type(headers.get("content-type", "")) != _JSON:
            return self._reject(reasons.WRONG_CONTENT_TYPE, msg_id)
        now = time.time()
        if scheme == "hmac":
            verified = self._verify_static(msg_id, timestamp, signature, body, now)
        else:
            verified = await self._verify_dynamic(msg_id, timestamp, signature, body, now)
        if isinstance(verified, Rejection):
            return self._reject(verified, msg_id)
        event, ping = verified
        if self.tracing is not None:
            self.tracing.verified(event)
        if ping is not None:
            return await self._record_ping(event, ping)
        return await self._accept(event)

    async def _record_ping(self, event: Event, ping: PingRecord) -> Answer:
        """Keep a verified ping for the health check, once per `webhook-id`: a replay is
        answered as a duplicate and changes nothing the health check reads."""
        if self.shared_pings is not None:
            fresh = await self._share(ping)
            if fresh is None:
                self._count_failed.inc()
                return 503, _UNAVAILABLE
        else:
            assert self.memory_dedup is not None  # without Redis, dedup is in memory
            fresh = self.memory_dedup.claim(ping.webhook_id)
        if not fresh:
            return self._duplicate(event)
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
        except _redis_failed() as error:
            log(
                40,
                "redis unavailable; ping not recorded, answering 503",
                webhook_id=ping.webhook_id,
                error=type(error).__name__,
            )
            return None

    def _verify_static(
        self, msg_id: str, timestamp: int, signature: str, body: bytes, now: float
    ) -> tuple[Event, PingRecord | None] | Rejection:
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
                evidence = static.ReloadEvidence(self._last_verified, self._last_reload)
                match = static.unknown_signature(evidence, now, self.reload_hold)
            return match
        if window is not None:
            return window
        self._last_verified = now
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

    async def _verify_dynamic(
        self, msg_id: str, timestamp: int, token: str, body: bytes, now: float
    ) -> tuple[Event, PingRecord | None] | Rejection:
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

    async def _accept(self, event: Event) -> Answer:
        if self.stream is not None:
            return await self._enqueue(event)
        memory = self.memory_dedup
        assert memory is not None  # inline mode always deduplicates in memory
        if not memory.claim(event.msg_id):
            return await self._duplicate_of_claimed(event)
        self._settling[event.msg_id] = []
        delivered = False
        try:
            rule, targets = self.targets.for_event(event, event.user_metadata)
            if not targets:
                metrics.unroutable.labels(event.source).inc()
                assert self.targets.dead_letter is not None  # the config guarantees one
                targets = [self.targets.dead_letter]
                metrics.dead_letters.labels("unroutable").inc()
                log(30, "no route matched; dead-lettering", webhook_id=event.msg_id)
            if self.tracing is not None:
                self.tracing.routed(rule, len(targets))
            delivered = await deliver_inline(self.forwarder, self.config.forwarding, event, targets)
        finally:
            if not delivered:
                memory.release(event.msg_id)
            self._settle(event.msg_id, delivered)
        if not delivered:
            self._count_failed.inc()
            return 503, _UNAVAILABLE
        metrics.end_to_end_seconds.observe(time.time() - event.received_at)
        self._count_accepted.inc()
        log(10, "event delivered", webhook_id=event.msg_id, rule=rule, targets=len(targets))
        return 200, _ACCEPTED

    def _duplicate(self, event: Event) -> Answer:
        if self.tracing is not None:
            self.tracing.duplicate()
        metrics.duplicates.labels(event.source).inc()
        self._count_duplicate.inc()
        log(10, "duplicate delivery", webhook_id=event.msg_id)
        return 200, _DUPLICATE

    async def _duplicate_of_claimed(self, event: Event) -> Answer:
        """A duplicate of an id claimed in this process: 2xx only once the first copy is
        delivered or stored; while that is under way, wait for it."""
        waiters = self._settling.get(event.msg_id)
        if waiters is None:
            return self._duplicate(event)
        outcome = asyncio.get_running_loop().create_future()
        waiters.append(outcome)
        try:
            async with asyncio.timeout(self.config.forwarding.inline_deadline_seconds + 1.0):
                settled = await outcome
        except TimeoutError:
            settled = False
        if settled:
            return self._duplicate(event)
        self._count_failed.inc()
        log(20, "duplicate of a delivery that failed; answering 503", webhook_id=event.msg_id)
        return 503, _UNAVAILABLE

    def _settle(self, msg_id: str, settled: bool) -> None:
        for waiter in self._settling.pop(msg_id, ()):
            if not waiter.done():
                waiter.set_result(settled)

    async def _enqueue(self, event: Event) -> Answer:
        assert self.stream is not None and self.durability is not None
        if not self.durability.allows_acknowledging:
            self._count_failed.inc()
            return 503, _UNAVAILABLE
        memory = self.memory_dedup
        if memory is not None:
            if not memory.claim(event.msg_id):
                return await self._duplicate_of_claimed(event)
            self._settling[event.msg_id] = []
        admitted: Admitted = "full"
        try:
            if self.tracing is None:
                admitted = await self.stream.admit(event)
            else:
                with self.tracing.enqueue(event, self.stream.config.stream) as traceparent:
                    admitted = await self.stream.admit(event, traceparent)
                    self.tracing.admitted(admitted)
            if not self.durability.allows_acknowledging:
                # This admission's own connection found the server not durable (restarted
                # or failed over without persistence): stored, but not acknowledged.
                log(40, "redis is not durable; answering 503", webhook_id=event.msg_id)
                admitted = "full"
        except _redis_failed() as error:
            log(
                40,
                "redis unavailable; answering 503",
                webhook_id=event.msg_id,
                error=type(error).__name__,
            )
        finally:
            if memory is not None:
                if admitted == "full":
                    memory.release(event.msg_id)
                self._settle(event.msg_id, admitted != "full")
        if admitted == "duplicate":
            return self._duplicate(event)
        if admitted == "full":
            self._count_failed.inc()
            return 503, _UNAVAILABLE
        self._count_accepted.inc()
        log(10, "event queued", webhook_id=event.msg_id)
        return 200, _ACCEPTED

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
            except _redis_failed(SharedPingError) as error:
                log(40, "shared ping records unreadable", error=type(error).__name__)
                return 503, _PINGS_UNAVAILABLE
        return 200, orjson.dumps({"pings": pings})


def internal_routes(receiver: Receiver) -> dict[str, tuple[Endpoint, str]]:
    return {
        "/metrics": (receiver.handle_metrics, CONTENT_TYPE_LATEST),
        "/healthz": (receiver.handle_healthz, JSON),
        "/readyz": (receiver.handle_readyz, JSON),
        PINGS_PATH: (receiver.handle_pings, JSON),
    }


@dataclass
class Running:
    receiver: Receiver
    public: asyncio.Server
    public_connections: PublicServer
    internal: asyncio.Server
    internal_connections: InternalServer
    public_port: int
    internal_port: int

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop listening, let in-flight deliveries finish (up to `drain_seconds`), close."""
        self.public.close()
        self.public_connections.close_idle()
        await self.receiver.stop(drain_seconds)
        self.public_connections.close_all()
        self.internal.close()
        self.internal_connections.close_all()
        await self.internal.wait_closed()
        if self.receiver.tracing is not None:
            await asyncio.to_thread(self.receiver.tracing.shutdown)  # the last spans out


def start_tracing() -> Tracing | None:
    """The receiver's spans when the process's `OTEL_*` environment turns tracing on
    (`gemini_webhooks.tracing`), importing OpenTelemetry only then; None otherwise.
    `TracingConfigError` for an environment asking what cannot be done."""
    if not tracing_configured(os.environ):
        return None
    from .tracing import Tracing

    return Tracing(tracer_provider(os.environ, "gemini-webhook-receiver"))


async def serve(config: ReceiverConfig, *, drain_seconds: float = 10.0) -> Running:
    """Start everything; the returned ports are the bound ones (config may say 0)."""
    tracing = start_tracing()
    receiver = Receiver(config, tracing)
    await receiver.start()
    deliver = receiver.handle_delivery
    connections = PublicServer(
        config.listen.path,
        config.limits.max_body_bytes,
        config.limits.read_timeout_seconds,
        deliver if tracing is None else tracing.deliveries(deliver),
        receiver.rejected,
        config.limits.max_connections,
    )
    loop = asyncio.get_running_loop()
    public = await loop.create_server(
        connections.protocol, config.listen.host, config.listen.port, backlog=1024
    )
    internal_connections = InternalServer(internal_routes(receiver))
    internal = await loop.create_server(
        internal_connections.protocol, config.internal.host, config.internal.port, backlog=1024
    )
    ports = [public.sockets[0].getsockname()[1], internal.sockets[0].getsockname()[1]]
    log(
        20,
        "receiver listening",
        port=ports[0],
        internal_port=ports[1],
        mode="redis" if config.redis else "inline",
        tracing=tracing is not None,
    )
    return Running(
        receiver, public, connections, internal, internal_connections, ports[0], ports[1]
    )
