"""The public port's HTTP/1.1 (public.py): framing, keep-alive, pipelining, bounds, shutdown.

Raw sockets, so that what is on the wire is exactly what a test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemini_webhook_receiver.http1 import MAX_PIPELINED
from gemini_webhook_receiver.http1_messages import host_is_acceptable, target_path, valid_host
from gemini_webhook_receiver.public import MAX_HEAD_BYTES, PublicServer

from .conftest import (
    Client,
    RecordingTarget,
    StartReceiver,
    base_config,
    envelope,
    new_secret,
    signed_headers,
    start_app,
)

_LISTEN = {"host": "127.0.0.1", "port": 0}


def _request(
    secret: str,
    *,
    version: str = "1.1",
    extra: str = "",
    target: str = "/",
    host: str | None = "r",
) -> tuple[bytes, str]:
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    host_field = "" if host is None else f"host: {host}\r\n"
    raw = (
        f"POST {target} HTTP/{version}\r\n{host_field}content-length: {len(body)}\r\n"
        f"{head}{extra}\r\n"
    ).encode() + body
    return raw, headers["webhook-id"]


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, body


async def _closed(reader: asyncio.StreamReader, within: float = 5) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except ConnectionError:
        return True


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_keep_alive_pipelining_and_answers_in_order(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    # More pipelined requests than are read ahead at once: reading pauses and resumes.
    requests = [_request(secret) for _ in range(MAX_PIPELINED * 3)]
    writer.write(b"".join(raw for raw, _ in requests))
    await writer.drain()
    for _ in requests:
        status, headers, body = await _answer(reader)
        assert (status, json.loads(body)) == (200, {"status": "accepted"})
        assert headers["content-type"] == "application/json"
        assert "connection" not in headers  # kept alive
        assert "date" in headers
    assert target.ids() == [msg_id for _, msg_id in requests]
    # ... and the connection still serves requests afterwards.
    writer.write(_request(secret)[0])
    assert (await _answer(reader))[0] == 200
    writer.close()


async def test_pipelined_answers_keep_their_order_up_to_a_closing_one(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """Kept-alive answers are batched (writes.py), a closing one is written at once: the
    batched ones still come first."""
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    requests = [_request(secret) for _ in range(5)]
    requests.append(_request(secret, extra="connection: close\r\n"))
    writer.write(b"".join(raw for raw, _ in requests))
    await writer.drain()
    answers = [await _answer(reader) for _ in requests]
    assert [status for status, _, _ in answers] == [200] * 6
    assert [headers.get("connection") for _, headers, _ in answers] == [None] * 5 + ["close"]
    assert await _closed(reader)
    assert target.ids() == [msg_id for _, msg_id in requests]
    writer.close()


async def test_an_absolute_form_target_is_served_like_its_path(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """RFC 9112 §3.2.2: a server must accept the absolute form (what a client talking to a
    proxy sends); its path and query are what route it."""
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path, listen={**_LISTEN, "path": "/in"}))
    answers = {}
    for request_target in (
        "/in",
        "http://r/in",
        "HTTP://receiver.example:8080/in?from=proxy",
        "https://r/in",
        "http://r/in/",
        "http://r/",
        "http://r",
        "http://r/other/in",
        "ftp://r/in",
    ):
        reader, writer = await _connect(client.running.public_port)  # a 404 closes it
        writer.write(_request(secret, target=request_target)[0])
        answers[request_target] = (await _answer(reader))[0]
        writer.close()
    assert answers == {
        "/in": 200,
        "http://r/in": 200,
        "HTTP://receiver.example:8080/in?from=proxy": 200,
        "https://r/in": 200,
        "http://r/in/": 404,
        "http://r/": 404,
        "http://r": 404,
        "http://r/other/in": 404,
        "ftp://r/in": 404,
    }
    assert len(target.requests) == 4


async def test_an_absolute_form_target_without_a_path_is_the_root(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    for request_target in ("http://r", "http://r?x=1", "http://r:81/"):
        writer.write(_request(secret, target=request_target)[0])
        assert (await _answer(reader))[0] == 200, request_target
    writer.close()


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/in", b"/in"),
        (b"/in?x=1", b"/in"),
        (b"http://r/in", b"/in"),
        (b"http://r", b"/"),
        (b"http://r?x", b"/"),
        (b"https://r:443/in", b"/in"),
        (b"http://user:pw@r/in", None),
        (b"ftp://r/in", None),
        (b"*", None),
        (b"r:80", None),
        (b"http://", None),
        (b"", None),
    ],
)
def test_the_path_of_a_request_target(target: bytes, path: bytes | None) -> None:
    assert target_path(target) == path


def _head_only(secret: str, extra: str = "", target: str = "/") -> tuple[bytes, bytes]:
    """A request's head (with `extra` fields) and, apart, the body it announces."""
    raw, _ = _request(secret, extra=extra, target=target)
    head, _, body = raw.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", body


