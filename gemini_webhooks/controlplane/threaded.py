"""The control plane on a background thread's event loop, for tests and benchmarks that
run their own loop (pytest, kopf): `start()` blocks until the API server is ready;
`stop()` stops every process it started. No node: what needs Pods to run uses the real
node (`scripts/control-plane up`, `tests/fixtures/real_node.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

from gemini_webhooks.controlplane import build
from gemini_webhooks.controlplane.cluster import ControlPlane


class ThreadedControlPlane:
    def __init__(self, root: Path, *, progress: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.progress = progress or (lambda _line: None)
        self.plane: ControlPlane | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 240.0) -> None:
        binaries = build.build_control_plane(self.progress)
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(binaries), loop).result(timeout)
        except BaseException:
            self.stop()
            raise

    async def _start(self, binaries: dict[str, Path]) -> None:
        self.plane = ControlPlane(self.root, binaries, progress=self.progress)
        await self.plane.start()

    async def _stop(self) -> None:
        if self.plane is not None:
            await self.plane.stop()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        loop.close()
        self._loop = None

    @property
    def admin_kubeconfig(self) -> Path:
        assert self.plane is not None
        return self.plane.layout.admin_kubeconfig

    @property
    def server(self) -> str:
        assert self.plane is not None
        return self.plane.server
