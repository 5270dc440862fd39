"""Bad input gets a 4xx naming the reason, is counted, and never causes a 5xx or a crash."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import (
    Client,
    RecordingTarget,
    StartReceiver,
    base_config,
    envelope,
    new_secret,
    signed_headers,
)


async def _client(
    start_receiver: StartReceiver, target: RecordingTarget, path: Path, **kw: object
) -> Client:
    return await start_receiver(base_config(target.url, path, **kw))


async def test_missing_headers_are_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    client = await _client(start_receiver, target, secrets_file[0])
    status, answer = await client.post(b"{}", {"content-type": "application/json"})
    assert (status, answer["error"]) == (400, "missing_headers")
    assert (
        await client.metric(
            "gemini_receiver_deliveries_total", outcome="rejected", reason="missing_headers"
        )
        >= 1
    )


async def test_malformed_webhook_id_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = json.dumps(envelope()).encode()
    for bad_id in ("x" * 257, "two words"):
        headers = signed_headers([secret], body, msg_id=bad_id)
        status, answer = await client.post(body, headers)
        assert (status, answer["error"]) == (400, "malformed_id")
    assert (
        await client.metric(
            "gemini_receiver_deliveries_total", outcome="rejected", reason="malformed_id"
        )
        == 2
    )


async def test_malformed_timestamp_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body) | {"webhook-timestamp": "yesterday"}
    status, answer = await client.post(body, headers)
    assert (status, answer["error"]) == (400, "malformed_timestamp")


def _hand_signed(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """A Standard Webhooks v1 signature computed by hand, for timestamps the library's
    `sign` (which takes a `datetime`) cannot represent."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@pytest.mark.parametrize("validly_signed", [True, False])
async def test_a_timestamp_beyond_the_year_9999_is_a_counted_400_never_a_503(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    validly_signed: bool,
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = json.dumps(envelope()).encode()
    for timestamp in ("999999999999", "253402300800"):  # the first second of the year 10000
        headers = signed_headers([secret], body)
        signed_by = secret if validly_signed else new_secret()
        headers["webhook-timestamp"] = timestamp
        headers["webhook-signature"] = _hand_signed(
            signed_by, headers["webhook-id"], timestamp, body
        )
        status, answer = await client.post(body, headers)
        assert (status, answer["error"]) == (400, "malformed_timestamp"), timestamp
    rejected = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="malformed_timestamp"
    )
    failed = await client.metric(
        "gemini_receiver_deliveries_total", outcome="failed", reason="not_delivered"
    )
    assert (rejected, failed) == (2, 0)
    assert target.requests == []


async def test_the_last_second_of_the_year_9999_is_checked_like_any_future_timestamp(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = json.dumps(envelope()).encode()
    timestamp = "253402300799"
    for signed_by, expected in ((secret, "clock_skew"), (new_secret(), "bad_signature")):
        headers = signed_headers([secret], body) | {"webhook-timestamp": timestamp}
        headers["webhook-signature"] = _hand_signed(
            signed_by, headers["webhook-id"], timestamp, body
        )
        status, answer = await client.post(body, headers)
        assert answer["error"] == expected
        assert 400 <= status < 500


async def test_malformed_signature_header_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body) | {"webhook-signature": "sha256=abc"}
    status, answer = await client.post(body, headers)
    assert (status, answer["error"]) == (400, "malformed_signature")


async def test_wrong_content_type_is_rejected_with_415(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body) | {"content-type": "text/plain"}
    status, answer = await client.post(body, headers)
    assert (status, answer["error"]) == (415, "wrong_content_type")


async def test_body_over_the_limit_is_rejected_with_413(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path, limits={"max_body_bytes": 2048})
    body = json.dumps(envelope(padding="x" * 4000)).encode()
    status, answer = await client.post(body, signed_headers([secret], body))
    assert (status, answer["error"]) == (413, "body_too_large")


