"""Durable means durable: with real `redis-server` and `redis-sentinel` processes, the
receiver acknowledges only what Redis keeps — through a `kill -9` of Redis and a Sentinel
failover under load — and refuses a server without persistence."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis

from gemini_webhook_receiver.app import serve
from gemini_webhook_receiver.receiver import RedisNotDurable
from gemini_webhooks.contracts import receiver_config as rc
from tests.fixtures.redis import (
    VOLATILE_ARGS,
    RedisServer,
    SentinelCluster,
    free_port,
    wait_until,
)

from .conftest import Client, RecordingTarget, StartReceiver, base_config, envelope, signed_headers

pytestmark = pytest.mark.real_component


def _config(target_url: str, path: Path, **redis_section: Any) -> dict[str, Any]:
    config = base_config(target_url, path)
    config["redis"] = {"claim_idle_seconds": 1, **redis_section}
    config["dedup"] = {"backend": "redis"}
    config["forwarding"] = {
        "timeout_seconds": 2,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.2,
    }
    return config


async def _readyz(client: Client) -> tuple[int, dict[str, Any]]:
    status, body = await client.get_json("/readyz")
    return status, body


async def _until(what: str, condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---- refusal at start-up ------------------------------------------------------------------


def test_persistence_off_is_refused_at_start_with_a_clear_message(
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    volatile_redis_server: str,
    tmp_path: Path,
) -> None:
    path, _ = secrets_file
    config_file = tmp_path / "receiver.json"
    config_file.write_text(json.dumps(_config(target.url, path, url=volatile_redis_server)))
    result = subprocess.run(
        [sys.executable, "-m", "gemini_webhooks", "receiver", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        "gemini-webhooks receiver: refusing Redis mode: the Redis server has appendonly off: "
        "events acknowledged to Gemini would be lost if Redis crashed; set `appendonly yes` "
        "with `appendfsync everysec` (or `always`), or set redis.accept_data_loss_risk"
    ) in result.stderr
    assert "receiver listening" not in result.stderr


async def test_fsync_left_to_the_os_is_refused_at_start(
    target: RecordingTarget, secrets_file: tuple[Path, str], durable_redis: RedisServer
) -> None:
    with durable_redis.client() as admin:
        admin.config_set("appendfsync", "no")
    path, _ = secrets_file
    config = rc.from_dict(_config(target.url, path, url=durable_redis.url))
    with pytest.raises(RedisNotDurable, match="appendfsync no"):
        await serve(config, drain_seconds=1)


async def test_a_server_that_hides_its_config_is_refused_at_start(
    target: RecordingTarget, secrets_file: tuple[Path, str], durable_redis: RedisServer
) -> None:
    with durable_redis.client() as admin:
        admin.acl_setuser(
            "receiver",
            enabled=True,
            passwords=["+not-a-real-secret"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-config"],
        )
    path, _ = secrets_file
    url = f"redis://receiver:not-a-real-secret@127.0.0.1:{durable_redis.port}/0"
    config = rc.from_dict(_config(target.url, path, url=url))
    with pytest.raises(RedisNotDurable, match="refused CONFIG GET") as error:
        await serve(config, drain_seconds=1)
    assert "not-a-real-secret" not in str(error.value)


async def test_persistence_off_with_the_risk_accepted_runs_and_says_so(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    volatile_redis_server: str,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(
        _config(target.url, path, url=volatile_redis_server, accept_data_loss_risk=True)
    )
    status, body = await _readyz(client)
    assert status == 200
    assert body["redis_durability"] == {
        "state": "at_risk",
        "reason": "aof_off",
        "message": body["redis_durability"]["message"],
        "risk_accepted": True,
    }
    assert await client.metric("gemini_receiver_redis_durability", state="at_risk") == 1
    assert await client.metric("gemini_receiver_redis_durability", state="durable") == 0
    assert (await client.deliver([secret]))[0] == 200
    await target.wait_for(1)


async def test_aof_everysec_is_durable_in_readyz_and_the_metric(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, _ = secrets_file
    client = await start_receiver(_config(target.url, path, url=redis_server))
    status, body = await _readyz(client)
    assert (status, body["redis_durability"]["state"]) == (200, "durable")
    assert body["checks"]["redis_durable_or_risk_accepted"] is True
    assert await client.metric("gemini_receiver_redis_durability", state="durable") == 1


# ---- on reconnect -------------------------------------------------------------------------


async def test_a_redis_unreachable_at_start_is_checked_once_it_answers(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    tmp_path: Path,
) -> None:
    path, secret = secrets_file
    later = RedisServer(tmp_path / "later", port=free_port())
    later.workdir.mkdir()
    client = await start_receiver(_config(target.url, path, url=later.url))
    assert (await client.deliver([secret]))[0] == 503
    status, body = await _readyz(client)
    assert (status, body["redis_durability"]["reason"]) == (503, "unverified")
    try:
        await asyncio.to_thread(later.start)

        async def accepting() -> bool:
            return (await client.deliver([secret]))[0] == 200

        await _until("the receiver to acknowledge", accepting)
        assert (await _readyz(client))[1]["redis_durability"]["state"] == "durable"
    finally:
        later.kill()


async def test_a_reconnect_to_a_server_without_persistence_stops_acknowledging(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    durable_redis: RedisServer,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(_config(target.url, path, url=durable_redis.url))
    assert (await client.deliver([secret]))[0] == 200
    admin = durable_redis.client()
    try:
        admin.config_set("appendonly", "no")
        admin.client_kill_filter(_type="normal", skipme=True)  # every receiver connection

        async def refused() -> bool:
            return (await client.deliver([secret]))[0] == 503

        await _until("the receiver to refuse", refused)
        status, body = await _readyz(client)
        assert (status, body["redis_durability"]["reason"]) == (503, "aof_off")
        assert await client.metric("gemini_receiver_redis_durability", state="refused") == 1

        admin.config_set("appendonly", "yes")
        admin.client_kill_filter(_type="normal", skipme=True)

        async def accepting() -> bool:
            return (await client.deliver([secret]))[0] == 200

        await _until("the receiver to acknowledge again", accepting)
        assert (await _readyz(client))[0] == 200
    finally:
        admin.close()


# ---- WAIT ---------------------------------------------------------------------------------


async def test_too_few_replicas_within_the_wait_answers_503(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_server: str,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(
        _config(target.url, path, url=redis_server, wait_replicas=1, wait_timeout_seconds=0.1)
    )
    status, answer, _ = await client.deliver([secret])
    assert (status, answer["error"]) == (503, "unavailable")


# ---- under load: kill -9 of Redis, a Sentinel failover -----------------------------------


class Load:
    """Workers posting fresh signed deliveries until stopped; remembers every id answered 2xx
    (acknowledged: Gemini would never send it again) and when it was answered."""

    def __init__(self, url: str, secret: str, workers: int = 8) -> None:
        self.url = url
        self.secret = secret
        self.workers = workers
        self.acked: list[tuple[float, str]] = []
        self.refused = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def ids(self) -> set[str]:
        return {msg_id for _, msg_id in self.acked}

    def acked_since(self, moment: float) -> int:
        return sum(1 for at, _ in self.acked if at > moment)

    async def _work(self, session: aiohttp.ClientSession) -> None:
        for _ in range(100_000):  # bounded; stopped long before
            if self._stop.is_set():
                return
            body = json.dumps(envelope()).encode()
            headers = signed_headers([self.secret], body)
            try:
                async with session.post(self.url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        self.acked.append((time.monotonic(), headers["webhook-id"]))
                        continue
            except (aiohttp.ClientError, OSError):
                pass
            self.refused += 1
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tasks = [asyncio.create_task(self._work(self._session)) for _ in range(self.workers)]
        return self

    async def until_acked(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} of {count} acknowledged"
            await asyncio.sleep(0.02)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()


async def _every_acknowledged_id_delivered(load: Load, target: RecordingTarget) -> None:
    deadline = time.monotonic() + 60
    while load.ids() - set(target.ids()):
        missing = load.ids() - set(target.ids())
        assert time.monotonic() < deadline, f"{len(missing)} acknowledged ids never delivered"
        await asyncio.sleep(0.1)


async def test_kill_9_of_redis_under_load_loses_no_acknowledged_event(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    durable_redis: RedisServer,
) -> None:
    path, secret = secrets_file
    target.delay = 0.02  # keep deliveries pending in Redis when the kill lands
    client = await start_receiver(_config(target.url, path, url=durable_redis.url))
    async with Load(client.url, secret) as load:
        await load.until_acked(300)
        durable_redis.kill()
        killed_at = time.monotonic()
        acked_before_kill = load.ids()
        await asyncio.sleep(0.5)
        assert acked_before_kill - set(target.ids()), "the kill should leave work pending"
        await asyncio.to_thread(durable_redis.start)  # same port, same AOF
        await load.until_acked(len(load.acked) + 200)
        assert load.refused > 0, "Redis was down for half a second: some must have got 503"
        assert load.acked_since(killed_at) >= 200
    await _every_acknowledged_id_delivered(load, target)
    # Acknowledged means stored: the restarted server still had every entry not yet acked
    # by the consumer group, so nothing had to come from anywhere but its AOF.
    with durable_redis.client() as admin:
        assert admin.config_get("appendonly")["appendonly"] == "yes"


async def test_kill_9_of_a_redis_without_persistence_loses_acknowledged_events(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    tmp_path: Path,
) -> None:
    """The control for the test above: the same crash with persistence off (the risk
    accepted) does lose acknowledged events — which is why it is refused by default."""
    path, secret = secrets_file
    target.delay = 0.02
    volatile = RedisServer(tmp_path / "volatile", VOLATILE_ARGS)
    volatile.workdir.mkdir()
    volatile.start()
    try:
        client = await start_receiver(
            _config(target.url, path, url=volatile.url, accept_data_loss_risk=True)
        )
        async with Load(client.url, secret) as load:
            await load.until_acked(300)
            volatile.kill()
            await asyncio.to_thread(volatile.start)
            await load.until_acked(len(load.acked) + 50)
        await asyncio.sleep(3)  # time to deliver whatever survived (nothing did)
        assert load.ids() - set(target.ids()), "acknowledged events should have been lost"
    finally:
        volatile.kill()


async def test_sentinel_failover_under_load_with_wait_1_loses_no_acknowledged_event(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_sentinel: SentinelCluster,
) -> None:
    path, secret = secrets_file
    target.delay = 0.02
    sentinel = {"addresses": redis_sentinel.addresses, "master_name": "primary"}
    client = await start_receiver(
        _config(target.url, path, sentinel=sentinel, wait_replicas=1, wait_timeout_seconds=1)
    )
    old_primary, old_port = redis_sentinel.primary, redis_sentinel.primary.port
    async with Load(client.url, secret) as load:
        await load.until_acked(300)
        old_primary.kill()
        killed_at = time.monotonic()
        await asyncio.to_thread(
            wait_until,
            "the sentinels to promote the replica",
            lambda: redis_sentinel.primary_port() != old_port,
            30.0,
        )
        assert redis_sentinel.primary_port() == redis_sentinel.replica.port
        # The old primary comes back; the sentinels make it a replica of the new one, so
        # that WAIT 1 can be satisfied again.
        await asyncio.to_thread(old_primary.start)
        await load.until_acked(len(load.acked) + 200, timeout=60)
        assert load.acked_since(killed_at) >= 200
    await _every_acknowledged_id_delivered(load, target)
    # With a 1 s down-after, a loaded machine can make the sentinels fail over once more
    # (back to the restarted server); whichever they name is, or soon is, a primary.

    def named_primary_is_master() -> bool:
        try:
            with redis.Redis(port=redis_sentinel.primary_port()) as primary:
                return bool(primary.info("replication")["role"] == "master")
        except redis.RedisError:
            return False

    await asyncio.to_thread(
        wait_until, "the sentinels' primary to be a master", named_primary_is_master, 10.0
    )
    assert await client.metric("gemini_receiver_redis_durability", state="durable") == 1


async def test_replay_reaches_the_primary_through_sentinel(
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    redis_sentinel: SentinelCluster,
    tmp_path: Path,
) -> None:
    path, _ = secrets_file
    sentinel = {"addresses": redis_sentinel.addresses, "master_name": "primary"}
    config_file = tmp_path / "receiver.json"
    config_file.write_text(json.dumps(_config(target.url, path, sentinel=sentinel)))
    primary = aioredis.Redis(port=redis_sentinel.primary.port)
    await primary.xadd("gemini-webhooks:dead-letters", {"id": "msg_dead", "reason": "x"})
    await primary.aclose()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gemini_webhooks",
            "receiver",
            "replay",
            "--config",
            str(config_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "replayed 1 dead letter" in result.stdout
