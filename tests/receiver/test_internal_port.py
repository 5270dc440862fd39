"""The internal port (metrics, health, readiness, ping status) as HTTP/1.1 clients see it:
raw requests on one connection, answered in order, refused with a status when malformed or
unbounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gemini_webhook_receiver import internal

from .conftest import Client, StartReceiver, base_config


@pytest.fixture
async def client(start_receiver: StartReceiver, secrets_file: tuple[Path, str]) -> Client:
    return await start_receiver(base_config("http://127.0.0.1:9/events", secrets_file[0]))


async def _exchange(client: Client, raw: bytes, answers: int = 1) -> list[bytes]:
    """Sends `raw` on a new connection; the heads (and bodies) of `answers` answers, or
    fewer when the server closes first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.running.internal_port)
    try:
        writer.write(raw)
        got = []
        for _ in range(answers):
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except asyncio.IncompleteReadError:
                break
            length = int(
                next(
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            body = b"" if raw.startswith(b"HEAD") else await reader.readexactly(length)
            got.append(head + body)
        return got
    finally:
        writer.close()


def _get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: receiver", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def test_pipelined_requests_on_one_connection_are_answered_in_order(client: Client) -> None:
    raw = _get("/healthz") + _get("/readyz") + _get("/metrics")
    healthz, readyz, metrics = await _exchange(client, raw, answers=3)
    assert healthz.startswith(b"HTTP/1.1 200 OK\r\n") and healthz.endswith(b'{"status":"ok"}')
    assert b'"ready":true' in readyz
    assert b"text/plain" in metrics and b"gemini_receiver_deliveries_total" in metrics


async def test_head_answers_the_get_head_without_its_body(client: Client) -> None:
    raw = b"HEAD /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n"
    [answer] = await _exchange(client, raw)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 15\r\n" in answer.lower()
    assert answer.endswith(b"\r\n\r\n")


async def test_an_unknown_path_is_404_and_a_query_string_is_not_part_of_the_path(
    client: Client,
) -> None:
    missing, found = await _exchange(client, _get("/nothing") + _get("/healthz?x=1"), 2)
    assert missing.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert found.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_another_method_is_405_naming_get_and_head(client: Client) -> None:
    raw = b"POST /metrics HTTP/1.1\r\nHost: receiver\r\nContent-Length: 2\r\n\r\n{}"
    [answer] = await _exchange(client, raw)
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Allow: GET, HEAD\r\n" in answer


async def test_connection_close_is_honoured(client: Client) -> None:
    answers = await _exchange(client, _get("/healthz", "Connection: close") + _get("/healthz"), 2)
    assert len(answers) == 1 and b"connection: close\r\n" in answers[0].lower()


async def test_a_malformed_request_is_400_and_closes(client: Client) -> None:
    answers = await _exchange(client, b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", 2)
    assert len(answers) == 1 and answers[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_a_head_over_the_limit_is_431(client: Client) -> None:
    raw = _get("/healthz", "X-Filler: " + "a" * internal.MAX_HEAD_BYTES)
    [answer] = await _exchange(client, raw)
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_a_header_line_that_never_ends_is_431(client: Client) -> None:
    raw = b"GET /healthz HTTP/1.1\r\nX-Filler: " + b"a" * (internal.MAX_HEAD_BYTES + 1)
    [answer] = await _exchange(client, raw)
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_a_chunked_body_without_end_is_413(client: Client) -> None:
    chunk = b"%x\r\n%s\r\n" % (4096, b"x" * 4096)
    raw = _get("/healthz", "Transfer-Encoding: chunked") + chunk * 25
    [answer] = await _exchange(client, raw)
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_a_body_over_the_limit_is_413(client: Client) -> None:
    size = internal.MAX_BODY_BYTES + 1
    raw = _get("/healthz", f"Content-Length: {size}") + b"x" * size
    [answer] = await _exchange(client, raw)
    assert answer.startswith(b"HTTP/1.1 413 ")


async def _closed_after(client: Client, raw: bytes, answer: bytes) -> None:
    """Sends `raw`, reads `answer` (if any), then waits for the server to close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.running.internal_port)
    try:
        writer.write(raw)
        if answer:
            await reader.readuntil(answer)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing more
    finally:
        writer.close()


async def test_a_request_left_unfinished_is_closed_after_the_read_timeout(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client.running.internal_connections, "read_timeout", 0.2)
    await _closed_after(client, b"GET /healthz HTTP/1.1\r\nHost: rec", b"")


async def test_an_idle_keep_alive_connection_is_closed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client.running.internal_connections, "idle_timeout", 0.2)
    await _closed_after(client, _get("/healthz"), b'{"status":"ok"}')


async def test_an_http_1_1_request_without_host_is_400_and_closes(client: Client) -> None:
    answers = await _exchange(client, b"GET /healthz HTTP/1.1\r\n\r\n" + _get("/healthz"), 2)
    assert len(answers) == 1 and answers[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_expect_100_continue_is_answered_before_the_body(client: Client) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.running.internal_port)
    try:
        writer.write(_get("/healthz", "Content-Length: 2", "Expect: 100-continue"))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        writer.close()


async def test_a_body_that_stops_coming_is_408(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client.running.internal_connections, "read_timeout", 0.2)
    raw = _get("/healthz", "Content-Length: 10") + b"{}"
    [answer] = await _exchange(client, raw)
    assert answer.startswith(b"HTTP/1.1 408 ")