_BAD_AFTER_GOOD = {
    "malformed": (b"POST / HTTP/1.1\r\nbad header: x\r\n\r\n", 400, "malformed_request"),
    "oversized": (
        b"POST / HTTP/1.1\r\nhost: r\r\ncontent-length: 99999999\r\n\r\n" + b"x" * 4096,
        413,
        "body_too_large",
    ),
    "head_too_large": (
        b"POST / HTTP/1.1\r\nhost: r\r\nx-big: " + b"a" * (MAX_HEAD_BYTES + 300),
        431,
        "head_too_large",
    ),
    "chunked_oversized": (
        b"POST / HTTP/1.1\r\nhost: r\r\ntransfer-encoding: chunked\r\n\r\n"
        b"fffff\r\n" + b"x" * (2 * 1024 * 1024),
        413,
        "body_too_large",
    ),
}


@pytest.mark.parametrize("bad", list(_BAD_AFTER_GOOD))
@pytest.mark.parametrize("slow_target", [False, True])
async def test_pipelined_good_requests_are_answered_before_a_later_bad_one(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    bad: str,
    slow_target: bool,
) -> None:
    """A client must learn that the events before the bad request were taken: their 200s
    come first, in order, then the 4xx, then the connection closes."""
    path, secret = secrets_file
    target.delay = 0.2 if slow_target else 0.0
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    good = [_request(secret) for _ in range(3)]
    raw, status, reason = _BAD_AFTER_GOOD[bad]
    # The bad request starts with the good ones and ends in a later read.
    writer.write(b"".join(r for r, _ in good) + raw[:200])
    await writer.drain()
    await asyncio.sleep(0.05)
    with contextlib.suppress(ConnectionError):
        writer.write(raw[200:])
        await writer.drain()
    answers = [await _answer(reader) for _ in range(4)]
    assert [(s, json.loads(b).get("error")) for s, _, b in answers] == [(200, None)] * 3 + [
        (status, reason)
    ]
    assert answers[-1][1]["connection"] == "close"
    assert await _closed(reader)
    writer.close()
    assert target.ids() == [msg_id for _, msg_id in good]


