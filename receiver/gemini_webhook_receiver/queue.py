"""Redis mode: accept into a stream at once, deliver from a consumer group.

- `admit`: one Lua call — dedup `SET NX EX` (when dedup is in Redis), a length check (a full
  stream answers 503 rather than trimming unprocessed events), and `XADD`. The calls of
  concurrent deliveries share one round trip (a pipeline); each is answered by its own
  call's reply. With `wait_replicas`, the round trip ends with `WAIT`.
- `Consumer`: reads new entries, delivers each to its targets with retries and backoff,
  keeps the entry "touched" (XCLAIM to itself) while it waits so other replicas leave it
  alone, and reclaims (XAUTOCLAIM) entries that a crashed replica left pending.
- An entry is `XACK`ed and `XDEL`eted once every target took it; after `max_attempts` or
  `max_age_seconds` it moves to the dead-letter stream (`replay` moves it back).
Per-entry state (attempt count, targets already done) lives in a small hash beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gemini_webhooks.contracts.receiver_config import ForwardingConfig, RedisConfig

from . import metrics
from .delivery import Targets, backoff, deliver_once
from .forwarding import Event, Forwarder
from .logs import log

if TYPE_CHECKING:
    from .tracing import Tracing  # imported only when tracing is on

Admitted = Literal["accepted", "duplicate", "full"]


class NotReplicated(RedisError):
    """Fewer than `redis.wait_replicas` replicas confirmed an admission in time."""


_ADMIT = """
if ARGV[1] ~= '0' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  if ARGV[1] ~= '0' then redis.call('DEL', KEYS[2]) end
  return -1
