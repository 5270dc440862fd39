"""The cyclic garbage collector, paced: a full collection at most once a second while the
operator works, and never more than a twentieth of its time.

kopf wraps every watch event of a resource in a `Body` whose views (`meta`, `spec`,
`status`) refer back to it: a reference cycle with the whole object inside, which only the
cyclic collector frees. Such a cycle outlives the few collections of the young generations
that happen while its event is handled, so it lands in the oldest generation, and CPython
collects that one only once the objects promoted since its last full collection are a
quarter of those that survived it: with 1,000 resources arriving together, thousands of
handled events' bodies waited for it (kopf reuses one live body per resource instead only
when a timer or daemon is registered, `drift.py`). bench/operator --kube real, 1,000
resources: peak RSS 160-163 -> 145 MiB with a full collection every second.

`next_delay` and `promoted_since_full` decide (pure); `collect_paced` is the task that
`cli` runs beside the operator.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

MIN_INTERVAL = 1.0  # seconds between two full collections, at least
MAX_SHARE = 0.05  # of the time spent collecting, at most


def next_delay(
    last_duration: float, *, min_interval: float = MIN_INTERVAL, max_share: float = MAX_SHARE
) -> float:
    """Seconds until the next full collection, after one that took `last_duration`: a long
    one (many objects kept, many resources) spaces the next out to stay within `max_share`."""
    return max(min_interval, last_duration / max_share)


def promoted_since_full(counts: tuple[int, int, int]) -> bool:
    """Has anything moved into the oldest generation since the last full collection?
    (`gc.get_count()[2]` counts the collections of the middle generation since then, the
    only ones that promote into it; none: a full collection has nothing new to find.)"""
    return counts[2] > 0


async def collect_paced(
    *,
    min_interval: float = MIN_INTERVAL,
    max_share: float = MAX_SHARE,
    collect: Callable[[], object] = gc.collect,
    counts: Callable[[], tuple[int, int, int]] = gc.get_count,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Until cancelled: a full collection whenever something was promoted since the last
    one, paced by `next_delay`."""
    delay = min_interval
    while True:
        await asyncio.sleep(delay)
        if not promoted_since_full(counts()):
            delay = min_interval
            continue
        started = clock()
        collect()
        delay = next_delay(clock() - started, min_interval=min_interval, max_share=max_share)
