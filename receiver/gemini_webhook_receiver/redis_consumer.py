"""Redis mode's consumer: delivers the stream's entries (`redis_stream.py`) from a consumer
group.

- `Consumer`: reads new entries, delivers each to its targets with retries and backoff,
  keeps the entry "touched" (XCLAIM to itself) while it waits so other replicas leave it
  alone, and reclaims (XAUTOCLAIM) entries that a crashed replica left pending.
- `Acker`: acknowledges delivered entries in batches (XACK + XDEL); one that fails to is
  delivered again later, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from gemini_webhooks.contracts.receiver_config import ForwardingConfig

from . import metrics
from .delivery import Targets, backoff, deliver_once
from .forwarding import Event, Forwarder
from .logs import log

if TYPE_CHECKING:
    from .tracing import Tracing  # imported only when tracing is on

from .redis_stream import (
    TRACEPARENT,
    Stream,
    entry_age_seconds,
    entry_webhook_id,
    event_from_fields,
)


class Acker:
    """Acknowledges delivered entries in batches: one XACK + XDEL per few milliseconds
    instead of one transaction per event. A crash before the flush means those entries
    are delivered again (at least once, same idempotency key), never lost."""

    def __init__(self, stream: Stream, delay: float = 0.005, batch: int = 128) -> None:
        self._stream = stream
        self._delay = delay
        self._batch = batch
        self._ids: list[bytes] = []
        self._flushing: asyncio.Task[None] | None = None

    def add(self, entry_id: bytes) -> None:
        self._ids.append(entry_id)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._delay)
        await self.flush()

    async def flush(self) -> None:
        while self._ids:
            ids, self._ids = self._ids[: self._batch], self._ids[self._batch :]
            cfg = self._stream.config
            try:
                async with self._stream.client.pipeline(transaction=True) as pipe:
                    pipe.xack(cfg.stream, cfg.consumer_group, *ids)
                    pipe.xdel(cfg.stream, *ids)
                    await pipe.execute()
            except (RedisError, OSError) as error:
                # Still pending: reclaimed and delivered again later (at least once).
                log(40, "acknowledgement failed", error=type(error).__name__, entries=len(ids))


class Consumer:
    def __init__(
        self,
        stream: Stream,
        targets: Targets,
        forwarding: ForwardingConfig,
        forwarder: Forwarder,
        tracing: Tracing | None = None,
    ) -> None:
        self.stream = stream
        self._tracing = tracing
        self.cfg = stream.config
        self.targets = targets
        self.forwarding = forwarding
        self._forwarder = forwarder
        self.name = self.cfg.consumer_name or socket.gethostname()
        self._slots = asyncio.Semaphore(self.cfg.concurrency)
        self._working: set[asyncio.Task[None]] = set()
        self._active: set[bytes] = set()
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._acker = Acker(stream)

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._read_loop(), name="stream-read"),
            asyncio.create_task(self._reclaim_loop(), name="stream-reclaim"),
            asyncio.create_task(self._gauge_loop(), name="stream-gauges"),
        ]

    async def stop(self, drain_seconds: float) -> None:
        """Stop reading; let in-flight deliveries finish (those that don't stay pending)."""
        self._stopping.set()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._working:
            _, still = await asyncio.wait(self._working, timeout=drain_seconds)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        await self._acker.flush()

    async def _guarded(self, what: str, body: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping.is_set():
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                log(40, f"{what} failed; retrying", error=type(error).__name__)
                await asyncio.sleep(1.0)

    async def _read_loop(self) -> None:
        async def own_pending_then_new() -> None:
            # First our own pending entries (we restarted under the same name), then new.
            await self.stream.ensure_group()
            start = "0"
            while not self._stopping.is_set():
                await self._slots.acquire()
                self._slots.release()
                reply = await self.stream.client.xreadgroup(
                    self.cfg.consumer_group,
                    self.name,
                    {self.cfg.stream: start},
                    count=self.cfg.concurrency,
                    block=None if start == "0" else 1000,
                )
                entries = reply[0][1] if reply else []
                if start == "0" and not entries:
                    start = ">"
                    continue
                for entry_id, fields in entries:
                    if fields:
                        await self._spawn(entry_id, fields, fresh=start == ">")
                if start == "0":
                    start = ">"  # own pending handed out; the reclaim loop catches the rest

        await self._guarded("stream read", own_pending_then_new)

    async def _reclaim_loop(self) -> None:
        idle_ms = int(self.cfg.claim_idle_seconds * 1000)

        async def reclaim() -> None:
            while not self._stopping.is_set():
                await asyncio.sleep(min(self.cfg.claim_idle_seconds / 2, 5.0))
                cursor = "0-0"
                while True:
                    reply = await self.stream.client.xautoclaim(
                        self.cfg.stream,
                        self.cfg.consumer_group,
                        self.name,
                        idle_ms,
                        start_id=cursor,
                        count=100,
                    )
                    cursor, claimed = reply[0], reply[1]
                    for entry_id, fields in claimed:
                        if entry_id in self._active:
                            continue
                        if not fields:  # deleted meanwhile
                            await self.stream.complete(entry_id)
                            continue
                        log(
                            20,
                            "reclaimed pending entry",
                            webhook_id=entry_webhook_id(fields),
                            entry=entry_id.decode(),
                        )
                        await self._spawn(entry_id, fields)
                    if cursor in (b"0-0", "0-0"):
                        break

        await self._guarded("stream reclaim", reclaim)

    async def _gauge_loop(self) -> None:
        async def gauges() -> None:
            while not self._stopping.is_set():
                await self.stream.update_gauges()
                await asyncio.sleep(1.0)

        await self._guarded("queue gauges", gauges)

    async def _spawn(
        self, entry_id: bytes, fields: dict[bytes, bytes], *, fresh: bool = False
    ) -> None:
        """Deliver in a task; `fresh`: read for the first time, so it has no state yet."""
        await self._slots.acquire()
        self._active.add(entry_id)
        task = asyncio.create_task(self._deliver(entry_id, fields, fresh))
        self._working.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._working.discard(t)
            self._active.discard(entry_id)
            self._slots.release()

        task.add_done_callback(done)

    async def _touch(self, entry_id: bytes) -> None:
        await self.stream.client.xclaim(
            self.cfg.stream, self.cfg.consumer_group, self.name, 0, [entry_id], justid=True
        )

    async def _wait(self, entry_id: bytes, delay: float) -> None:
        keepalive = max(self.cfg.claim_idle_seconds / 3, 0.05)
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, keepalive))
            await self._touch(entry_id)

    async def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes], fresh: bool) -> None:
        try:
            event = event_from_fields(fields)
            envelope = orjson.loads(event.envelope)
        except (KeyError, ValueError, UnicodeDecodeError) as error:
            log(
                40,
                "entry cannot be decoded",
                webhook_id=entry_webhook_id(fields),
                entry=entry_id.decode(),
                error=type(error).__name__,
            )
            await self.stream.dead_letter(entry_id, fields, "undecodable")
            return
        try:
            if self._tracing is None:
                await self._deliver_entry(entry_id, fields, event, envelope, fresh)
            else:
                with self._tracing.from_stream(event, fields.get(TRACEPARENT)):
                    await self._deliver_entry(entry_id, fields, event, envelope, fresh)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Left pending: the reclaim loop (ours or another replica's) retries it, and
            # the attempt limit still applies.
            log(
                40,
                "delivery interrupted",
                webhook_id=event.msg_id,
                entry=entry_id.decode(),
                error=type(error).__name__,
            )

    def _delivered(self, event: Event, rule: str | None, targets: int, attempts: int) -> None:
        if event.received_at:
            metrics.end_to_end_seconds.observe(max(time.time() - event.received_at, 0))
        log(
            10,
            "event delivered",
            webhook_id=event.msg_id,
            rule=rule,
            targets=targets,
            attempts=attempts,
        )

    async def _deliver_entry(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        event: Event,
        envelope: Any,
        fresh: bool,
    ) -> None:
        rule, targets = self.targets.for_event(event, envelope.get("user_metadata"))
        if self._tracing is not None:
            self._tracing.routed(rule, len(targets))
        if not targets:
            metrics.unroutable.labels(event.source).inc()
            await self.stream.dead_letter(entry_id, fields, "unroutable")
            return
        state_key = self.stream.state_key(entry_id)
        client = self.stream.client
        if fresh:
            # The common case in one round trip to Redis: deliver, then ack and delete.
            # State (attempts, targets done) is written only once an attempt fails.
            failed = await deliver_once(
                self._forwarder, event, targets, self.forwarding.timeout_seconds
            )
            if not failed:
                self._acker.add(entry_id)
                self._delivered(event, rule, len(targets), 1)
                return
            async with client.pipeline(transaction=False) as pipe:
                pipe.hincrby(state_key, "attempts", 1)
                for target in targets:
                    if target not in failed:
                        pipe.hset(state_key, f"done:{target.name}", 1)
                pipe.expire(state_key, int(self.cfg.max_age_seconds) + 86400)
                await pipe.execute()
            if self._stopping.is_set():
                return
            await self._wait(entry_id, backoff(self.forwarding, 1))
        while True:
            state = await client.hgetall(state_key)
            done = {k[5:].decode() for k in state if k.startswith(b"done:")}
            pending = [t for t in targets if t.name not in done]
            attempts = int(state.get(b"attempts", b"0"))
            age = entry_age_seconds(entry_id, time.time())
            if pending and attempts >= self.cfg.max_attempts:
                await self.stream.dead_letter(entry_id, fields, "max_attempts")
                return
            if pending and age > self.cfg.max_age_seconds:
                await self.stream.dead_letter(entry_id, fields, "max_age")
                return
            if pending:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.hincrby(state_key, "attempts", 1)
                    pipe.expire(state_key, int(self.cfg.max_age_seconds) + 86400)
                    await pipe.execute()
                failed = await deliver_once(
                    self._forwarder, event, pending, self.forwarding.timeout_seconds
                )
                succeeded = [t for t in pending if t not in failed]
                if succeeded:
                    await client.hset(state_key, mapping={f"done:{t.name}": 1 for t in succeeded})
                pending = failed
            if not pending:
                await self.stream.complete(entry_id)
                self._delivered(event, rule, len(targets), attempts + 1)
                return
            if self._stopping.is_set():
                return  # stays pending; whoever runs next reclaims it
            await self._wait(entry_id, backoff(self.forwarding, attempts + 1))
