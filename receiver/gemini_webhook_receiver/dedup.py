"""Deduplication on `webhook-id`: claim an id before delivering, release it if delivery fails.

A claimed id is answered 2xx and not forwarded again; a released one (delivery failed, 503
sent) is claimable by Gemini's retry. This is the memory backend (one replica, bounded);
the Redis backend is part of the stream's accept script (`queue._ADMIT`: `SET NX EX`).
Synchronous on purpose: it is a dict operation on the hot path, not I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class MemoryDedup:
    """Insertion-ordered map id → expiry; the oldest entries go first (TTL, then the bound)."""

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def claim_now(self, msg_id: str, now: float) -> bool:
        seen = self._seen
        expiry = seen.get(msg_id)
        if expiry is not None and expiry > now:
            return False
        if expiry is not None:
            del seen[msg_id]
        seen[msg_id] = now + self._ttl
        # Entries are in expiry order (constant TTL), so expired ones are at the front.
        while seen:
            oldest, oldest_expiry = next(iter(seen.items()))
            if oldest_expiry > now and len(seen) <= self._max:
                break
            del seen[oldest]
        return True

    def claim(self, msg_id: str) -> bool:
        """True when this id was not seen within the TTL (and is now claimed)."""
        return self.claim_now(msg_id, time.monotonic())

    def release(self, msg_id: str) -> None:
        """Forget a claim whose delivery failed, so that Gemini's retry is taken."""
        self._seen.pop(msg_id, None)

    def __len__(self) -> int:
        return len(self._seen)
