"""Deduplication on `webhook-id`: claim an id before delivering, release it if delivery fails.

A claimed id is answered 2xx and not forwarded again; a released one (delivery failed, 503
sent) is claimable by Gemini's retry. This is the memory backend (one replica, bounded);
the Redis backend is part of the stream's accept script (`queue._ADMIT`: `SET NX EX`).
Synchronous on purpose: it is a dict operation on the hot path, not I/O.
"""

from __future__ import annotations

import time
from collections import deque

SLOTS_PER_TTL = 64


class MemoryDedup:
    """Ids claimed within the TTL, in time slots of TTL/64; the oldest go first.

    An id is remembered at least `ttl_seconds` and at most one slot longer. Memory is the
    point: at the default bound (a million ids, what 11 deliveries a second leave in 25 h)
    an insertion-ordered map of id → expiry (an OrderedDict and a float per id) cost about
    190 MiB, more than the receiver's default memory limit. Here an id costs its string
    and one dict entry (whose value, the slot number, is one object shared by the slot)
    and one pointer in its slot's queue: about 100 MiB at a million.

    Eviction is by whole expired slots, and by the oldest ids first while more than
    `max_entries` are held (released ids included, so a long outage of the targets, with
    every delivery claimed and released, cannot grow the queues past the bound either).
    """

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._slot_seconds = ttl_seconds / SLOTS_PER_TTL
        self._seen: dict[str, int] = {}
        # (slot number, ids claimed in it in order); a queued id whose entry in `_seen` now
        # names another slot (claimed again after expiring) or none (released) is skipped.
        self._slots: deque[tuple[int, deque[str]]] = deque()
        self._queued = 0
        # When the oldest slot expires (inf: no slot): until then, and while the bound
        # holds, a claim has nothing to evict and skips looking.
        self._evict_at = float("inf")

    def _expired(self, slot: int, now: float) -> bool:
        return self._expiry(slot) <= now

    def claim_now(self, msg_id: str, now: float) -> bool:
        seen = self._seen
        claimed_in = seen.get(msg_id)
        if claimed_in is not None and not self._expired(claimed_in, now):
            return False
        slot = int(now // self._slot_seconds)
        slots = self._slots
        if not slots or slots[-1][0] != slot:
            if not slots:
                self._evict_at = self._expiry(slot)
            slots.append((slot, deque()))
        current, ids = slots[-1]
        seen[msg_id] = current  # the slot's own int object: shared, not one per id
        ids.append(msg_id)
        self._queued += 1
        if now >= self._evict_at or self._queued > self._max:
            self._evict(now)
        return True

    def _expiry(self, slot: int) -> float:
        """When every id claimed in `slot` was claimed at least the TTL ago."""
        return (slot + 1) * self._slot_seconds + self._ttl

    def _evict(self, now: float) -> None:
        slots, seen = self._slots, self._seen
        while slots:
            slot, ids = slots[0]
            expired = self._expired(slot, now)
            if not expired and self._queued <= self._max:
                break
            while ids and (expired or self._queued > self._max):
                old = ids.popleft()
                self._queued -= 1
                if seen.get(old) is slot:
                    del seen[old]
            if ids:
                break
            slots.popleft()
        self._evict_at = self._expiry(slots[0][0]) if slots else float("inf")

    def claim(self, msg_id: str) -> bool:
        """True when this id was not seen within the TTL (and is now claimed)."""
        return self.claim_now(msg_id, time.monotonic())

    def release(self, msg_id: str) -> None:
        """Forget a claim whose delivery failed, so that Gemini's retry is taken."""
        self._seen.pop(msg_id, None)

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def queued(self) -> int:
        """Ids held in the slot queues, released and re-claimed ones included."""
        return self._queued
