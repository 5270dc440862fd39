"""WriteBatch: writes queued in one loop pass go out together, in order, and one broken
transport does not hold up the others. Real loopback connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gemini_webhook_receiver.writes import WriteBatch


@pytest.fixture
async def pairs() -> AsyncIterator[list[tuple[asyncio.Transport, asyncio.StreamReader]]]:
    """Three connections: our side's transport, and a reader on the peer's side."""
    peers: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peers.put(reader)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    made = []
    writers = []  # kept referenced: a collected StreamWriter closes its transport
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        made.append((writer.transport, await peers.get()))
    yield made  # type: ignore[misc]
    for transport, _ in made:
        transport.close()
    server.close()


async def test_writes_wait_for_the_end_of_the_pass_and_keep_their_order(pairs) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    batch = WriteBatch(loop)
    (a, a_peer), (b, b_peer), _ = pairs
    batch.write(a, b"a1 ")
    batch.write(b, b"b1 ")
    batch.write(a, b"a2 ")
    assert len(batch.items) == 3  # nothing written yet
    await asyncio.sleep(0)  # the pass ends; the flush runs
    assert batch.items == []
    assert await asyncio.wait_for(a_peer.readexactly(6), 2) == b"a1 a2 "
    assert await asyncio.wait_for(b_peer.readexactly(3), 2) == b"b1 "


async def test_a_flush_before_a_direct_write_keeps_the_order(pairs) -> None:  # type: ignore[no-untyped-def]
    batch = WriteBatch(asyncio.get_running_loop())
    (a, a_peer), _, _ = pairs
    batch.write(a, b"queued ")
    batch.flush()
    a.write(b"direct")
    assert await asyncio.wait_for(a_peer.readexactly(13), 2) == b"queued direct"
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    a.close()
    assert await asyncio.wait_for(a_peer.read(), 2) == b""


async def test_closed_and_broken_transports_are_skipped_and_the_rest_written(pairs) -> None:  # type: ignore[no-untyped-def]
    batch = WriteBatch(asyncio.get_running_loop())
    (closed, closed_peer), (broken, broken_peer), (fine, fine_peer) = pairs
    batch.write(closed, b"never")
    batch.write(broken, b"refused")
    batch.write(fine, b"delivered")
    closed.close()
    broken.write_eof()  # a write after EOF raises: the flush aborts that transport
    batch.flush()
    assert await asyncio.wait_for(fine_peer.readexactly(9), 2) == b"delivered"
    assert await asyncio.wait_for(closed_peer.read(), 2) == b""
    assert await asyncio.wait_for(broken_peer.read(), 2) == b""
    assert broken.is_closing()