async def test_a_pipelined_request_for_another_path_with_expect_is_answered_in_turn(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    target.delay = 0.2
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    good, msg_id = _request(secret)
    head, _ = _head_only(secret, "expect: 100-continue\r\n", target="/elsewhere")
    writer.write(good + head)
    assert [(await _answer(reader))[0] for _ in range(2)] == [200, 404]
    assert await _closed(reader)
    writer.close()
    assert target.ids() == [msg_id]


async def test_a_100_continue_for_a_pipelined_request_comes_after_the_earlier_answers(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    target.delay = 0.2
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    good, first = _request(secret)
    head, body = _head_only(secret, "expect: 100-continue\r\n")
    writer.write(good + head)
    assert (await _answer(reader))[0] == 200
    continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert continued == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    assert (await _answer(reader))[0] == 200
    writer.close()
    assert len(target.ids()) == 2 and target.ids()[0] == first


async def test_a_pipelined_body_that_stops_coming_gets_408_after_the_earlier_answer(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    target.delay = 0.2
    client = await start_receiver(
        base_config(target.url, path, limits={"read_timeout_seconds": 0.4})
    )
    reader, writer = await _connect(client.running.public_port)
    good, msg_id = _request(secret)
    head, body = _head_only(secret)
    writer.write(good + head + body[:5])
    answers = [await _answer(reader) for _ in range(2)]
    assert [(s, json.loads(b).get("error")) for s, _, b in answers] == [
        (200, None),
        (408, "read_timeout"),
    ]
    assert await _closed(reader)
    writer.close()
    assert target.ids() == [msg_id]


async def test_http_1_0_and_connection_close_are_answered_then_closed(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    for version, extra in (("1.0", ""), ("1.1", "connection: close\r\n")):
        reader, writer = await _connect(client.running.public_port)
        writer.write(_request(secret, version=version, extra=extra)[0])
        status, headers, _ = await _answer(reader)
        assert (status, headers["connection"]) == (200, "close")
        assert await _closed(reader)
        writer.close()
    # HTTP/1.0 asking for keep-alive gets it.
    reader, writer = await _connect(client.running.public_port)
    for _ in range(2):
        writer.write(_request(secret, version="1.0", extra="connection: keep-alive\r\n")[0])
        assert (await _answer(reader))[0] == 200
    writer.close()
    assert len(target.requests) == 4


async def test_a_head_over_the_limit_gets_431_and_is_counted(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    raw, _ = _request(secret, extra=f"x-big: {'a' * MAX_HEAD_BYTES}\r\n")
    reader, writer = await _connect(client.running.public_port)
    writer.write(raw)
    status, _, body = await _answer(reader)
    assert (status, json.loads(body)["error"]) == (431, "head_too_large")
    assert await _closed(reader)
    writer.close()
    # Sent in small pieces and never finished: cut off as soon as it passes the limit.
    reader, writer = await _connect(client.running.public_port)
    writer.write(b"POST / HTTP/1.1\r\nhost: r\r\nx-endless: ")
    try:
        for _ in range(MAX_HEAD_BYTES // 1024 + 2):
            writer.write(b"b" * 1024)
            await writer.drain()
    except ConnectionError:
        pass
    assert (await _answer(reader))[0] == 431
    writer.close()
    counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="head_too_large"
    )
    assert counted == 2
    assert target.requests == []


_OTHER_SIGNATURE = "v1,b3RoZXIgc2lnbmF0dXJlIG9mIDMyIGJ5dGVzIGV4YWN0bHk="


def _chunked(secret: str, header: str | None, trailer: str | None) -> bytes:
    """A delivery with a chunked body, whose `webhook-signature` header and trailer field
    are `header` and `trailer` ("valid": the delivery's signature; None: absent)."""
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    valid = headers.pop("webhook-signature")
    if header is not None:
        headers["webhook-signature"] = valid if header == "valid" else header
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    trailers = (
        ""
        if trailer is None
        else f"webhook-signature: {valid if trailer == 'valid' else trailer}\r\n"
    )
    return (
        (
            f"POST / HTTP/1.1\r\nhost: r\r\ntransfer-encoding: chunked\r\n{head}\r\n"
            f"{len(body):x}\r\n"
        ).encode()
        + body
        + f"\r\n0\r\n{trailers}\r\n".encode()
    )


async def test_a_signature_sent_only_as_a_trailer_field_is_not_a_header(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """RFC 9110 §6.5.1: trailer fields are not the header section."""
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    writer.write(_chunked(secret, header=None, trailer="valid"))
    status, _, body = await _answer(reader)
    assert (status, json.loads(body)["error"]) == (400, "missing_headers")
    writer.close()
    assert target.requests == []


@pytest.mark.parametrize(
    ("header", "trailer", "status"),
    [("valid", _OTHER_SIGNATURE, 200), (_OTHER_SIGNATURE, "valid", 401)],
    ids=["valid_header", "valid_trailer"],
)
async def test_a_signature_in_the_headers_is_the_one_verified_whatever_the_trailer_says(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    header: str,
    trailer: str,
    status: int,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    writer.write(_chunked(secret, header=header, trailer=trailer))
    assert (await _answer(reader))[0] == status
    writer.close()
    assert len(target.requests) == (1 if status == 200 else 0)


@pytest.mark.parametrize("shape", ["many_fields", "endless_field"])
async def test_trailer_fields_are_bounded_like_the_head(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    shape: str,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    raw = _chunked(secret, header="valid", trailer=None)[: -len(b"\r\n")]
    reader, writer = await _connect(client.running.public_port)
    writer.write(raw)
    await asyncio.sleep(0.05)  # so that the trailer section starts a read
    field = b"x-trailer: " + b"t" * 1000 + b"\r\n"
    try:
        for _ in range(MAX_HEAD_BYTES // 1000 + 2):
            writer.write(field if shape == "many_fields" else b"t" * 1024)
            await writer.drain()
    except ConnectionError:
        pass
    status, _, body = await _answer(reader)
    assert (status, json.loads(body)["error"]) == (431, "head_too_large")
    assert await _closed(reader)
    writer.close()


_VALID_HOSTS = [
    "",
    "r",
    "receiver.example.com",
    "receiver.example.com:8443",
    "127.0.0.1:80",
    "[::1]",
    "[2001:db8::7]:443",
    "[v1.fe80::a+en1]",
    "xn--bcher-kva.example",
    "a%2Db",
    "host:",
]
_INVALID_HOSTS = [
    "a b",
    "r:80:81",
    "r:http",
    "user@r",
    "r/path",
    "[::1",
    "[::g]",
    "[fe80::1%eth0]",
    "::1",
    "a%2",
    "r?q",
]


@pytest.mark.parametrize("value", _VALID_HOSTS)
def test_a_valid_host_value(value: str) -> None:
    assert valid_host(value)


@pytest.mark.parametrize("value", _INVALID_HOSTS)
def test_an_invalid_host_value(value: str) -> None:
    assert not valid_host(value)


@pytest.mark.parametrize(
    ("version", "host", "repeated", "target", "acceptable"),
    [
        ("1.1", "r", False, b"/", True),
        ("1.1", None, False, b"/", False),
        ("1.1", "r", True, b"/", False),
        ("1.0", None, False, b"/", True),
        ("1.0", "r", True, b"/", False),
        ("1.0", "a b", False, b"/", False),
        ("1.1", "r  \t", False, b"/", True),
        ("1.1", None, False, b"http://r/", False),
        ("1.1", "a b", False, b"http://r/", True),
    ],
)
def test_whether_the_host_fields_are_acceptable(
    version: str, host: str | None, repeated: bool, target: bytes, acceptable: bool
) -> None:
    assert host_is_acceptable(version, host, repeated, target) is acceptable


_BAD_HOST_REQUESTS = {
    "missing": {"host": None},
    "repeated": {"extra": "host: r\r\n"},
    "repeated_empty": {"host": "", "extra": "Host: r\r\n"},
    **{f"invalid {value!r}": {"host": value} for value in ("a b", "r:80:81", "[::1", "r/p")},
    "absolute_form_missing": {"host": None, "target": "http://r/"},
}


@pytest.mark.parametrize("shape", list(_BAD_HOST_REQUESTS))
async def test_a_request_with_a_missing_repeated_or_invalid_host_gets_400(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    shape: str,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    writer.write(_request(secret, **_BAD_HOST_REQUESTS[shape])[0])  # type: ignore[arg-type]
    status, headers, body = await _answer(reader)
    assert (status, json.loads(body)["error"], headers["connection"]) == (
        400,
        "bad_host",
        "close",
    )
    assert await _closed(reader)
    writer.close()
    counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="bad_host"
    )
    assert counted == 1
    assert target.requests == []


@pytest.mark.parametrize(
    ("version", "host", "request_target"),
    [
        ("1.1", "[2001:db8::7]:443", "/"),
        ("1.1", "127.0.0.1:8080", "/"),
        ("1.0", None, "/"),
        ("1.1", "not a host", "http://r/"),
    ],
    ids=["ipv6_literal", "ipv4_and_port", "http_1_0_without_host", "absolute_form"],
)
async def test_a_request_with_an_acceptable_host_is_served(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    version: str,
    host: str | None,
    request_target: str,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    writer.write(_request(secret, version=version, host=host, target=request_target)[0])
    assert (await _answer(reader))[0] == 200
    writer.close()
    assert len(target.requests) == 1


async def test_request_smuggling_shapes_are_refused(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """What could make two servers disagree about where a request ends is a 400."""
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    body = json.dumps(envelope()).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers([secret], body).items()).encode()
    shapes = [
        b"POST / HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\ntransfer-encoding: chunked\r\n"
        % len(body),
        b"POST / HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\ncontent-length: %d\r\n"
        % (len(body), len(body) + 1),
        b"POST / HTTP/1.1\r\nhost: r\r\ntransfer-encoding: gzip, chunked, identity\r\n",
        b"POST / HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\nbad header: x\r\n" % len(body),
        b"POST / HTTP/1.1\nhost: r\ncontent-length: %d\n" % len(body),
        b"GET / HTTP/1.1\r\nhost: r\r\nconnection: upgrade\r\nupgrade: websocket\r\n",
    ]
    for shape in shapes:
        reader, writer = await _connect(client.running.public_port)
        writer.write(shape + head + b"\r\n" + body)
        status, _, answer = await _answer(reader)
        assert (status, json.loads(answer)["error"]) == (400, "malformed_request"), shape
        assert await _closed(reader)
        writer.close()
    assert target.requests == []


async def test_an_idle_keep_alive_connection_is_closed_after_the_read_timeout(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(
        base_config(target.url, path, limits={"read_timeout_seconds": 0.3})
    )
    reader, writer = await _connect(client.running.public_port)
    writer.write(_request(secret)[0])
    assert (await _answer(reader))[0] == 200
    started = time.monotonic()
    assert await _closed(reader, within=3)
    assert 0.2 < time.monotonic() - started < 2
    writer.close()


async def test_the_read_timeout_counts_from_the_previous_answer(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(
        base_config(target.url, path, limits={"read_timeout_seconds": 0.6})
    )
    reader, writer = await _connect(client.running.public_port)
    started = time.monotonic()
    for _ in range(3):  # each answer moves the deadline past the first one
        await asyncio.sleep(0.3)
        writer.write(_request(secret)[0])
        assert (await _answer(reader))[0] == 200
    answered = time.monotonic()
    assert answered - started > 0.9  # past the first deadline, still served
    assert await _closed(reader, within=3)
    assert 0.5 < time.monotonic() - answered < 1.5
    writer.close()


async def test_reading_pauses_while_the_client_leaves_answers_unread(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """The transport tells the protocol when its write buffer passes the high-water mark
    (a client pipelining without reading answers); until it drains, no more is read."""
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    reader, writer = await _connect(client.running.public_port)
    writer.write(_request(secret)[0])
    assert (await _answer(reader))[0] == 200
    (connection,) = client.running.public_connections.connections
    connection.pause_writing()  # what the transport calls at its high-water mark
    writer.write(_request(secret)[0])
    await asyncio.sleep(0.3)
    assert len(target.requests) == 1  # not read, so not delivered
    connection.resume_writing()
    assert (await _answer(reader))[0] == 200
    assert len(target.requests) == 2
    writer.close()


async def _still_open(reader: asyncio.StreamReader) -> bool:
    """Nothing arrives, not even the end of the stream, for a moment."""
    try:
        await asyncio.wait_for(reader.read(1), 0.2)
    except TimeoutError:
        return True
    except ConnectionError:
        return False
    return False


async def _evicted(client: Client, state: str) -> float:
    return await client.metric("gemini_receiver_connections_evicted_total", state=state)


async def test_with_every_slot_taken_a_new_connection_evicts_the_oldest_that_sent_nothing(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path, limits={"max_connections": 3}))
    port = client.running.public_port
    silent = []
    for _ in range(3):
        silent.append(await _connect(port))
        await asyncio.sleep(0.05)  # accepted in this order
    reader, writer = await _connect(port)
    writer.write(_request(secret)[0])
    assert (await _answer(reader))[0] == 200
    assert await _closed(silent[0][0])
    assert [await _still_open(r) for r, _ in silent[1:]] == [True, True]
    assert await _evicted(client, "head") == 1
    for _, w in [*silent, (reader, writer)]:
        w.close()


async def test_a_kept_alive_connection_between_requests_is_evicted_as_idle(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path, limits={"max_connections": 2}))
    port = client.running.public_port
    idle_reader, idle_writer = await _connect(port)
    idle_writer.write(_request(secret)[0])
    assert (await _answer(idle_reader))[0] == 200
    silent_reader, silent_writer = await _connect(port)  # evictable since after the answer
    await asyncio.sleep(0.05)
    reader, writer = await _connect(port)
    writer.write(_request(secret)[0])
    assert (await _answer(reader))[0] == 200
    assert await _closed(idle_reader)
    assert await _still_open(silent_reader)
    assert (await _evicted(client, "idle"), await _evicted(client, "head")) == (1, 0)
    for w in (idle_writer, silent_writer, writer):
        w.close()


async def test_a_connection_lingering_after_a_refusal_is_evicted(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path, limits={"max_connections": 2}))
    port = client.running.public_port
    refused_reader, refused_writer = await _connect(port)
    refused_writer.write(b"POST / HTTP/1.1\r\nbad header: x\r\n\r\n")
    assert (await _answer(refused_reader))[0] == 400  # and the receiver lingers
    silent_reader, silent_writer = await _connect(port)
    await asyncio.sleep(0.05)
    reader, writer = await _connect(port)
    writer.write(_request(secret)[0])
    assert (await _answer(reader))[0] == 200
    assert await _still_open(silent_reader)
    assert (await _evicted(client, "lingering"), await _evicted(client, "head")) == (1, 0)
    for w in (refused_writer, silent_writer, writer):
        w.close()


async def test_connections_busy_with_a_request_are_not_evicted_so_a_new_one_gets_503(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """Busy: a delivery under way, or a body still being read after a complete head."""
    path, secret = secrets_file
    target.delay = 0.5
    client = await start_receiver(base_config(target.url, path, limits={"max_connections": 2}))
    port = client.running.public_port
    delivering = await _connect(port)
    delivering[1].write(_request(secret)[0])
    reading = await _connect(port)
    head, body = _head_only(secret)
    reading[1].write(head + body[:5])
    await asyncio.sleep(0.1)
    reader, writer = await _connect(port)
    status, headers, answer = await _answer(reader)
    assert (status, json.loads(answer)["error"], headers["connection"]) == (
        503,
        "too_many_connections",
        "close",
    )
    assert await _closed(reader)
    writer.close()
    counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="too_many_connections"
    )
    assert counted == 1
    # Both busy ones are answered; kept alive and idle then, one makes room for a new one.
    reading[1].write(body[5:])
    assert (await _answer(delivering[0]))[0] == 200
    assert (await _answer(reading[0]))[0] == 200
    reader, writer = await _connect(port)
    writer.write(_request(secret)[0])
    assert (await _answer(reader))[0] == 200
    assert await _evicted(client, "idle") == 1
    for w in (delivering[1], reading[1], writer):
        w.close()


async def test_shutdown_closes_idle_connections_and_answers_the_busy_ones(
    start_receiver: StartReceiver, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/events", slow)
    runner, port = await start_app(app)
    try:
        client = await start_receiver(base_config(f"http://127.0.0.1:{port}/events", path))
        idle_reader, idle_writer = await _connect(client.running.public_port)
        busy_reader, busy_writer = await _connect(client.running.public_port)
        busy_writer.write(_request(secret)[0])
        await busy_writer.drain()
        await asyncio.sleep(0.2)  # the delivery is now waiting on the target
        stopping = asyncio.create_task(client.running.stop(5))
        assert await _closed(idle_reader, within=2)
        release.set()
        status, headers, _ = await _answer(busy_reader)
        assert (status, headers["connection"]) == (200, "close")
        await stopping
        for writer in (idle_writer, busy_writer):
            writer.close()
    finally:
        await runner.cleanup()


@st.composite
def _mangled(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid request with a few bytes replaced, inserted or cut, or cut short."""
    raw = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "replace":
            raw[at : at + len(chunk)] = chunk
        elif action == "insert":
            raw[at:at] = chunk
        else:
            del raw[at : at + len(chunk)]
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


async def test_mangled_bytes_on_the_wire_never_get_a_5xx_and_the_port_keeps_serving(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """Property: whatever the bytes, the answer (if any) is not a 5xx, the connection ends
    within the read timeout, and a valid delivery afterwards is accepted."""
    path, secret = secrets_file
    client = await start_receiver(
        base_config(
            target.url,
            path,
            limits={"read_timeout_seconds": 0.3},
            # A mangled body keeps its signature: once an unmangled one has verified, such
            # a forgery would get 503 secret_reload_pending for a while
            # (test_rotation_window.py); here forgeries are bad input, answered 401.
            replay={"reload_pending_seconds": 0},
        )
    )
    port = client.running.public_port
    loop = asyncio.get_running_loop()
    valid, _ = _request(secret)
    problems: list[str] = []

    async def send(raw: bytes) -> None:
        reader, writer = await _connect(port)
        writer.write(raw)
        try:
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 3)
        except ConnectionError:
            answer = b""
        except TimeoutError:
            problems.append(f"no answer and not closed within 3 s: {raw!r}")
            answer = b""
        writer.close()
        for line in answer.split(b"\r\n"):
            if line.startswith(b"HTTP/1.1 5"):
                problems.append(f"{line!r} for {raw!r}")

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=_mangled(valid))
    def check(raw: bytes) -> None:
        asyncio.run_coroutine_threadsafe(send(raw), loop).result(10)

    await loop.run_in_executor(None, check)
    assert problems == []
    writer_reader = await _connect(port)
    writer_reader[1].write(_request(secret)[0])
    assert (await _answer(writer_reader[0]))[0] == 200
    writer_reader[1].close()


# ---- whole pipelined connections, fuzzed ---------------------------------------------

_MAX_BODY = 4096
# What each kind of request gets, and whether the connection ends with its answer.
_KINDS: dict[str, tuple[int, bool]] = {
    "valid": (200, False),
    "valid_expect": (200, False),  # with `expect: 100-continue`, its body sent at once
    "duplicate": (200, False),  # the previous valid request again: same webhook-id
    "bad_signature": (401, False),
    "absolute_target": (200, False),  # POST http://r/ HTTP/1.1
    "timestamp_out_of_range": (400, False),  # webhook-timestamp: 999999999999
    "valid_last": (200, True),  # with `connection: close`
    "malformed": (400, True),
    "oversized": (413, True),  # announces more than max_body_bytes
    "oversized_chunked": (413, True),  # sends more than max_body_bytes in chunks
    "wrong_path": (404, True),
    "wrong_method": (405, True),
}


def _fuzz_request(kind: str, secret: str, previous: bytes | None) -> tuple[bytes, str | None]:
    """A request of `kind`'s bytes, and the webhook-id it delivers (if it is one to take)."""
    if kind == "duplicate" and previous is not None:
        return previous, None
    if kind in ("valid", "duplicate"):
        return _request(secret)
    if kind == "valid_expect":
        return _request(secret, extra="expect: 100-continue\r\n")
    if kind == "valid_last":
        return _request(secret, extra="connection: close\r\n")
    if kind == "bad_signature":
        return _request(new_secret())[0], None
    if kind == "absolute_target":
        return _request(secret, target="http://r/")
    if kind == "timestamp_out_of_range":
        raw = _request(secret)[0]
        return re.sub(rb"webhook-timestamp: \d+", b"webhook-timestamp: 999999999999", raw), None
    if kind == "malformed":
        return b"POST / HTTP/1.1\r\nhost: r\r\nbad header: x\r\n\r\n", None
    if kind == "oversized":
        return b"POST / HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\n\r\n{" % (_MAX_BODY + 1), None
    if kind == "oversized_chunked":
        chunk = b"x" * (_MAX_BODY + 10)
        return (
            b"POST / HTTP/1.1\r\nhost: r\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n"
            b"0\r\n\r\n" % (len(chunk), chunk)
        ), None
    if kind == "wrong_path":
        return _request(secret, target="/elsewhere")[0], None
    assert kind == "wrong_method"
    return _request(secret)[0].replace(b"POST", b"PUT", 1), None


def _answers(stream: bytes) -> list[tuple[int, bytes]]:
    """The final answers in a byte stream from the public port (100 Continue skipped)."""
    answers = []
    while stream:
        head, found, rest = stream.partition(b"\r\n\r\n")
        assert found, f"an unfinished answer: {stream[:200]!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        if status == 100:
            stream = rest
            continue
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(fields[b"content-length"])
        answers.append((status, rest[:length]))
        stream = rest[length:]
    return answers


async def test_fuzzed_pipelined_connections_are_answered_in_order_and_forwarded_once(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """Property, over whole connections of valid, malformed and oversized requests
    interleaved and cut into arbitrary reads: every request up to the first that ends the
    connection is answered, in order, with its own status (never a 5xx); nothing after it
    is; and every event answered 200 "accepted" reached the target exactly once."""
    path, secret = secrets_file
    client = await start_receiver(
        base_config(
            target.url,
            path,
            limits={"max_body_bytes": _MAX_BODY, "read_timeout_seconds": 2},
            # Bad signatures among verified ones would get 503 secret_reload_pending for
            # a while (test_rotation_window.py); here they are forgeries: answered 401.
            replay={"reload_pending_seconds": 0},
        )
    )
    port = client.running.public_port
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    answered: list[int] = []  # every status seen, so that the property cannot hold vacuously
    connections: list[list[str]] = []

    async def run(kinds: list[str], cuts: list[float]) -> None:
        raws, delivered, previous = [], [], None
        expected: list[int] = []
        connections.append(kinds)
        for kind in kinds:
            raw, msg_id = _fuzz_request(kind, secret, previous)
            raws.append(raw)
            status, closes = _KINDS[kind]
            expected.append(status)
            if msg_id is not None:
                delivered.append(msg_id)
                previous = raw
            if closes:
                break
        stream = b"".join(raws)
        at = sorted({int(c * len(stream)) for c in cuts} | {0, len(stream)})
        before = len(target.requests)
        reader, writer = await _connect(port)
        try:
            for start, end in itertools.pairwise(at):
                writer.write(stream[start:end])
                await writer.drain()
                await asyncio.sleep(0)
        except ConnectionError:
            pass  # closed by a refusal while the rest was still being sent
        received = b""
        try:
            if _KINDS[kinds[len(expected) - 1]][1]:  # ends the connection: read to EOF
                received = await asyncio.wait_for(reader.read(), 10)
            else:  # stays open: read until every answer is in
                while True:
                    try:
                        if len(_answers(received)) >= len(expected):
                            break
                    except AssertionError:
                        pass  # an answer not yet complete
                    chunk = await asyncio.wait_for(reader.read(65536), 10)
                    if not chunk:
                        break
                    received += chunk
        except (ConnectionError, TimeoutError) as error:
            problems.append(f"{kinds}: {type(error).__name__} after {received[-200:]!r}")
            writer.close()
            return
        writer.close()
        answers = _answers(received)
        statuses = [status for status, _ in answers]
        answered.extend(statuses)
        if statuses != expected:
            problems.append(f"{kinds}: answered {statuses}, expected {expected}")
        accepted = [
            json.loads(body).get("status") == "accepted"
            for status, body in answers
            if status == 200
        ]
        if sum(accepted) != len(delivered):
            problems.append(f"{kinds}: {sum(accepted)} accepted, {len(delivered)} sent")
        forwarded = target.ids()[before:]
        if forwarded != delivered:
            problems.append(f"{kinds}: forwarded {forwarded}, expected {delivered}")

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        kinds=st.lists(st.sampled_from(list(_KINDS)), min_size=1, max_size=12),
        cuts=st.lists(st.floats(0, 1), max_size=6),
    )
    def check(kinds: list[str], cuts: list[float]) -> None:
        asyncio.run_coroutine_threadsafe(run(kinds, cuts), loop).result(30)

    await loop.run_in_executor(None, check)
    assert problems == []
    assert {200, 400, 401, 404, 405, 413} <= set(answered)
    assert len(connections) >= 100


async def test_one_task_answers_a_connections_requests_and_ends_with_it() -> None:
    """Between requests the connection's task waits for the next one (no task per
    request); when the connection closes, the waiting task ends (nothing is left pending)."""
    tasks: list[asyncio.Task[object] | None] = []

    async def deliver(headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        tasks.append(asyncio.current_task())
        return 200, b"{}"

    public = PublicServer("/", 1024, 5.0, deliver, lambda rejection, msg_id: b"{}")
    server = await asyncio.get_running_loop().create_server(public.protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = b"POST / HTTP/1.1\r\nhost: r\r\ncontent-length: 2\r\n\r\n{}"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(raw)
            assert (await _answer(reader))[0] == 200
        writer.close()
        assert await _closed(reader)
        (task,) = set(tasks)
        assert task is not None and len(tasks) == 3
        await asyncio.wait_for(task, 5)  # ended, not left waiting for a fourth request
        assert not public.connections
    finally:
        server.close()
        await server.wait_closed()
