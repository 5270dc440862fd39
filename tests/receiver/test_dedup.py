"""The in-memory dedup map: TTL and a hard bound on its size."""

from __future__ import annotations

from gemini_webhook_receiver.dedup import MemoryDedup


def test_seen_id_is_refused_within_ttl() -> None:
    dedup = MemoryDedup(ttl_seconds=100, max_entries=10)
    assert dedup.claim_now("a", now=0)
    assert not dedup.claim_now("a", now=99)


def test_seen_id_is_forgotten_after_ttl() -> None:
    dedup = MemoryDedup(ttl_seconds=100, max_entries=10)
    dedup.claim_now("a", now=0)
    assert dedup.claim_now("a", now=101)


def test_map_never_exceeds_its_bound() -> None:
    dedup = MemoryDedup(ttl_seconds=10**6, max_entries=100)
    for i in range(1000):
        dedup.claim_now(str(i), now=i)
    assert len(dedup) == 100
    assert dedup.claim_now("0", now=1001)  # the oldest were dropped first
    assert not dedup.claim_now("999", now=1001)


def test_expired_entries_are_purged_as_new_ones_arrive() -> None:
    dedup = MemoryDedup(ttl_seconds=10, max_entries=1000)
    for i in range(50):
        dedup.claim_now(str(i), now=i)
    assert len(dedup) <= 11
