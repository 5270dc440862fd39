"""Redis mode: accept into a stream, deliver from a consumer group, retry, dead-letter, replay."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gemini_webhook_receiver.metrics import FORWARD_HTTP_ERROR
from gemini_webhooks.contracts import replay as replay_contract

from .conftest import (
    RecordingTarget,
    StartReceiver,
    base_config,
    envelope,
    signed_headers,
    start_app,
)

pytestmark = pytest.mark.real_component


def _config(target_url: str, path: Path, redis_url: str, **redis_extra: Any) -> dict[str, Any]:
    config = base_config(target_url, path)
    config["redis"] = {"url": redis_url, "claim_idle_seconds": 1, **redis_extra}
    config["dedup"] = {"backend": "redis"}
    config["forwarding"] = {
        "timeout_seconds": 1,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.2,
    }
    return config


async def _replay(config: dict[str, Any], tmp_path: Path, *args: str) -> str:
    """`gemini-webhooks receiver replay --config FILE ARGS` (exit 0): what it printed."""
    config_file = tmp_path / "receiver.json"
    config_file.write_text(json.dumps(config))
    replay = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gemini_webhooks", "receiver", "replay"),
        *("--config", str(config_file), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await replay.communicate()
    assert replay.returncode == 0, err
    return out.decode()


async def test_accepted_event_is_delivered_from_the_stream(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(_config(target.url, path, redis_server))
    status, answer, msg_id = await client.deliver([secret])
    assert (status, answer["status"]) == (200, "accepted")
    await target.wait_for(1)
    assert target.ids() == [msg_id]
    redis = aioredis.Redis.from_url(redis_server)
    await asyncio.sleep(0.1)
    assert await redis.xlen("gemini-webhooks:deliveries") == 0  # acked and deleted
    await redis.aclose()


async def test_answer_does_not_wait_for_a_slow_target(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    target.delay = 0.5
    client = await start_receiver(_config(target.url, path, redis_server))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await client.deliver([secret]))[0] == 200
    assert loop.time() - started < 0.4
    await target.wait_for(1)


async def test_duplicate_across_replicas_is_forwarded_once(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    first = await start_receiver(_config(target.url, path, redis_server, consumer_name="a"))
    second = await start_receiver(_config(target.url, path, redis_server, consumer_name="b"))
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    assert await first.post(body, headers) == (200, {"status": "accepted"})
    assert await second.post(body, headers) == (200, {"status": "duplicate"})
    await target.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(target.requests) == 1


async def test_failing_target_is_retried_until_it_accepts(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    target.fail_next = 3
    client = await start_receiver(_config(target.url, path, redis_server))
    _, _, msg_id = await client.deliver([secret])
    await target.wait_for(1)
    assert target.ids() == [msg_id]
    assert (
        await client.metric(
            "gemini_receiver_forwards_total", target=target.url, outcome=FORWARD_HTTP_ERROR
        )
        >= 3
    )


async def test_event_is_dead_lettered_after_max_attempts_and_replay_delivers_it(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
    tmp_path: Path,
) -> None:
    path, secret = secrets_file
    target.fail_always = True
    config = _config(target.url, path, redis_server, max_attempts=2)
    client = await start_receiver(config)
    _, _, msg_id = await client.deliver([secret])
    redis = aioredis.Redis.from_url(redis_server)
    for _ in range(100):
        if await redis.xlen("gemini-webhooks:dead-letters") == 1:
            break
        await asyncio.sleep(0.05)
    entries = await redis.xrange("gemini-webhooks:dead-letters")
    assert entries[0][1][b"id"].decode() == msg_id
    assert entries[0][1][b"reason"] == b"max_attempts"
    assert await client.metric("gemini_receiver_dead_letters_total", reason="max_attempts") >= 1

    target.fail_always = False
    assert "replayed 1 dead letter" in await _replay(config, tmp_path)
    await target.wait_for(1)
    assert target.ids() == [msg_id]
    assert await redis.xlen("gemini-webhooks:dead-letters") == 0
    await redis.aclose()


async def test_unroutable_event_is_counted_and_dead_lettered(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    config = _config(target.url, path, redis_server)
    del config["default_route"]
    config["routes"] = [
        {"name": "videos", "match": {"types": ["video.*"]}, "targets": [{"url": target.url}]}
    ]
    client = await start_receiver(config)
    _, _, msg_id = await client.deliver([secret], envelope("batch.failed"))
    redis = aioredis.Redis.from_url(redis_server)
    for _ in range(100):
        if await redis.xlen("gemini-webhooks:dead-letters"):
            break
        await asyncio.sleep(0.05)
    entries = await redis.xrange("gemini-webhooks:dead-letters")
    assert (entries[0][1][b"id"].decode(), entries[0][1][b"reason"]) == (msg_id, b"unroutable")
    assert await client.metric("gemini_receiver_unroutable_total", source="orders") >= 1
    assert target.requests == []
    await redis.aclose()


async def test_unreachable_redis_answers_503_and_is_not_ready(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(_config(target.url, path, "redis://127.0.0.1:1/0"))
    status, _, _ = await client.deliver([secret])
    assert status == 503
    assert (await client.get_json("/readyz"))[0] == 503


async def test_queue_gauges_are_exported(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    target.fail_always = True
    client = await start_receiver(_config(target.url, path, redis_server))
    await client.deliver([secret])
    await asyncio.sleep(1.3)
    assert await client.metric("gemini_receiver_queue_depth") == 1
    assert await client.metric("gemini_receiver_queue_lag_seconds") > 0


async def test_shutdown_lets_a_delivery_in_flight_finish_and_acknowledges_it(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    target.delay = 0.5
    client = await start_receiver(_config(target.url, path, redis_server))
    _, _, msg_id = await client.deliver([secret])
    await asyncio.sleep(0.15)  # the consumer is now waiting on the slow target
    await client.running.receiver.stop(drain_seconds=5)
    assert target.ids() == [msg_id]
    redis = aioredis.Redis.from_url(redis_server)
    pending = await redis.xpending("gemini-webhooks:deliveries", "gemini-webhook-receiver")
    assert pending["pending"] == 0
    assert await redis.xlen("gemini-webhooks:deliveries") == 0
    await redis.aclose()


async def test_redis_answering_again_makes_the_receiver_ready_again(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, _ = secrets_file
    client = await start_receiver(_config(target.url, path, redis_server))
    assert (await client.get_json("/readyz"))[0] == 200
    redis = aioredis.Redis.from_url(redis_server)
    await redis.execute_command("CLIENT", "PAUSE", "3000", "ALL")  # Redis stops answering
    status, readiness = await client.get_json("/readyz")
    assert (status, readiness["checks"]["redis"]) == (503, False)
    await redis.execute_command("CLIENT", "UNPAUSE")
    assert (await client.get_json("/readyz"))[0] == 200
    await redis.aclose()


async def test_event_older_than_max_age_is_dead_lettered(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    target.fail_always = True
    config = _config(target.url, path, redis_server, max_attempts=1000, max_age_seconds=0.5)
    client = await start_receiver(config)
    _, _, msg_id = await client.deliver([secret])
    redis = aioredis.Redis.from_url(redis_server)
    for _ in range(100):
        if await redis.xlen("gemini-webhooks:dead-letters"):
            break
        await asyncio.sleep(0.05)
    entries = await redis.xrange("gemini-webhooks:dead-letters")
    assert (entries[0][1][b"id"].decode(), entries[0][1][b"reason"]) == (msg_id, b"max_age")
    assert await client.metric("gemini_receiver_dead_letters_total", reason="max_age") == 1
    await redis.aclose()


async def test_webhook_ids_are_remembered_in_redis_for_longer_than_gemini_retries(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(_config(target.url, path, redis_server))
    _, _, msg_id = await client.deliver([secret])
    redis = aioredis.Redis.from_url(redis_server)
    assert await redis.ttl("gemini-webhooks:seen:" + msg_id) > 24 * 3600
    await redis.aclose()


async def test_replay_of_chosen_ids_leaves_the_other_dead_letters(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
    tmp_path: Path,
) -> None:
    path, secret = secrets_file
    target.fail_always = True
    config = _config(target.url, path, redis_server, max_attempts=1)
    client = await start_receiver(config)
    ids = [(await client.deliver([secret]))[2] for _ in range(3)]
    redis = aioredis.Redis.from_url(redis_server)
    for _ in range(100):
        if await redis.xlen("gemini-webhooks:dead-letters") == 3:
            break
        await asyncio.sleep(0.05)
    target.fail_always = False
    out = await _replay(config, tmp_path, "--id", ids[0], "--id", ids[2])
    assert "replayed 2 dead letter" in out
    await target.wait_for(2)
    assert sorted(target.ids()) == sorted([ids[0], ids[2]])
    left = await redis.xrange("gemini-webhooks:dead-letters")
    assert [fields[b"id"].decode() for _, fields in left] == [ids[1]]
    await redis.aclose()


async def test_duplicate_is_answered_only_after_the_first_copy_is_stored(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    """Memory dedup in front of the stream: a duplicate arriving while the first copy is
    still being written to Redis gets its 2xx after that write, not before."""
    path, secret = secrets_file
    config = _config(target.url, path, redis_server)
    config["dedup"] = {"backend": "memory"}
    client = await start_receiver(config)
    redis = aioredis.Redis.from_url(redis_server)
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    answered: list[str] = []

    async def post(name: str) -> tuple[int, dict[str, Any]]:
        result = await client.post(body, headers)
        answered.append(name)
        return result

    await redis.execute_command("CLIENT", "PAUSE", "500", "WRITE")  # the XADD waits
    first = asyncio.create_task(post("first"))
    await asyncio.sleep(0.1)
    second = await post("second")
    assert await first == (200, {"status": "accepted"})
    assert second == (200, {"status": "duplicate"})
    assert answered == ["first", "second"]
    await target.wait_for(1)
    await redis.aclose()


async def test_retry_goes_only_to_the_targets_that_have_not_taken_the_event(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    flaky = RecordingTarget(fail_next=2)
    app = web.Application()
    app.router.add_post("/{tail:.*}", flaky.handle)
    runner, port = await start_app(app)
    try:
        config = _config(target.url, path, redis_server)
        config["default_route"] = {
            "targets": [{"url": target.url}, {"url": f"http://127.0.0.1:{port}/flaky"}]
        }
        client = await start_receiver(config)
        _, _, msg_id = await client.deliver([secret])
        await flaky.wait_for(1)
        await asyncio.sleep(0.2)
        assert target.ids() == [msg_id]  # took it at the first attempt, never sent again
        assert flaky.ids() == [msg_id]
    finally:
        await runner.cleanup()


async def test_concurrent_deliveries_share_a_round_trip_and_each_gets_its_own_answer(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    """Admits are pipelined: 40 concurrent deliveries, 10 of them copies of others, in
    batches; every first copy is accepted and delivered once, every copy is a duplicate.
    Then Redis forgets the accept script (SCRIPT FLUSH, as after a restart): it is loaded
    again and the next deliveries are accepted."""
    path, secret = secrets_file
    client = await start_receiver(_config(target.url, path, redis_server))
    bodies = [json.dumps(envelope(n=i)).encode() for i in range(30)]
    requests = [(body, signed_headers([secret], body)) for body in bodies]
    sent = requests + requests[:10]
    answers = await asyncio.gather(*(client.post(body, headers) for body, headers in sent))
    statuses = [answer["status"] for status, answer in answers if status == 200]
    assert statuses.count("accepted") == 30
    assert statuses.count("duplicate") == 10
    await target.wait_for(30)
    await asyncio.sleep(0.3)
    assert sorted(target.ids()) == sorted(headers["webhook-id"] for _, headers in requests)

    redis = aioredis.Redis.from_url(redis_server)
    await redis.script_flush()
    await redis.aclose()
    answers = await asyncio.gather(*(client.deliver([secret]) for _ in range(5)))
    assert [(status, answer["status"]) for status, answer, _ in answers] == [(200, "accepted")] * 5
    await target.wait_for(35)


async def test_replay_since_moves_only_those_dead_lettered_at_or_after_it(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
    tmp_path: Path,
) -> None:
    path, secret = secrets_file
    target.fail_always = True
    config = _config(target.url, path, redis_server, max_attempts=1)
    client = await start_receiver(config)
    redis = aioredis.Redis.from_url(redis_server)

    async def dead_letters(count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        for _ in range(200):
            entries = await redis.xrange("gemini-webhooks:dead-letters")
            if len(entries) >= count:
                return entries
            await asyncio.sleep(0.05)
        raise AssertionError(f"not {count} dead letters in 10 s")

    old = (await client.deliver([secret]))[2]
    [(old_entry, _)] = await dead_letters(1)
    # the next dead letters get a later millisecond than the first (bounded wait)
    for _ in range(200):
        seconds, micros = await redis.time()
        if seconds * 1000 + micros // 1000 > int(old_entry.split(b"-")[0]) + 1:
            break
        await asyncio.sleep(0.005)
    recent = [(await client.deliver([secret]))[2] for _ in range(2)]
    entries = await dead_letters(3)
    cut_ms = int(entries[1][0].split(b"-")[0])  # the second's own time: "at" counts
    since = replay_contract.since_text(cut_ms / 1000)
    target.fail_always = False
    out = await _replay(config, tmp_path, "--since", since, "--output", "json")
    assert replay_contract.replayed_count(out) == 2
    await target.wait_for(2)
    assert sorted(target.ids()) == sorted(recent)
    left = await redis.xrange("gemini-webhooks:dead-letters")
    assert [fields[b"id"].decode() for _, fields in left] == [old]
    await redis.aclose()


def test_replay_refuses_a_since_that_names_no_time(tmp_path: Path) -> None:
    argv = ["receiver", "replay", "--since", "yesterday", "--config", str(tmp_path / "x.yaml")]
    result = subprocess.run(
        [sys.executable, "-m", "gemini_webhooks", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--since 'yesterday': expected an RFC 3339 time" in result.stderr