async def test_chunked_body_over_the_limit_is_rejected_with_413(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path, limits={"max_body_bytes": 2048})
    body = json.dumps(envelope(padding="x" * 4000)).encode()

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    async with client.session.post(
        client.url, data=chunks(), headers=signed_headers([secret], body)
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "body_too_large"


async def test_slow_body_is_cut_off_with_408(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path, limits={"read_timeout_seconds": 0.3})
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body) | {"content-length": str(len(body))}
    host, port = "127.0.0.1", client.running.public_port
    reader, writer = await asyncio.open_connection(host, port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST / HTTP/1.1\r\nhost: {host}\r\n{head}\r\n".encode() + body[:10])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 408 " in status_line


async def test_non_json_body_with_valid_signature_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = b"not json at all"
    status, answer = await client.post(body, signed_headers([secret], body))
    assert (status, answer["error"]) == (400, "malformed_body")


async def test_envelope_without_type_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = b'{"data": {}}'
    status, answer = await client.post(body, signed_headers([secret], body))
    assert (status, answer["error"]) == (400, "malformed_body")


async def test_a_signed_body_nested_100_000_deep_is_malformed_body(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """orjson stops at 1,024 levels with a JSONDecodeError: a 400, not a RecursionError."""
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = b"[" * 100_000 + b"]" * 100_000
    status, answer = await client.post(body, signed_headers([secret], body))
    assert (status, answer["error"]) == (400, "malformed_body")
    assert await client.metric("gemini_receiver_deliveries_total", outcome="failed") == 0


_header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


async def test_arbitrary_malformed_requests_never_get_a_5xx(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    # Forged signatures among verified deliveries would get the retryable 503
    # secret_reload_pending (a rotated secret may be on its way; tests/receiver/
    # test_rotation_window.py); here every bad input must stay a final 4xx.
    client = await _client(start_receiver, target, path, replay={"reload_pending_seconds": 0})
    loop = asyncio.get_running_loop()
    problems: list[str] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        body=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)),
        msg_id=st.one_of(st.none(), _header_text),
        timestamp=st.one_of(st.none(), _header_text, st.integers(-(10**12), 10**13).map(str)),
        signature=st.one_of(
            st.none(),
            _header_text,
            st.lists(_header_text.map(lambda s: "v1," + s), max_size=3).map(" ".join),
            st.just("a.b.c"),
        ),
        content_type=st.sampled_from(
            ["application/json", "text/plain", "", "application/json; charset=utf-8"]
        ),
        sign_it=st.booleans(),
    )
    def check(
        body: bytes,
        msg_id: str | None,
        timestamp: str | None,
        signature: str | None,
        content_type: str,
        sign_it: bool,
    ) -> None:
        headers: dict[str, str] = {}
        if sign_it:
            try:
                headers = signed_headers([secret], body)
            except UnicodeDecodeError:
                headers = {}
        if msg_id is not None:
            headers["webhook-id"] = msg_id
        if timestamp is not None:
            headers["webhook-timestamp"] = timestamp
        if signature is not None and not sign_it:
            headers["webhook-signature"] = signature
        if content_type:
            headers["content-type"] = content_type

        async def send() -> int:
            async with aiohttp.ClientSession() as session:
                async with session.post(client.url, data=body, headers=headers) as response:
                    return response.status

        status = asyncio.run_coroutine_threadsafe(send(), loop).result(10)
        if status >= 500:
            problems.append(f"{status} for {headers!r} {body!r}")

    await loop.run_in_executor(None, check)
    assert problems == []


async def test_client_trickling_headers_is_cut_off_after_the_read_timeout(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, _ = secrets_file
    client = await _client(start_receiver, target, path, limits={"read_timeout_seconds": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", client.running.public_port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"POST / HTTP/1.1\r\nhost: receiver\r\n")
    closed = False
    try:
        while loop.time() - started < 3.0:
            writer.write(b"x-slow: 1\r\n")  # never the blank line that ends the head
            await writer.drain()
            try:
                closed = await asyncio.wait_for(reader.read(1024), 0.1) == b""
            except TimeoutError:
                continue
            if closed:
                break
    except ConnectionError:
        closed = True
    writer.close()
    assert closed, "the connection was still open after 3 s"
    assert loop.time() - started < 1.5


async def test_requests_the_http_parser_refuses_are_counted_and_logged_without_their_bytes(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await _client(start_receiver, target, secrets_file[0])
    head = (
        b"POST / HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\nwebhook-id: m\r\n"
        b"webhook-timestamp: 1\r\nwebhook-signature: v1,x\r\n"
    )
    garbage = [
        head + b"content-length: LEAK-length\r\n\r\n",
        head + b"transfer-encoding: chunked\r\n\r\nLEAK-chunk\r\n",
        b"GET\x00LEAK-method / HTTP/1.1\r\n\r\n",
    ]
    caplog.set_level(logging.DEBUG)
    for raw in garbage:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.running.public_port)
        writer.write(raw)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert b" 400 " in status_line
    assert (
        await client.metric(
            "gemini_receiver_deliveries_total", outcome="rejected", reason="malformed_request"
        )
        == 3
    )
    logged = "\n".join(
        r.getMessage() + repr(getattr(r, "fields", "")) + str(r.exc_info) for r in caplog.records
    )
    assert "LEAK" not in logged


async def test_other_paths_and_methods_get_404_and_405_and_nothing_is_forwarded(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """The public port serves one route (public.py, no router): anything else gets the
    answers a router would give."""
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    async with client.session.post(client.url + "other", data=body, headers=headers) as response:
        assert response.status == 404
    for method in ("GET", "PUT", "HEAD"):
        async with client.session.request(method, client.url) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
    assert target.requests == []


async def test_expect_100_continue_is_answered_before_the_body(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await _client(start_receiver, target, path)
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body) | {"content-length": str(len(body))}
    reader, writer = await asyncio.open_connection("127.0.0.1", client.running.public_port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST / HTTP/1.1\r\nhost: r\r\nexpect: 100-continue\r\n{head}\r\n".encode())
    await writer.drain()
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(body)
    await writer.drain()
    assert b" 200 " in await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert len(target.requests) == 1

    reader, writer = await asyncio.open_connection("127.0.0.1", client.running.public_port)
    writer.write(f"POST / HTTP/1.1\r\nhost: r\r\nexpect: teapot\r\n{head}\r\n".encode() + body)
    await writer.drain()
    assert b" 417 " in await asyncio.wait_for(reader.readline(), 5)
    writer.close()
