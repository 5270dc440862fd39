"""Where signing secrets come from: a mounted file (polled) or a Kubernetes Secret (watched).

Both hand a parsed `SigningSecrets` (or None when the Secret is gone) to a callback on the
event loop. A bad update is counted and logged and the previous secrets stay in force.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gemini_webhooks.contracts.receiver_config import FileSecretRef, KubernetesSecretRef
from gemini_webhooks.contracts.signing_secret import (
    KEY_SECRETS,
    SecretFormatError,
    SigningSecrets,
    decode,
)

from . import metrics
from .logs import log

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


def _kube_api() -> Any:
    """In-cluster config in a pod; otherwise the kubeconfig that `KUBECONFIG` names (read
    now, not at import: the client library caches it at import time)."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.CoreV1Api(client.ApiClient(configuration))
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return client.CoreV1Api(config.new_client_from_config(config_file=path))


_WATCH_TIMEOUT_SECONDS = 300  # the server ends each watch after this; we resume it
_WATCH_READ_MARGIN_SECONDS = 10  # the client's read timeout is this much longer
_BACKOFF_SECONDS = 1.0
_UNSEEN = object()  # nothing emitted yet


class KubernetesSecretSource:
    """List-then-watch one Secret with the `kubernetes` client, in a daemon thread.

    The client is synchronous; a thread keeps it off the event loop. Updates arrive with the
    watch event (well under a second after the API server stores the change). A watch that
    the server ends (its `timeoutSeconds`) is resumed from the last resourceVersion seen
    (bookmarks included); the Secret is listed again only after 410 Gone or an error. The
    callback runs only when the Secret's data, or whether it exists, changed.
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
        self._ref = ref
        self._on_update = on_update
        self._watch_timeout = watch_timeout_seconds
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._first = threading.Event()
        self._last: object = _UNSEEN  # the data (or None) last handed on
        self._stream: Any = None  # the open watch, so that stop() can end it

    def _observe(self, data: dict[str, str] | None) -> None:
        """Hand `data` on if it differs from what was handed on last (a bad update too:
        it is reported once, not at every re-list)."""
        if data == self._last:
            return
        self._last = dict(data) if data is not None else None
        self._emit(data)

    def _emit(self, data: dict[str, str] | None) -> None:
        if data is None:
            update: SigningSecrets | None = None
        else:
            try:
                string_data = {k: base64.b64decode(v).decode() for k, v in data.items()}
                update = decode(string_data)
            except (SecretFormatError, ValueError) as error:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_report_error, self._webhook, "kubernetes", error)
                return
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_update, update)

    def _watch_forever(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        ns, name = self._ref.namespace, self._ref.name
        selector = f"metadata.name={name}"
        api = None
        version: str | None = None  # None: list first
        fresh = False  # the watch starts from a list's version and has seen nothing yet
        while not self._stopped.is_set():
            try:
                if api is None:
                    api = _kube_api()
                if version is None:
                    listed = api.list_namespaced_secret(ns, field_selector=selector)
                    self._observe(listed.items[0].data or {} if listed.items else None)
                    self._first.set()
                    version = listed.metadata.resource_version
                    fresh = True
                stream = watch.Watch()
                self._stream = stream
                started = time.monotonic()
                for event in stream.stream(
                    api.list_namespaced_secret,
                    ns,
                    field_selector=selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self._watch_timeout,
                    _request_timeout=self._watch_timeout + _WATCH_READ_MARGIN_SECONDS,
                ):
                    if self._stopped.is_set():
                        stream.stop()
                        break
                    kind = event.get("type")
                    raw = event.get("raw_object")
                    raw = raw if isinstance(raw, dict) else {}
                    if kind == "ERROR":  # the client raises these itself; just in case
                        raise ApiException(status=raw.get("code"), reason=raw.get("reason"))
                    if kind in ("ADDED", "MODIFIED"):
                        self._observe(event["object"].data or {})
                    elif kind == "DELETED":
                        self._observe(None)
                    seen = (raw.get("metadata") or {}).get("resourceVersion")
                    if seen:
                        version = str(seen)
                        fresh = False
                else:
                    fresh = False  # the server ended the watch: resume from `version`
                    if time.monotonic() - started < min(_BACKOFF_SECONDS, self._watch_timeout / 2):
                        self._stopped.wait(_BACKOFF_SECONDS)  # ended at once: no busy loop
            except ApiException as error:
                if self._stopped.is_set():
                    break
                was_fresh, version, fresh = fresh, None, False
                if error.status != 410:
                    self._report_thread_error(error)
                    self._stopped.wait(_BACKOFF_SECONDS)
                elif was_fresh:  # Gone right after a list: do not list in a tight loop
                    self._stopped.wait(_BACKOFF_SECONDS)
            except Exception as error:  # the thread must survive any client failure
                if self._stopped.is_set():
                    break
                version, fresh = None, False
                self._report_thread_error(error)
                self._stopped.wait(_BACKOFF_SECONDS)
            finally:
                self._stream = None

    def _report_thread_error(self, error: Exception) -> None:
        if self._loop is not None and not self._loop.is_closed():
            status = getattr(error, "status", None)
            report = functools.partial(
                log,
                40,
                "secret watch failed",
                webhook=self._webhook,
                error=type(error).__name__,
                status=status,
            )
            self._loop.call_soon_threadsafe(report)
            self._loop.call_soon_threadsafe(
                metrics.secret_reloads.labels(self._webhook, "error").inc
            )
        self._first.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._watch_forever, name=f"secrets-kube-{self._webhook}", daemon=True
        )
        self._thread.start()
        # Give the first list a moment so readiness reflects it; never block start-up on it.
        await asyncio.get_running_loop().run_in_executor(None, self._first.wait, 5.0)

    async def stop(self) -> None:
        self._stopped.set()
        stream = self._stream
        if stream is not None:
            stream.stop()  # unblocks the thread's read instead of waiting for the timeout


SecretSource = FileSecretSource | KubernetesSecretSource
