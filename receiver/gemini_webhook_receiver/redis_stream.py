"""Redis mode's stream: accept into it at once (`admit`), and what the consumer, the replay
and the gauges do to its entries.

- `admit`: one Lua call — dedup `SET NX EX` (when dedup is in Redis), a length check (a full
  stream answers 503 rather than trimming unprocessed events), and `XADD`. The calls of
  concurrent deliveries share one round trip (a pipeline); each is answered by its own
  call's reply. With `wait_replicas`, the round trip ends with `WAIT`.
- An entry is `XACK`ed and `XDEL`eted once every target took it (`complete`, or the
  consumer's batched acknowledgements); after `max_attempts` or `max_age_seconds` it moves
  to the dead-letter stream (`replay` moves it back).
Per-entry state (attempt count, targets already done) lives in a small hash beside it.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gemini_webhooks.contracts.receiver_config import RedisConfig

from . import metrics
from .forwarding import Event
from .logs import log

if TYPE_CHECKING:
    pass  # imported only when tracing is on

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
