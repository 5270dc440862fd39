"""Where signing secrets come from: a mounted file (polled) or a Kubernetes Secret (watched).

Both hand a parsed `SigningSecrets` (or None when the Secret is gone) to a callback on the
event loop. A bad update is counted and logged and the previous secrets stay in force.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote, urlencode

from gemini_webhooks.contracts.receiver_config import FileSecretRef, KubernetesSecretRef
from gemini_webhooks.contracts.signing_secret import (
    KEY_SECRETS,
    SecretFormatError,
    SigningSecrets,
    decode,
)
from gemini_webhooks.kube_access import ClusterAccess

from . import kube_get, metrics
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
    """List-then-watch one Secret through the API, on the event loop (`kube_get`).

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

    def _target(self, **query: str) -> str:
        return f"{self._path}?{urlencode({**self._selector, **query})}"

    async def _list(self, access: ClusterAccess, tls: ssl.SSLContext | bool) -> str:
        """Lists the Secret, hands its data on, and returns the list's resourceVersion."""
        async with kube_get.get(
            access,
            tls,
            self._target(),
            connect_timeout=_REQUEST_TIMEOUT_SECONDS,
            read_timeout=_REQUEST_TIMEOUT_SECONDS,
        ) as (status, body):
            if status != 200:
                raise ApiError(status)
            listed = bytearray()
            async for chunk in body:
                listed += chunk
                if len(listed) > MAX_EVENT_BYTES:
                    raise OversizedEvent(f"a list over {MAX_EVENT_BYTES} bytes")
        data, version = parse_list(bytes(listed))
        self._observe(data)
        return version

    async def _watch(
        self, access: ClusterAccess, tls: ssl.SSLContext | bool, version: str
    ) -> AsyncIterator[WatchEvent]:
        """The events of one watch from `version`, until the server ends it."""
        target = self._target(
            watch="true",
            resourceVersion=version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(self._watch_timeout),
        )
        async with kube_get.get(
            access,
            tls,
            target,
            connect_timeout=_REQUEST_TIMEOUT_SECONDS,
            read_timeout=self._watch_timeout + _WATCH_READ_MARGIN_SECONDS,
        ) as (status, body):
            if status == 410:
                raise ResourceVersionGone()
            if status != 200:
                raise ApiError(status)
            lines = LineSplitter()
            async for chunk in body:
                for line in lines.feed(chunk):
                    yield parse_event(line)

    async def _follow(self, access: ClusterAccess, tls: ssl.SSLContext | bool) -> None:
        """List, then watch from the list's version, resuming each watch the server ends.
        Returns when the server forgot our version (410 Gone) after the watch had moved
        on from the list's: list again. Raises why the list or a watch failed, 410 Gone
        right after the list among them."""
        version = await self._list(access, tls)
        self._first.set()
        loop = asyncio.get_running_loop()
        fresh = True  # the watch starts from the list's version and has seen nothing yet
        while True:
            started = loop.time()
            try:
                async for event in self._watch(access, tls, version):
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
        backoff = _BACKOFF_SECONDS
        loaded: tuple[ClusterAccess, ssl.SSLContext | bool] | None = None
        while True:
            try:
                if loaded is None:
                    access = ClusterAccess.load()
                    loaded = access, access.ssl_context()
                await self._follow(*loaded)
                backoff = _BACKOFF_SECONDS  # expired history: list again at once
                continue
            except ResourceVersionGone:
                pass  # Gone right after a list: do not list in a tight loop
            except Exception as error:  # the watch must survive any failure
                self._report_watch_error(error)
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, _MAX_BACKOFF_SECONDS)

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
            async with asyncio.timeout(5.0):
                await self._first.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


SecretSource = FileSecretSource | KubernetesSecretSource
