"""Where signing secrets come from: a mounted file (polled) or a Kubernetes Secret (watched).

Both hand a parsed `SigningSecrets` (or None when the Secret is gone) to a callback on the
event loop. A bad update is counted and logged and the previous secrets stay in force.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from gemini_webhooks.contracts.receiver_config import FileSecretRef, KubernetesSecretRef
from gemini_webhooks.contracts.signing_secret import (
    KEY_SECRETS,
    SecretFormatError,
    SigningSecrets,
    decode,
)
from gemini_webhooks.kube_access import ClusterAccess

from . import metrics
from .logs import log
from .watch_stream import (
    MAX_EVENT_BYTES,
    ApiError,
    Data,
    LineSplitter,
    OversizedEvent,
    ResourceVersionGone,
    WatchEvent,
    parse_event,
    parse_list,
)

if TYPE_CHECKING:  # aiohttp is imported only where a Secret is watched
    import aiohttp

OnUpdate = Callable[[SigningSecrets | None], None]
_FILE_POLL_SECONDS = 0.2


def _report_error(webhook: str, what: str, error: Exception) -> None:
    metrics.secret_reloads.labels(webhook, "error").inc()
    # SecretFormatError messages never carry secret material; other errors: type only.
    detail = str(error) if isinstance(error, SecretFormatError) else type(error).__name__
    log(40, "signing secrets not loaded", webhook=webhook, source=what, error=detail)


class FileSecretSource:
    """Re-reads the file when its identity or content changes (kubelet swaps a symlink)."""

    def __init__(self, webhook: str, ref: FileSecretRef, on_update: OnUpdate) -> None:
        self._configured = Path(ref.path)
        self._webhook = webhook
        self._on_update = on_update
        self._seen: bytes | None = None
        self._task: asyncio.Task[None] | None = None

    def _file(self) -> Path:
        # Decided at every poll: a mounted directory may appear after we start.
        path = self._configured
        return path / KEY_SECRETS if path.is_dir() else path

    def poll(self) -> None:
        try:
            raw = self._file().read_bytes()
        except OSError as error:
            if self._seen is not None or self._task is None:
                _report_error(self._webhook, "file", error)
            self._seen = None
            return
        if raw == self._seen:
            return
        self._seen = raw
        try:
            secrets = decode({KEY_SECRETS: raw.decode()})
        except (SecretFormatError, UnicodeDecodeError) as error:
            _report_error(self._webhook, "file", error)
            return
        self._on_update(secrets)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(_FILE_POLL_SECONDS)
            self.poll()

    async def start(self) -> None:
        self.poll()
        self._task = asyncio.create_task(self._run(), name=f"secrets-file-{self._webhook}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


_WATCH_TIMEOUT_SECONDS = 300  # the server ends each watch after this; we resume it
_WATCH_READ_MARGIN_SECONDS = 10  # the client's read timeout is this much longer
_REQUEST_TIMEOUT_SECONDS = 30.0  # connecting, and a whole list
_BACKOFF_SECONDS = 1.0  # after a failure; doubled at each failure in a row, up to the next
_MAX_BACKOFF_SECONDS = 30.0
_UNSEEN = object()  # nothing emitted yet


class KubernetesSecretSource:
    """List-then-watch one Secret through the API, on the event loop (aiohttp).

    Credentials come from `gemini_webhooks.kube_access` (a kubeconfig, else the pod's
    ServiceAccount, in client-go's order). Updates arrive with the watch event (well under
    a second after the API server stores the change). A watch that the server ends (its
    `timeoutSeconds`) is resumed from the last resourceVersion seen (bookmarks included);
    the Secret is listed again only after 410 Gone or an error (a failed request, a
    malformed or oversized event), with a backoff. The callback runs only when the
    Secret's data, or whether it exists, changed.
    """

    def __init__(
        self,
        webhook: str,
        ref: KubernetesSecretRef,
        on_update: OnUpdate,
        *,
        watch_timeout_seconds: int = _WATCH_TIMEOUT_SECONDS,
    ) -> None:
        self._webhook = webhook
        self._on_update = on_update
        self._watch_timeout = watch_timeout_seconds
        self._first = asyncio.Event()  # the first list answered, or failed
        self._task: asyncio.Task[None] | None = None
        self._last: object = _UNSEEN  # the data (or None) last handed on
        self._path = f"/api/v1/namespaces/{quote(ref.namespace, safe='')}/secrets"
        self._selector = {"fieldSelector": f"metadata.name={ref.name}"}

    def _observe(self, data: Data | None) -> None:
        """Hand `data` on if it differs from what was handed on last (a bad update too:
        it is reported once, not at every re-list)."""
        if data == self._last:
            return
        self._last = dict(data) if data is not None else None
        if data is None:
            self._on_update(None)
            return
        try:
            update = decode({k: base64.b64decode(v).decode() for k, v in data.items()})
        except (SecretFormatError, ValueError) as error:
            _report_error(self._webhook, "kubernetes", error)
            return
        self._on_update(update)

    async def _list(self, session: aiohttp.ClientSession, access: ClusterAccess) -> str:
        """Lists the Secret, hands its data on, and returns the list's resourceVersion."""
        import aiohttp

        async with session.get(
            access.server.rstrip("/") + self._path,
            params=self._selector,
            headers=access.headers(),
            timeout=aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_SECONDS),
        ) as response:
            if response.status != 200:
                raise ApiError(response.status)
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_EVENT_BYTES:
                    raise OversizedEvent(f"a list over {MAX_EVENT_BYTES} bytes")
        data, version = parse_list(bytes(body))
        self._observe(data)
        return version

    async def _watch(
        self, session: aiohttp.ClientSession, access: ClusterAccess, version: str
    ) -> AsyncIterator[WatchEvent]:
        """The events of one watch from `version`, until the server ends it."""
        import aiohttp

        params = {
            **self._selector,
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._watch_timeout),
        }
        timeout = aiohttp.ClientTimeout(
            sock_connect=_REQUEST_TIMEOUT_SECONDS,
            sock_read=self._watch_timeout + _WATCH_READ_MARGIN_SECONDS,
        )
        async with session.get(
            access.server.rstrip("/") + self._path,
            params=params,
            headers=access.headers(),
            timeout=timeout,
        ) as response:
            if response.status == 410:
                raise ResourceVersionGone()
            if response.status != 200:
                raise ApiError(response.status)
            lines = LineSplitter()
            async for chunk in response.content.iter_any():
                for line in lines.feed(chunk):
                    yield parse_event(line)

    async def _follow(self, session: aiohttp.ClientSession, access: ClusterAccess) -> None:
        """List, then watch from the list's version, resuming each watch the server ends.
        Returns when the server forgot our version (410 Gone) after the watch had moved
        on from the list's: list again. Raises why the list or a watch failed, 410 Gone
        right after the list among them."""
        version = await self._list(session, access)
        self._first.set()
        loop = asyncio.get_running_loop()
        fresh = True  # the watch starts from the list's version and has seen nothing yet
        while True:
            started = loop.time()
            try:
                async for event in self._watch(session, access, version):
                    if event.kind != "BOOKMARK":
                        self._observe(event.data)
                    if event.resource_version:
                        version, fresh = event.resource_version, False
            except ResourceVersionGone:
                if fresh:
                    raise
                return
            fresh = False  # the server ended the watch: resume from `version`
            if loop.time() - started < min(_BACKOFF_SECONDS, self._watch_timeout / 2):
                await asyncio.sleep(_BACKOFF_SECONDS)  # ended at once: no busy loop

    async def _run(self) -> None:
        import aiohttp

        backoff = _BACKOFF_SECONDS
        session: aiohttp.ClientSession | None = None
        try:
            while True:
                try:
                    if session is None:
                        access = ClusterAccess.load()
                        connector = aiohttp.TCPConnector(ssl=access.ssl_context(), limit=2)
                        session = aiohttp.ClientSession(connector=connector)
                    await self._follow(session, access)
                    backoff = _BACKOFF_SECONDS  # expired history: list again at once
                    continue
                except ResourceVersionGone:
                    pass  # Gone right after a list: do not list in a tight loop
                except Exception as error:  # the watch must survive any failure
                    self._report_watch_error(error)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, _MAX_BACKOFF_SECONDS)
        finally:
            if session is not None:
                await session.close()

    def _report_watch_error(self, error: Exception) -> None:
        status = getattr(error, "status", None)
        log(
            40,
            "secret watch failed",
            webhook=self._webhook,
            error=type(error).__name__,
            status=status,
        )
        metrics.secret_reloads.labels(self._webhook, "error").inc()
        self._first.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"secrets-kube-{self._webhook}")
        # Give the first list a moment so readiness reflects it; never block start-up on it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), 5.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


SecretSource = FileSecretSource | KubernetesSecretSource
