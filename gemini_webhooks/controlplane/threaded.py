"""The control plane and its node on a background thread's event loop, for tests and
benchmarks that run their own loop (pytest, kopf): `start()` blocks until the API server
is ready and the node is registered; `stop()` stops every process it started."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gemini_webhooks.controlplane import build
from gemini_webhooks.controlplane.cluster import ControlPlane
from gemini_webhooks.controlplane.node import Node


class ThreadedControlPlane:
    def __init__(
        self,
        root: Path,
        *,
        with_node: bool = True,
        node_env: Mapping[str, str] | None = None,
        static_endpoints: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.with_node = with_node
        self.node_env = node_env
        self.static_endpoints = static_endpoints
        self.progress = progress or (lambda _line: None)
        self.plane: ControlPlane | None = None
        self.node: Node | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._node_task: asyncio.Task[None] | None = None

    def start(self, timeout: float = 240.0) -> None:
        binaries = build.build_control_plane(self.progress)  # its node is the process node
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
        if self.with_node:
            self.node = Node.for_control_plane(
                self.plane,
                progress=self.progress,
                base_env=self.node_env,
                static_endpoints=self.static_endpoints,
            )
            await self.node.register()
            self._node_task = asyncio.create_task(self.node.run(), name="node")

    def call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the control plane's loop (e.g. the node's methods)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _stop(self) -> None:
        if self._node_task is not None:
            self._node_task.cancel()
            await asyncio.gather(self._node_task, return_exceptions=True)
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
