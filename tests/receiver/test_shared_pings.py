"""Redis mode: a verified ping taken by one replica is reported by every replica's
`/internal/pings`; a ping Redis cannot record is answered 503 (Gemini retries), and the
ping status is 503 while Redis cannot be read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gemini_webhooks.contracts.delivery import PING_EVENT_TYPE
from gemini_webhooks.contracts.receiver_config import DYNAMIC_SOURCE
from tests.fixtures.redis import RedisServer

from .conftest import RecordingTarget, StartReceiver, base_config, signed_headers

pytestmark = pytest.mark.real_component

PING = {"type": PING_EVENT_TYPE, "data": {}}
PING_KEY = "gemini-webhooks:deliveries:pings:orders"


def _config(target_url: str, path: Path, redis_url: str, name: str, **extra: Any) -> dict[str, Any]:
    config = base_config(target_url, path, **extra)
    config["redis"] = {"url": redis_url, "consumer_name": name}
    config["dedup"] = {"backend": "redis"}
    return config


async def test_a_ping_taken_by_one_replica_is_reported_by_every_replica(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    replicas = [
        await start_receiver(_config(target.url, path, redis_server, name)) for name in "abc"
    ]
    status, answer, msg_id = await replicas[1].deliver([secret], PING)
    assert (status, answer["status"]) == (200, "ping")
    for replica in replicas:
        status, pings = await replica.get_json("/internal/pings")
        assert status == 200
        record = pings["pings"]["orders"]
        assert record["webhook_id"] == msg_id
        assert record["secret_fingerprint"].endswith(secret[-4:])
    assert secret not in json.dumps(pings)
    client = aioredis.Redis.from_url(redis_server)
    try:
        ttl = await client.ttl(PING_KEY)
    finally:
        await client.aclose()
    assert 0 < ttl <= 7 * 24 * 3600  # a record that is never refreshed goes away
    assert target.requests == []


async def test_a_later_ping_on_another_replica_replaces_the_earlier_one(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    first = await start_receiver(_config(target.url, path, redis_server, "a"))
    second = await start_receiver(_config(target.url, path, redis_server, "b"))
    await first.deliver([secret], PING)
    _, _, later = await second.deliver([secret], PING)
    _, pings = await first.get_json("/internal/pings")
    assert pings["pings"]["orders"]["webhook_id"] == later


async def test_a_ping_replayed_to_another_replica_changes_no_ping_record(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    """Dedup of pings is in Redis whatever the dedup backend: a replica that never saw the
    ping still recognises its replay."""
    path, secret = secrets_file
    config_b = _config(target.url, path, redis_server, "b")
    config_b["dedup"] = {"backend": "memory"}
    first = await start_receiver(_config(target.url, path, redis_server, "a"))
    second = await start_receiver(config_b)
    body = json.dumps(PING).encode()
    headers = signed_headers([secret], body)
    assert await first.post(body, headers) == (200, {"status": "ping"})
    _, recorded = await first.get_json("/internal/pings")
    assert await second.post(body, headers) == (200, {"status": "duplicate"})
    assert await first.post(body, headers) == (200, {"status": "duplicate"})
    _, after = await second.get_json("/internal/pings")
    assert after == recorded


async def test_no_ping_yet_reports_no_source(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, _ = secrets_file
    client = await start_receiver(_config(target.url, path, redis_server, "a"))
    assert await client.get_json("/internal/pings") == (200, {"pings": {}})


async def test_a_ping_redis_cannot_record_is_answered_503_and_the_status_is_503(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    durable_redis: RedisServer,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(_config(target.url, path, durable_redis.url, "a"))
    durable_redis.kill()
    status, answer, _ = await client.deliver([secret], PING)
    assert (status, answer["error"]) == (503, "unavailable")
    status, body = await client.get_json("/internal/pings")
    assert (status, body["error"]) == (503, "redis_unavailable")
    assert client.running.receiver.pings == {}  # not remembered as if it had counted
    assert await client.metric("gemini_receiver_deliveries_total", outcome="ping", reason="ok") == 0


async def test_a_record_that_is_not_a_ping_record_makes_the_status_503(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, _ = secrets_file
    client = await start_receiver(_config(target.url, path, redis_server, "a"))
    redis = aioredis.Redis.from_url(redis_server)
    try:
        await redis.set(PING_KEY, b"[1, 2]")
        status, body = await client.get_json("/internal/pings")
        assert (status, body["error"]) == (503, "redis_unavailable")
        await redis.set(PING_KEY, b"\xff not json")
        assert (await client.get_json("/internal/pings"))[0] == 503
    finally:
        await redis.aclose()


async def test_dynamic_pings_are_read_from_redis_too(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, _ = secrets_file
    config = _config(target.url, path, redis_server, "a")
    config["dynamic"] = {
        "enabled": True,
        "audiences": ["https://hooks.example.com/"],
        "accept_jobs_from_any_project": True,
    }
    client = await start_receiver(config)
    record = {"source": DYNAMIC_SOURCE, "webhook_id": "e1", "received_at": "2026-01-01T00:00:00Z"}
    redis = aioredis.Redis.from_url(redis_server)
    try:
        await redis.set(f"gemini-webhooks:deliveries:pings:{DYNAMIC_SOURCE}", json.dumps(record))
    finally:
        await redis.aclose()
    _, pings = await client.get_json("/internal/pings")
    assert pings["pings"] == {DYNAMIC_SOURCE: record}
