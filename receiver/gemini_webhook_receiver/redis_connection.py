"""The receiver's Redis client: a fixed URL or the primary Sentinel names, and every new
connection's persistence settings read before its first command (`DurabilityGate`).

Reading them on connect, not once, is what catches a restarted server or a failover to a
primary configured differently: redis-py opens a new connection in both cases.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ResponseError

from gemini_webhooks.contracts.receiver_config import RedisConfig

from .durability import DurabilityGate, settings_from_reply

SOCKET_TIMEOUT = 5.0


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def open_client(config: RedisConfig, gate: DurabilityGate | None = None) -> aioredis.Redis:
    """A client for the configured server; with `gate`, each connection reports to it."""
    kwargs: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT}
    if gate is not None:

        async def on_connect(connection: Connection) -> None:
            await connection.on_connect()
            await connection.send_command("CONFIG", "GET", "append*")
            try:
                reply = await connection.read_response()
            except ResponseError:  # CONFIG disabled or not permitted for this user
                gate.observe(None)
            else:
                gate.observe(settings_from_reply(reply))

        kwargs["redis_connect_func"] = on_connect
    if config.sentinel is not None:
        sentinel = Sentinel(
            [_address(a) for a in config.sentinel.addresses],
            socket_timeout=SOCKET_TIMEOUT,
        )
        return sentinel.master_for(config.sentinel.master_name, db=config.sentinel.db, **kwargs)
    assert config.url is not None  # the config model requires one of the two
    return aioredis.Redis.from_url(config.url, **kwargs)