end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
return 1
"""
# ARGV: the dedup TTL (0: none), the stream's bound, then the entry's field/value pairs.
# Among them `traceparent` only with tracing: the enqueue span's context, which the
# delivery from the stream links to.
TRACEPARENT = b"traceparent"


def event_from_fields(fields: dict[bytes, bytes]) -> Event:
    return Event(
        msg_id=fields[b"id"].decode(),
        source=fields[b"source"].decode(),
        scheme=fields[b"scheme"].decode(),
        event_type=fields[b"type"].decode(),
        envelope=fields[b"envelope"],
        claims=fields.get(b"claims", b""),
        received_at=float(fields.get(b"received_at", b"0")),
    )


def entry_age_seconds(entry_id: bytes, now: float) -> float:
    return now - int(entry_id.split(b"-", 1)[0]) / 1000.0


def entry_webhook_id(fields: dict[bytes, bytes]) -> str:
    """The `webhook-id` a stream entry carries (for logs and `replay --id`), even when the
    entry is otherwise undecodable."""
    return fields.get(b"id", b"").decode(errors="replace")


class Stream:
    def __init__(self, client: aioredis.Redis, config: RedisConfig, dedup_ttl: int | None):
        # redis-py's annotations model every reply as `bytes | str | None` unions (they
        # depend on decode_responses); we never decode, so replies are handled as bytes.
        self.client: Any = client
        self.config = config
        self._dedup_ttl = dedup_ttl  # None: dedup is done elsewhere (memory backend)
        self._admit = client.register_script(_ADMIT)
        # Admits waiting for the next round trip, and whether one is under way.
        self._admitting: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._admit_task: asyncio.Task[None] | None = None

    def state_key(self, entry_id: bytes | str) -> str:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return f"{self.config.stream}:state:{eid}"

    async def admit(self, event: Event, traceparent: str | None = None) -> Admitted:
        """Run the accept script for this event; raises RedisError/OSError when Redis
        fails (nothing may then be acknowledged).

        Deliveries arriving while a round trip is under way are sent together in the next
        one: under load most of redis-py's per-command cost (connection checkout, timers,
        a read per reply) is paid once per batch instead of once per delivery. Each call
        stays its own atomic script run with its own reply.
        """
        call = [
            2,
            self.config.stream,
            self.config.dedup_key_prefix + event.msg_id,
            self._dedup_ttl or 0,
            self.config.stream_maxlen,
            "id",
            event.msg_id,
            "source",
            event.source,
            "scheme",
            event.scheme,
            "type",
            event.event_type,
            "envelope",
            event.envelope,
            "claims",
            event.claims,
            "received_at",
            repr(event.received_at),
        ]
        if traceparent is not None:
            call += [TRACEPARENT, traceparent]
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._admitting.append((call, reply))
        if self._admit_task is None:
            self._admit_task = asyncio.create_task(self._admit_batches())
        result = await reply
        return "accepted" if result == 1 else "duplicate" if result == 0 else "full"

    async def _admit_batches(self) -> None:
        try:
            while self._admitting:
                batch, self._admitting = self._admitting, []
                try:
                    results = await self._run_admits([call for call, _ in batch])
                except Exception as error:
                    results = [error] * len(batch)
                except BaseException:
                    for _, reply in batch:
                        reply.cancel()
                    raise
                for (_, reply), result in zip(batch, results, strict=True):
                    if reply.done():
                        continue
                    if isinstance(result, BaseException):
                        reply.set_exception(result)
                    else:
                        reply.set_result(result)
        finally:
            self._admit_task = None
            for _, reply in self._admitting:  # only left here when cancelled
                reply.cancel()
            self._admitting = []

    async def _run_admits(self, calls: list[list[Any]], load: bool = True) -> list[Any]:
        """One pipeline of EVALSHAs (no transaction: each script is atomic by itself);
        replies in order, a failed call's as its exception. A script Redis does not know
        (restarted, flushed) is loaded and those calls, which did not run, are sent again.

        With `wait_replicas`, the pipeline ends with a `WAIT` — on the same connection, so
        it covers these writes; should fewer replicas confirm them in time, every reply of
        the batch becomes `NotReplicated` (nothing of it may be acknowledged)."""
        sha = self._admit.sha
        replicas = self.config.wait_replicas
        async with self.client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(sha, *call)
            if replicas:
                pipe.execute_command("WAIT", replicas, int(self.config.wait_timeout_seconds * 1000))
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if replicas:
            confirmed = results.pop()
            if isinstance(confirmed, BaseException):
                results = [confirmed] * len(results)
            elif confirmed < replicas:
                shortfall = NotReplicated(
                    f"{confirmed} of {replicas} replicas confirmed the write in time"
                )
                results = [r if isinstance(r, BaseException) else shortfall for r in results]
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing and load:
            await self.client.script_load(_ADMIT)
            again = await self._run_admits([calls[i] for i in missing], load=False)
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(
                self.config.stream, self.config.consumer_group, id="0", mkstream=True
            )
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        cfg = self.config
        attempts = await self.client.hget(self.state_key(entry_id), "attempts")
        record: dict[str, bytes | str] = {k.decode(): v for k, v in fields.items()}
        record.update(
            {
                "reason": reason,
                "attempts": attempts or b"0",
                "original_entry": entry_id,
                "dead_at": repr(time.time()),
            }
        )
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(cfg.dead_letter_stream, record)
            pipe.xack(cfg.stream, cfg.consumer_group, entry_id)
            pipe.xdel(cfg.stream, entry_id)
            pipe.delete(self.state_key(entry_id))
            await pipe.execute()
        metrics.dead_letters.labels(reason).inc()
        log(30, "event dead-lettered", webhook_id=entry_webhook_id(fields), reason=reason)

    async def complete(self, entry_id: bytes) -> None:
        cfg = self.config
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(cfg.stream, cfg.consumer_group, entry_id)
            pipe.xdel(cfg.stream, entry_id)
            pipe.delete(self.state_key(entry_id))
            await pipe.execute()

    async def replay(self, ids: set[str] | None, since: float | None = None) -> int:
        """Move dead letters (all, or those with these webhook-ids; all, or those
        dead-lettered at or after `since`) back to the stream. A dead letter's entry id is
        the Redis server's time of dead-lettering, in milliseconds."""
        cfg = self.config
        moved = 0
        cursor = "-" if since is None else f"{math.floor(since * 1000)}-0"
        while True:
            batch = await self.client.xrange(cfg.dead_letter_stream, min=cursor, count=100)
            if not batch:
                return moved
            for entry_id, fields in batch:
                if ids is None or entry_webhook_id(fields) in ids:
                    original = {
                        k: v
                        for k, v in fields.items()
                        if k not in (b"reason", b"attempts", b"original_entry", b"dead_at")
                    }
                    async with self.client.pipeline(transaction=True) as pipe:
                        pipe.xadd(cfg.stream, original)
                        pipe.xdel(cfg.dead_letter_stream, entry_id)
                        await pipe.execute()
                    moved += 1
            cursor = "(" + batch[-1][0].decode()

    async def update_gauges(self) -> None:
        cfg = self.config
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.xlen(cfg.stream)
            pipe.xrange(cfg.stream, count=1)
            pipe.xlen(cfg.dead_letter_stream)
            depth, oldest, dead = await pipe.execute()
        metrics.queue_depth.set(depth)
        metrics.queue_lag_seconds.set(
            max(entry_age_seconds(oldest[0][0], time.time()), 0.0) if oldest else 0.0
        )
        metrics.dead_letter_depth.set(dead)


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
