"""`kube_get.get`, the receiver's streaming GET to the API server, cancelled while its
answer streams in: the cancellation always ends the read (a receiver's Secret watch stops
when the receiver does)."""

from __future__ import annotations

import asyncio
import contextlib
import random

from aiohttp import web

from gemini_webhook_receiver import kube_get
from gemini_webhooks.kube_access import ClusterAccess

from .conftest import start_app


async def test_a_read_cancelled_in_the_turn_it_completes_is_still_cancelled() -> None:
    """Python 3.11's `asyncio.wait_for` returned a read that completed in the same turn
    as the task's cancellation and dropped the cancellation: the Secret watch went on
    reading, and the receiver's `stop()` waited for the read timeout (310 s; seen once in
    CI). The server streams without pause, so a read completes in nearly every turn; each
    trial cancels at another moment. A lost cancellation shows as a read that ends
    normally once the server ends the stream."""
    streaming = asyncio.Event()
    ending = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while not ending.is_set():
                await response.write(b'{"type": "BOOKMARK"}\n' * 20)
                streaming.set()
                await asyncio.sleep(0)
            await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/stream", handle)
    runner, port = await start_app(app)
    access = ClusterAccess(server=f"http://127.0.0.1:{port}")

    async def read_all() -> int:
        received = 0
        async with kube_get.get(access, False, "/stream", connect_timeout=5, read_timeout=30) as (
            status,
            body,
        ):
            assert status == 200
            async for chunk in body:
                received += len(chunk)
        return received

    try:
        for trial in range(40):
            streaming.clear()
            ending.clear()
            reading = asyncio.create_task(read_all())
            await streaming.wait()
            await asyncio.sleep(random.uniform(0, 0.004))
            reading.cancel()
            await asyncio.sleep(0.02)
            ending.set()  # a reader that lost its cancellation now ends normally
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            assert reading.cancelled(), f"trial {trial}: the cancellation was lost"
    finally:
        ending.set()
        await runner.cleanup()
