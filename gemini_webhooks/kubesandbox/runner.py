"""Running the sandbox: in-process on the current event loop, or in a background thread.

In-process (async), on an ephemeral port::

    async with KubeSandboxServer(kubeconfig=tmp_path / "kubeconfig") as server:
        server.base_url, server.kubeconfig, server.sandbox.faults, server.sandbox.audit

In a thread (for synchronous code, subprocesses such as kubectl, or kopf on its own loop)::

    with ThreadedKubeSandbox(kubeconfig=path) as server: ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp.web
import yaml

from gemini_webhooks.kubesandbox.server import KubeSandbox

CONTEXT = "kube-sandbox"


def kubeconfig_text(base_url: str, namespace: str = "default") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": base_url}}],
        # The sandbox authenticates nobody; the token only keeps clients from prompting.
        "users": [{"name": CONTEXT, "user": {"token": "kube-sandbox"}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(path: Path, base_url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(kubeconfig_text(base_url))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


class KubeSandboxServer:
    """The sandbox served over HTTP on the running event loop (port 0 = ephemeral)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kubeconfig: Path | str | None = None,
        sandbox: KubeSandbox | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.kubeconfig = Path(kubeconfig) if kubeconfig is not None else None
        self.sandbox = sandbox if sandbox is not None else KubeSandbox()
        self._runner: aiohttp.web.ServerRunner | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        await self.sandbox.__aenter__()
        try:
            # Cancel handlers whose client went away, so abandoned watches do not linger.
            server = aiohttp.web.Server(self.sandbox, handler_cancellation=True)
            self._runner = aiohttp.web.ServerRunner(
                server, handle_signals=False, shutdown_timeout=1
            )
            await self._runner.setup()
            site = aiohttp.web.TCPSite(self._runner, self.host, self.port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self.kubeconfig is not None:
            write_kubeconfig(self.kubeconfig, self.base_url)

    async def stop(self) -> None:
        self.sandbox.cut_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.sandbox.__aexit__(None, None, None)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ThreadedKubeSandbox:
    """The sandbox on its own event loop in a daemon thread; `call()` runs code there."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kube-sandbox", daemon=True
        )
        self.server: KubeSandboxServer | None = None

    def start(self) -> None:
        self._thread.start()
        try:
            self.server = self._submit(self._create())
        except BaseException:
            self._shutdown_loop()
            raise
        sandbox = self.server.sandbox
        cut, expire = sandbox.cut_watches, sandbox.expire_resource_versions
        # Fault hooks touch the loop's state: marshal them onto the loop thread.
        sandbox.faults._cut_watches = lambda r, g: self.call(cut, r, g)
        sandbox.faults._expire = lambda: self.call(expire)

    async def _create(self) -> KubeSandboxServer:
        server = KubeSandboxServer(**self._kwargs)
        await server.start()
        return server

    def _submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the sandbox's loop thread and return its result."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except Exception as e:
                future.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def stop(self) -> None:
        try:
            if self.server is not None:
                self._submit(self.server.stop())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
