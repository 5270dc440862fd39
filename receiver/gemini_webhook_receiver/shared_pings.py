"""Verified pings kept in Redis, so that every replica answers `/internal/pings` for all.

In memory, a ping is known only to the pod that took it, while the operator asks the
internal Service, which picks any pod: with several replicas its verdict would depend on
luck. In Redis mode each replica writes the last verified ping of a source to one small
key (`<stream>:pings:<source>`, expiring after `TTL_SECONDS`), and reads all sources' keys
when asked. The keys are beside the stream's, so receivers that share a stream share them.

A ping is deduplicated on its `webhook-id` as an event is (the same `SET NX EX` key as the
stream's accept script, whatever the dedup backend): a replayed ping, within the dedup TTL,
leaves the record as it was, so a captured ping cannot make a broken path look verified.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis

# Longer than any sensible health-check interval; a ping older than this is not news.
TTL_SECONDS = 7 * 24 * 3600

# One call, so that the dedup key and the record are written together or not at all.
_RECORD = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
"""


class SharedPingError(Exception):
    """A stored ping record is not what a receiver writes (message names the key)."""


class SharedPings:
    def __init__(
        self, client: aioredis.Redis, stream: str, dedup_prefix: str, dedup_ttl: int
    ) -> None:
        # Replies are bytes (never decoded), as in `queue.Stream`.
        self.client: Any = client
        self.prefix = f"{stream}:pings:"
        self.dedup_prefix = dedup_prefix
        self.dedup_ttl = dedup_ttl
        self._record = client.register_script(_RECORD)

    def key(self, source: str) -> str:
        return self.prefix + source

    async def record(self, source: str, msg_id: str, document: dict[str, Any]) -> bool:
        """Store the source's last verified ping, unless its id was seen within the dedup
        TTL (False: a replay, nothing written); raises RedisError / OSError."""
        stored = await self._record(
            keys=[self.dedup_prefix + msg_id, self.key(source)],
            args=[self.dedup_ttl, orjson.dumps(document), TTL_SECONDS],
        )
        return bool(stored)

    async def read(self, sources: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored pings of `sources` (those that have one); raises RedisError /
        OSError, or SharedPingError for a record that is not a JSON object."""
        names = list(sources)
        if not names:
            return {}
        values = await self.client.mget([self.key(name) for name in names])
        found: dict[str, dict[str, Any]] = {}
        for name, raw in zip(names, values, strict=True):
            if raw is None:
                continue
            try:
                document = orjson.loads(raw)
            except orjson.JSONDecodeError:
                document = None
            if not isinstance(document, dict):
                raise SharedPingError(f"{self.key(name)} does not hold a ping record")
            found[name] = document
        return found
