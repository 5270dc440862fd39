"""The forwarding client's response framing, against raw servers that answer canned bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from gemini_webhook_receiver.http11 import ConnectionBroken, PlainHttp, Pool, encode_request

Serve = Callable[[list[bytes]], "asyncio.Future[int]"]


@pytest.fixture
async def canned() -> AsyncIterator[Callable[[list[bytes]], asyncio.Future[int]]]:
    servers: list[asyncio.Server] = []
    tasks: list[asyncio.Future[None]] = []

    def start(answers: list[bytes]) -> asyncio.Future[int]:
        """Serve `answers` in turn, one per request; b"" closes the connection."""
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                answer = answers.pop(0)
                if not answer:
                    break
                writer.write(answer)
                await writer.drain()
                if answer.startswith(b"HTTP/1.0"):
                    break  # HTTP/1.0 without a length: the close ends the body
            writer.close()

        async def run() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            servers.append(server)
            port.set_result(server.sockets[0].getsockname()[1])

        tasks.append(asyncio.ensure_future(run()))
        return port

    yield start
    for server in servers:
        server.close()


async def _post(pool: Pool, port: int, seconds: float = 5.0) -> int:
    to = PlainHttp("127.0.0.1", port, b"127.0.0.1:%d" % port, b"/x")
    return await pool.post(to, {"content-type": "application/json"}, b"{}", seconds)


async def test_content_length_response_and_keep_alive_reuse(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"] * 2)
    pool = Pool(4)
    assert [await _post(pool, port), await _post(pool, port)] == [200, 200]
    pool.close()


async def test_chunked_response_with_trailers(canned) -> None:  # type: ignore[no-untyped-def]
    body = (
        b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"
    )
    port = await canned([body, body])
    pool = Pool(4)
    assert [await _post(pool, port), await _post(pool, port)] == [202, 202]
    pool.close()


async def test_interim_100_continue_is_skipped(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"])
    assert await _post(Pool(1), port) == 204


async def test_body_until_close_for_http_1_0(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"HTTP/1.0 500 Oops\r\n\r\nsomething broke"])
    assert await _post(Pool(1), port) == 500


async def test_connection_closed_by_the_server_is_not_reused(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"])
    pool = Pool(2)
    assert await _post(pool, port) == 200
    with pytest.raises(ConnectionBroken):
        await _post(pool, port)  # a new connection, which this server no longer answers


async def test_garbage_response_fails_the_attempt(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"SMTP ready\r\n\r\n"])
    with pytest.raises(ConnectionBroken):
        await _post(Pool(1), port)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 12\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\ncontent-length: 0\n\n",
        b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header: 1\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n",
    ],
)
async def test_an_answer_whose_framing_is_ambiguous_or_invalid_is_a_failed_forward(  # type: ignore[no-untyped-def]
    canned, answer: bytes
) -> None:
    """Not a guess at which length the target meant: a 2xx read wrongly could be success
    for an event the target never took, and leave bytes that poison the next forward."""
    port = await canned([answer])
    with pytest.raises(ConnectionBroken):
        await _post(Pool(1), port)


async def test_a_body_cut_short_by_a_close_is_a_failed_forward(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"])
    with pytest.raises(ConnectionBroken):
        await _post(Pool(1), port)


async def test_a_chunked_body_cut_short_by_a_close_is_a_failed_forward(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"])
    with pytest.raises(ConnectionBroken):
        await _post(Pool(1), port)


async def test_a_head_that_never_ends_fails_the_forward(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"HTTP/1.1 200 OK\r\nx-endless: " + b"a" * (200 * 1024)])
    with pytest.raises(ConnectionBroken):
        await _post(Pool(1), port)


async def test_bytes_after_the_answer_make_the_connection_unusable(canned) -> None:  # type: ignore[no-untyped-def]
    extra = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    port = await canned([b"HTTP/1.1 204 No Content\r\n\r\n" + extra, extra])
    pool = Pool(1)
    assert await _post(pool, port) == 204
    assert pool._idle[("127.0.0.1", port)] == []  # not kept: its next answer is not ours


async def test_a_body_without_a_length_ends_with_the_close_also_in_http_1_1(canned) -> None:  # type: ignore[no-untyped-def]
    port = await canned([b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: gzip\r\n\r\nabc"])
    assert await _post(Pool(1), port) == 202


def test_header_values_with_line_breaks_are_refused() -> None:
    for value in ("a\r\nx-evil: 1", "a\nx-evil: 1", "a\rb", "a\0b"):
        with pytest.raises(ValueError, match="line break"):
            encode_request(b"h", b"/", {"x-ok": "1", "x-gemini-event-type": value}, b"")
    assert encode_request(b"h:1", b"/p", {"host": "evil", "x-a": "\u00e9"}, b"{}") == (
        b"POST /p HTTP/1.1\r\nhost: h:1\r\ncontent-length: 2\r\nx-a: \xc3\xa9\r\n\r\n{}"
    )


async def test_timeout_bounds_a_target_that_never_answers_and_the_connection_is_dropped() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await _post(pool, port, seconds=0.2)
    assert 0.15 < loop.time() - started < 1.0
    assert pool._idle[("127.0.0.1", port)] == []  # not kept for reuse
    # The slot was given back: the next attempt is bounded the same way, not stuck.
    with pytest.raises(TimeoutError):
        await _post(pool, port, seconds=0.2)
    server.close()
    for writer in accepted:
        writer.close()


async def test_timeout_bounds_waiting_for_a_free_connection_slot() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(1)
    holder = asyncio.create_task(_post(pool, port, seconds=5))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await _post(pool, port, seconds=0.2)  # the only slot is taken
    assert loop.time() - started < 1.0
    release.set()
    assert await holder == 200
    server.close()


async def test_timeout_bounds_connecting() -> None:
    """A listener whose accept queue is full: the kernel drops our SYN, connect hangs."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue (never accepted)
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await _post(Pool(1), port, seconds=0.3)
    assert loop.time() - started < 1.5
    for sock in [*fillers, listener]:
        sock.close()


async def test_each_request_on_a_kept_alive_connection_has_its_own_deadline() -> None:
    """One lazy timer per connection: a later request with a shorter deadline, a request
    after the timer fired with nothing under way, and one whose deadline lies past the
    timer of the previous request are each bounded by their own deadline."""
    delays = [0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.4, 2.0]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while delays:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await asyncio.sleep(delays.pop(0))
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(1)
    loop = asyncio.get_running_loop()

    async def timed(seconds: float) -> tuple[int | str, float]:
        started = loop.time()
        try:
            status: int | str = await _post(pool, port, seconds)
        except TimeoutError:
            status = "timeout"
        return status, loop.time() - started

    assert (await timed(5.0))[0] == 204  # arms a timer 5 s out
    assert (await timed(5.0))[0] == 204
    status, took = await timed(0.2)  # shorter than the timer already set: re-armed
    assert status == "timeout" and took < 0.6
    assert (await timed(0.3))[0] == 204  # a fresh connection (the timed-out one closed)
    await asyncio.sleep(0.4)  # its timer fires with nothing under way
    status, took = await timed(0.2)
    assert status == "timeout" and took < 0.6
    assert (await timed(0.3))[0] == 204  # timer set 0.3 s out, kept...
    status, took = await timed(0.6)  # ...fires early, re-arms, answer at 0.4 s arrives
    assert (status, took > 0.35) == (204, True)
    status, took = await timed(0.5)  # and then bounds the next one
    assert status == "timeout" and took < 0.9
    server.close()
    pool.close()
