"""Time, injectable: the emulator asks a Clock for `now()` and to `sleep()`.

`--time-scale F` compresses *durations* (backoff, secret grace, key overlap, batch run time,
failure window) by F; it does not make the calendar run faster, so timestamps stay real
and receivers' 5-minute replay windows keep working.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol


class WallClock(Protocol):
    def now(self) -> datetime: ...


class Clock(WallClock, Protocol):
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(frozen=True)
class TimeScale:
    """Maps a nominal duration (as the real service has it) to the one the emulator waits."""

    factor: float = 1.0

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError("time scale must be a positive number")

    def seconds(self, nominal_seconds: float) -> float:
        return nominal_seconds / self.factor

    def delta(self, nominal: timedelta) -> timedelta:
        return nominal / self.factor
