"""Socket writes made during one pass of the event loop, issued back to back at its end.

A write to a peer that is waiting in `epoll_wait` wakes it; with the peer on another core
that wake-up is an inter-processor interrupt, which on a virtual machine is a trip through
the hypervisor. Written one by one as each delivery reaches its forward (or its answer),
every write wakes the peer for that one message: measured with `perf` on the benchmark,
the wake-ups were a tenth of the receiver's CPU. Queued instead and written together after
the tasks the loop is running, a batch wakes each peer once (bench/receiver, A/B: 1.25x
the deliveries per CPU second for the forwards alone).

The added latency is at most one pass of the loop: the flush is the first callback of the
next pass. A write is never reordered within a connection (one queue, in order), and a
caller that writes directly (an answer followed by closing) flushes the queue first.
"""

from __future__ import annotations

import asyncio


class WriteBatch:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[tuple[asyncio.Transport, bytes]] = []

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        if not self.items:
            self.loop.call_soon(self.flush)
        self.items.append((transport, data))

    def flush(self) -> None:
        items, self.items = self.items, []
        for transport, data in items:
            if transport.is_closing():
                continue  # closed meanwhile: its request fails by its own connection_lost
            try:
                transport.write(data)
            except Exception:
                transport.abort()
