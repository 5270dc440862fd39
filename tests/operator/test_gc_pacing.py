"""The operator process's paced garbage collection (`gc_pacing`): when a full collection
runs, how the next is spaced, and that the running operator has it."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from gemini_webhook_operator import cli, gc_pacing, runtime
from gemini_webhook_operator.runtime import RunConfig


def test_the_next_collection_is_a_second_away_unless_the_last_was_long() -> None:
    assert gc_pacing.next_delay(0.002) == 1.0
    assert gc_pacing.next_delay(0.2) == pytest.approx(4.0)  # 5% of the time at most
    assert gc_pacing.next_delay(0.2, min_interval=0.5, max_share=0.5) == 0.5


def test_a_full_collection_runs_only_after_something_was_promoted() -> None:
    assert not gc_pacing.promoted_since_full((650, 9, 0))
    assert gc_pacing.promoted_since_full((3, 0, 1))


class _Cycle:
    def __init__(self) -> None:
        self.me = self
        self.payload = bytearray(1 << 20)


async def test_a_reference_cycle_is_freed_by_the_paced_collector_not_left_to_cpython() -> None:
    thresholds = gc.get_threshold()
    gc.disable()  # CPython's own collections would free it too: only ours may
    try:
        cycle = _Cycle()
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is not None
        collector = asyncio.create_task(
            gc_pacing.collect_paced(min_interval=0.01, counts=lambda: (0, 0, 1))
        )
        try:
            async with asyncio.timeout(5):
                while gone() is not None:
                    await asyncio.sleep(0.005)
        finally:
            collector.cancel()
    finally:
        gc.enable()
        gc.set_threshold(*thresholds)


async def test_nothing_is_collected_while_nothing_was_promoted() -> None:
    collections: list[int] = []
    collector = asyncio.create_task(
        gc_pacing.collect_paced(
            min_interval=0.01, collect=lambda: collections.append(1), counts=lambda: (5, 2, 0)
        )
    )
    await asyncio.sleep(0.1)
    collector.cancel()
    assert collections == []


async def test_the_operator_process_collects_its_garbage_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running: set[str] = set()

    async def operator(access: Any, config: RunConfig, *, operator: Any = None) -> None:
        await asyncio.sleep(0)
        running.update(task.get_name() for task in asyncio.all_tasks())

    monkeypatch.setattr(runtime, "run", operator)
    await cli._serve(None, RunConfig(), None)  # type: ignore[arg-type]
    assert "paced garbage collection" in running
    await asyncio.sleep(0)
    assert not any(t.get_name() == "paced garbage collection" for t in asyncio.all_tasks())
