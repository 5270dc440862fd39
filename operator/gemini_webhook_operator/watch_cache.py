"""A list-then-watch cache of one kind in one namespace (an informer, as client-go's and
controller-runtime's cache): what the operator reads on every reconciliation without asking
the API server each time.

Each cache is started on first use: it LISTs (in pages), then WATCHes from the list's
resourceVersion with bookmarks, and follows the stream until the server ends it (every
`timeout_seconds`), then watches again from the last version it saw. 410 Gone (the history
was compacted), a malformed or oversized event: it lists afresh. A refused or failed request,
a dropped connection: it watches again after a backoff. Events are read with the project's
bounded reader (`gemini_webhooks.watch_events`).

A reader asks whether the cache is known good (`usable`): listed at least once and watching,
or cut off for less than `stale_after` seconds. Otherwise the caller reads the API directly:
nothing is decided on a cache that is not. What the operator writes goes in at once
(`remember`), so a reconciliation sees its own writes; a stale event never replaces a newer
object (resourceVersions compared as the integers kube-apiserver and the sandbox give).

Watches hold their connections for minutes: they get their own connection pool, not the
short-request one (16 connections), and `close` ends every watch and that pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from gemini_webhooks import watch_events
from gemini_webhooks.contracts import label_selector as label_selectors
from gemini_webhooks.kube_access import ClusterAccess
from gemini_webhooks.watch_events import (
    JSON,
    ApiError,
    Event,
    LineSplitter,
    MalformedEvent,
    OversizedEvent,
    ResourceVersionGone,
    WatchStreamError,
)

logger = logging.getLogger(__name__)

# What a cache keeps of an object (never its managed fields): the object, or None to keep
# its name only (a read of that name then goes to the API).
Keep = Callable[[JSON], JSON | None]
Key = tuple[str, str, str]  # (kind, namespace, label selector)


@dataclass(frozen=True)
class WatchSettings:
    # kube-apiserver ends a watch after `timeoutSeconds`; we then watch again from where it
    # ended (client-go's reflector asks for 5-10 minutes).
    timeout_seconds: int = 300
    # No byte for this long on an open watch: the connection is dead (bookmarks arrive
    # about every minute, and the server ends the watch at `timeout_seconds`).
    read_timeout: float = 360.0
    connect_timeout: float = 10.0
    # A cache cut off from its watch for longer than this is no longer known good.
    stale_after: float = 30.0
    # How long a first reader waits for the first listing before reading directly.
    first_sync_wait: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # A kind the API does not serve (404: e.g. no Gateway API) is looked for again this often.
    absent_relist: float = 300.0
    page_size: int = 500
    max_page_bytes: int = 64 * 1024 * 1024


@dataclass(slots=True)
class _Entry:
    version: str | None
    obj: JSON | None  # None: known to exist, kept by name only


def newer(candidate: str | None, held: str | None) -> bool:
    """Whether `candidate` may replace `held`: resourceVersions are opaque to clients, but
    etcd's (and the sandbox's) are increasing integers; anything else is taken as newer."""
    if not candidate or not held or not (candidate.isdigit() and held.isdigit()):
        return True
    return int(candidate) >= int(held)


def compact(obj: JSON) -> JSON:
    """The object as the operator keeps it: without its managedFields (nothing the operator
    decides reads them, and they are often the object's largest part), its keys shared with
    every other object's (interned: each decoded object has its own copy of the same few
    hundred keys; a GeminiWebhook's body holds 7.1 KiB, 5.1 with shared keys). Values are
    not touched."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        obj = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
    kept: JSON = _shared_keys(obj)
    return kept


def _shared_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            (sys.intern(k) if isinstance(k, str) else k): _shared_keys(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_shared_keys(v) for v in value]
    return value


class WatchClient:
    """The watches' own connection pool (no limit: one connection per open watch)."""

    def __init__(self, access: ClusterAccess, settings: WatchSettings) -> None:
        self.access = access
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self.access.server.rstrip("/") + "/",
                headers={"Accept": "application/json"},
                connector=aiohttp.TCPConnector(ssl=self.access.ssl_context(), limit=0),
            )
        return self._session

    @contextlib.asynccontextmanager
    async def get(
        self, path: str, params: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.read_timeout,
        )
        async with self._http().get(
            path.lstrip("/"), params=params, headers=self.access.headers(), timeout=timeout
        ) as response:
            if response.status == 410:
                raise ResourceVersionGone()
            if response.status >= 400:
                raise ApiError(response.status)
            yield response

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """A response's whole body, however it is framed; None once it passes `limit` bytes."""
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class Informer:
    """One (kind, namespace, label selector): its objects by name, kept by a list-watch."""

    def __init__(
        self,
        client: WatchClient,
        path: str,
        selector: str,
        *,
        keep: Keep | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._settings = client.settings
        self._path = path
        self._selector = selector
        self._selects = label_selectors.parse(selector)
        self._keep = keep
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._version: str | None = None  # where the watch resumes; None: list first
        self._synced = False
        self._broken_since: float | None = None
        self._settled = asyncio.Event()  # listed once, or the first attempt failed
        self._task: asyncio.Task[None] | None = None
        self.relists = 0  # lists after the first (410 Gone, a malformed event)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"watch {self._path}")

    async def settled(self) -> None:
        """Until listed once or the first attempt failed (callers bound the wait)."""
        await self._settled.wait()

    @property
    def usable(self) -> bool:
        """Known good: listed, and watching (or cut off for less than `stale_after`)."""
        if not self._synced:
            return False
        broken = self._broken_since
        return broken is None or self._clock() - broken < self._settings.stale_after

    def cached(self, name: str) -> tuple[bool, JSON | None]:
        """(known, the object or None when absent); not known while the cache is not
        usable or keeps only the name."""
        if not self.usable:
            return False, None
        entry = self._entries.get(name)
        if entry is None:
            return True, None
        return entry.obj is not None, entry.obj

    def objects(self) -> list[JSON] | None:
        """Every object kept in full; None while the cache is not usable."""
        if not self.usable:
            return None
        return [e.obj for e in self._entries.values() if e.obj is not None]

    def remember(self, name: str, stored: JSON | None) -> None:
        """What the operator itself read or wrote (None: deleted), unless the cache has
        newer."""
        if stored is None:
            self._entries.pop(name, None)
            return
        if self._selects.selects(stored):
            self._put(name, stored)
        else:  # no longer selected: the watch will say DELETED
            self._entries.pop(name, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the list-watch loop ----------------------------------------------------------------

    async def _run(self) -> None:
        failures, relisting = 0, False
        while True:
            productive = False
            try:
                if self._version is None:
                    await self._list()
                productive = await self._watch()
            except ResourceVersionGone as error:
                self._version = None  # the history is gone: list again, at once the first time
                if not relisting:
                    relisting = True
                    continue
                self._failed(error)
            except ApiError as error:
                if error.status == 404:  # the kind is not served: known empty until it is
                    self._absent()
                    await asyncio.sleep(self._settings.absent_relist)
                    continue
                self._failed(error)
            except (MalformedEvent, OversizedEvent) as error:
                self._version = None  # what was skipped is unknown: list again
                self._failed(error)
            except (WatchStreamError, aiohttp.ClientError, OSError, TimeoutError) as error:
                self._failed(error)
            if productive:
                failures, relisting = 0, False
                continue
            failures += 1
            delay = self._settings.backoff_initial * 2 ** (failures - 1)
            await asyncio.sleep(min(delay, self._settings.backoff_max))

    def _failed(self, error: Exception) -> None:
        if self._broken_since is None:
            self._broken_since = self._clock()
        self._settled.set()  # readers stop waiting and read directly
        logger.info("watch of %s failed (%s); retrying", self._path, type(error).__name__)

    def _absent(self) -> None:
        self._entries.clear()
        self._version = None
        self._synced, self._broken_since = True, None
        self._settled.set()

    def _params(self) -> dict[str, str]:
        return {"labelSelector": self._selector} if self._selector else {}

    async def _list(self) -> None:
        params = {**self._params(), "limit": str(self._settings.page_size)}
        listed: dict[str, JSON] = {}
        version: str | None = None
        while True:
            async with self._client.get(self._path, params) as response:
                body = await read_bounded(response, self._settings.max_page_bytes)
            if body is None:
                raise OversizedEvent(f"a list page over {self._settings.max_page_bytes} bytes")
            page = watch_events.parse_list(body)
            version = version or page.resource_version  # every page is of the first's snapshot
            for obj in page.items:
                listed[watch_events.name(obj)] = obj
            if page.continue_token is None:
                break
            params["continue"] = page.continue_token
        if self._synced:
            self.relists += 1
        self._replace(listed, version)

    def _replace(self, listed: dict[str, JSON], version: str) -> None:
        for name in list(self._entries):  # keep what we wrote after the list's snapshot
            if name not in listed and not newer(self._entries[name].version, version):
                del self._entries[name]
        for name, obj in listed.items():
            self._put(name, obj)
        self._version = version
        self._synced, self._broken_since = True, None
        self._settled.set()

    async def _watch(self) -> bool:
        """Follow one watch until the server ends it; whether it was worth following (a
        watch that ends at once without a line is a failure, not a reason to hurry back)."""
        assert self._version is not None
        params = {
            **self._params(),
            "watch": "1",
            "resourceVersion": self._version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._settings.timeout_seconds),
        }
        started, lines_seen = self._clock(), 0
        async with self._client.get(self._path, params) as response:
            self._broken_since = None
            lines = LineSplitter()
            async for chunk in response.content.iter_any():
                for line in lines.feed(chunk):
                    self._apply(watch_events.parse_event(line))
                    lines_seen += 1
        return lines_seen > 0 or self._clock() - started >= 1.0

    def _apply(self, event: Event) -> None:
        if event.object is not None:
            name = watch_events.name(event.object)  # refused before anything changes
            if event.kind == "DELETED":
                entry = self._entries.get(name)
                if entry is not None and newer(event.resource_version, entry.version):
                    del self._entries[name]
            else:
                self._put(name, event.object)
        if event.resource_version:
            self._version = event.resource_version

    def _put(self, name: str, obj: JSON) -> None:
        version = watch_events.resource_version(obj)
        entry = self._entries.get(name)
        if entry is not None and not newer(version, entry.version):
            return
        slim = compact(obj)
        kept = slim if self._keep is None else self._keep(slim)
        self._entries[name] = _Entry(version, kept)


class WatchCaches:
    """The operator's caches by (kind, namespace, label selector), started on first use."""

    def __init__(self, access: ClusterAccess, settings: WatchSettings | None = None) -> None:
        self.settings = settings or WatchSettings()
        self._client = WatchClient(access, self.settings)
        self._informers: dict[Key, Informer] = {}

    async def synced(self, key: Key, path: str, keep: Keep | None = None) -> Informer | None:
        """The cache of `key` (started now if new) once known good; None while it is not
        (the caller reads directly)."""
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self._client, path, key[2], keep=keep)
            self._informers[key] = informer
            informer.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.first_sync_wait):
                await informer.settled()
        return informer if informer.usable else None

    def remember(self, kind: str, namespace: str, name: str, stored: JSON | None) -> None:
        for (cached_kind, cached_namespace, _), informer in self._informers.items():
            if (cached_kind, cached_namespace) == (kind, namespace):
                informer.remember(name, stored)

    async def close(self) -> None:
        informers, self._informers = list(self._informers.values()), {}
        for informer in informers:
            await informer.close()
        await self._client.close()
