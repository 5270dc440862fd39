"""The sample consumer records and prints what it receives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gemini_webhooks.sandbox.consumer import RECEIVED_PATH, SampleConsumer


@pytest.fixture
async def consumer() -> AsyncIterator[tuple[SampleConsumer, list[str]]]:
    lines: list[str] = []
    server = SampleConsumer(echo=lines.append)
    await server.start()
    yield server, lines
    await server.stop()


async def test_it_records_and_prints_each_event_it_receives(
    consumer: tuple[SampleConsumer, list[str]],
) -> None:
    server, lines = consumer
    envelope = {"type": "batch.succeeded", "version": "v1", "data": {"id": "batches/1"}}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{server.port}/orders",
            data=json.dumps(envelope),
            headers={"webhook-id": "msg_1", "content-type": "application/json"},
        ) as response:
            assert response.status == 200
        async with session.get(f"http://127.0.0.1:{server.port}{RECEIVED_PATH}") as response:
            listed = await response.json()
    assert [a.event_type for a in server.received()] == ["batch.succeeded"]
    assert server.received()[0].webhook_id == "msg_1"
    assert listed[0]["path"] == "/orders"
    assert listed[0]["body"] == envelope
    assert lines == ["consumer /orders: batch.succeeded batches/1 (id msg_1)"]


async def test_a_body_that_is_not_json_is_kept_as_text(
    consumer: tuple[SampleConsumer, list[str]],
) -> None:
    server, _ = consumer
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{server.port}/", data=b"hello") as response:
            assert response.status == 200
    assert server.received()[0].body == "hello"
    assert server.received()[0].event_type is None


async def test_a_body_over_one_mebibyte_is_refused(
    consumer: tuple[SampleConsumer, list[str]],
) -> None:
    server, _ = consumer
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{server.port}/", data=b"x" * (1024 * 1024 + 1)
        ) as response:
            assert response.status == 413
    assert server.received() == []


async def test_waiting_for_an_event_that_never_comes_times_out(
    consumer: tuple[SampleConsumer, list[str]],
) -> None:
    server, _ = consumer
    with pytest.raises(TimeoutError):
        await server.wait_for(lambda arrivals: len(arrivals) > 0, within=0.3)
