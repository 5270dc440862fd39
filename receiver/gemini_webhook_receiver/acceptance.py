"""Taking a verified event: deduplicate it, then deliver it inline (503 so that Gemini
retries if it could not be) or store it in the Redis stream; a duplicate is acknowledged
only once the first copy is delivered or stored.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gemini_webhooks.contracts.receiver_config import ForwardingConfig

from . import metrics
from .dedup import MemoryDedup
from .delivery import Targets, deliver_inline
from .durability import DurabilityGate
from .forwarding import Event, Forwarder
from .logs import log

if TYPE_CHECKING:
    # The Redis stream only in Redis mode.
    from .redis_stream import Admitted, Stream
    from .tracing import Tracing


def redis_failed(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """What a call to Redis raises when the server cannot answer, for an `except` clause.
    Python evaluates it only once such a call has raised, so in Redis mode only, which has
    imported the Redis client already."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, *more)


Answer = tuple[int, bytes]  # status and JSON body of the public port's answer

ACCEPTED = b'{"status":"accepted"}'
DUPLICATE = b'{"status":"duplicate"}'
UNAVAILABLE = b'{"error":"unavailable","message":"not delivered; retry later"}'


class Acceptance:
    def __init__(
        self,
        forwarding: ForwardingConfig,
        targets: Targets,
        forwarder: Forwarder,
        tracing: Tracing | None,
    ) -> None:
        self.forwarding = forwarding
        self.targets = targets
        self.forwarder = forwarder
        self.tracing = tracing
        # Set at start: ids in memory (inline mode, or Redis mode with the memory
        # backend), and in Redis mode the stream and the durability gate.
        self.memory_dedup: MemoryDedup | None = None
        self.stream: Stream | None = None
        self.durability: DurabilityGate | None = None
        # Ids claimed in this process whose delivery (or enqueueing) is still under way,
        # with the duplicates waiting for its outcome: a duplicate must not be acknowledged
        # before the first copy is delivered or stored (if that fails, both get 503).
        self._settling: dict[str, list[asyncio.Future[bool]]] = {}
        self.count_accepted = metrics.deliveries.labels("accepted", "ok")
        self.count_duplicate = metrics.deliveries.labels("duplicate", "ok")
        self.count_failed = metrics.deliveries.labels("failed", "not_delivered")

    async def accept(self, event: Event) -> Answer:
        if self.stream is not None:
            return await self._enqueue(event)
        memory = self.memory_dedup
        assert memory is not None  # inline mode always deduplicates in memory
        if not memory.claim(event.msg_id):
            return await self.duplicate_of_claimed(event)
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
            delivered = await deliver_inline(self.forwarder, self.forwarding, event, targets)
        finally:
            if not delivered:
                memory.release(event.msg_id)
            self._settle(event.msg_id, delivered)
        if not delivered:
            self.count_failed.inc()
            return 503, UNAVAILABLE
        metrics.end_to_end_seconds.observe(time.time() - event.received_at)
        self.count_accepted.inc()
        log(10, "event delivered", webhook_id=event.msg_id, rule=rule, targets=len(targets))
        return 200, ACCEPTED

    def duplicate(self, event: Event) -> Answer:
        if self.tracing is not None:
            self.tracing.duplicate()
        metrics.duplicates.labels(event.source).inc()
        self.count_duplicate.inc()
        log(10, "duplicate delivery", webhook_id=event.msg_id)
        return 200, DUPLICATE

    async def duplicate_of_claimed(self, event: Event) -> Answer:
        """A duplicate of an id claimed in this process: 2xx only once the first copy is
        delivered or stored; while that is under way, wait for it."""
        waiters = self._settling.get(event.msg_id)
        if waiters is None:
            return self.duplicate(event)
        outcome = asyncio.get_running_loop().create_future()
        waiters.append(outcome)
        try:
            async with asyncio.timeout(self.forwarding.inline_deadline_seconds + 1.0):
                settled = await outcome
        except TimeoutError:
            settled = False
        if settled:
            return self.duplicate(event)
        self.count_failed.inc()
        log(20, "duplicate of a delivery that failed; answering 503", webhook_id=event.msg_id)
        return 503, UNAVAILABLE

    def _settle(self, msg_id: str, settled: bool) -> None:
        for waiter in self._settling.pop(msg_id, ()):
            if not waiter.done():
                waiter.set_result(settled)

    async def _enqueue(self, event: Event) -> Answer:
        assert self.stream is not None and self.durability is not None
        if not self.durability.allows_acknowledging:
            self.count_failed.inc()
            return 503, UNAVAILABLE
        memory = self.memory_dedup
        if memory is not None:
            if not memory.claim(event.msg_id):
                return await self.duplicate_of_claimed(event)
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
        except redis_failed() as error:
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
            return self.duplicate(event)
        if admitted == "full":
            self.count_failed.inc()
            return 503, UNAVAILABLE
        self.count_accepted.inc()
        log(10, "event queued", webhook_id=event.msg_id)
        return 200, ACCEPTED
