"""Run an `Emulator` on its own event loop in a background thread, so synchronous code
(the sync `google-genai` client, sync tests, demos) can use it without blocking it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from .app import Emulator, EmulatorConfig

T = TypeVar("T")


class ThreadedEmulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gemini-emulator", daemon=True
        )
        self._config = config
        self.emulator: Emulator | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the emulator's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self) -> ThreadedEmulator:
        self._thread.start()

        async def make() -> Emulator:
            emulator = Emulator(self._config)
            await emulator.start()
            return emulator

        self.emulator = self.call(make())
        return self

    def stop(self) -> None:
        if self.emulator is not None:
            self.call(self.emulator.stop())
            self.emulator = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def base_url(self) -> str:
        assert self.emulator is not None, "not started"
        return self.emulator.base_url

    def __enter__(self) -> ThreadedEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
