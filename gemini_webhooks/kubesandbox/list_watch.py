"""A collection's reads: LIST (paged with limit/continue, or as a Table) and WATCH (from a
resourceVersion or with the initial events, bookmarks, a timeout, 410 Gone when too old)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import kmock

from gemini_webhooks.kubesandbox import errors, tables, wire
from gemini_webhooks.kubesandbox.resources import ResourceType
from gemini_webhooks.kubesandbox.selectors import Predicate
from gemini_webhooks.kubesandbox.store import Cluster, Event, Obj


@dataclass(eq=False)
class Watch:
    key: tuple[str, str]
    rtype: ResourceType
    namespace: str | None
    predicate: Predicate | None
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue())

    def sees(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.predicate is None or self.predicate(obj)


def serve_list(
    cluster: Cluster,
    request: kmock.Request,
    rtype: ResourceType,
    ns: str | None,
    predicate: Predicate | None,
) -> aiohttp.web.Response:
    params = request.params
    items = sorted(
        (o for o in cluster.list_objects(rtype, ns) if predicate is None or predicate(o)),
        key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
    )
    rv = str(cluster.rv)
    meta: dict[str, Any] = {"resourceVersion": rv}
    token = params.get("continue")
    if token:
        try:
            after = json.loads(base64.urlsafe_b64decode(token.encode()))
            items = [
                o
                for o in items
                if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > after
            ]
        except (ValueError, binascii.Error):
            raise errors.bad_request("invalid continue token") from None
    limit_param = params.get("limit")
    if limit_param:
        try:
            limit = int(limit_param)
        except ValueError:
            raise errors.bad_request("limit must be an integer") from None
        if 0 < limit < len(items):
            last = items[limit - 1]["metadata"]
            after = [last.get("namespace", ""), last["name"]]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(after).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
    items = [wire.as_version(o, rtype) for o in items]
    if wire.wants_table(request.headers):
        result = tables.table(
            rtype,
            items,
            rv,
            datetime.datetime.now(datetime.UTC),
            include_object=params.get("includeObject", "Metadata"),
        )
        result["metadata"].update(meta)
        return wire.json_response(result)
    return wire.json_response(
        {
            "kind": rtype.list_kind,
            "apiVersion": rtype.api_version,
            "metadata": meta,
            "items": items,
        }
    )


async def serve_watch(
    cluster: Cluster,
    watches: dict[tuple[str, str], set[Watch]],
    request: kmock.Request,
    rtype: ResourceType,
    ns: str | None,
    predicate: Predicate | None,
    *,
    bookmark_interval: float,
) -> aiohttp.web.StreamResponse:
    params = request.params
    raw = request._raw_request  # kmock keeps the aiohttp request only privately
    assert raw is not None
    bookmarks = wire.flag(params, "allowWatchBookmarks")
    send_initial = wire.flag(params, "sendInitialEvents")
    as_table = wire.wants_table(request.headers)
    timeout: float | None = None
    if params.get("timeoutSeconds"):
        raw_timeout = params["timeoutSeconds"]
        try:  # an integer, as kube-apiserver parses it: "5.0" is refused
            timeout = float(int(raw_timeout, 10))
        except ValueError:
            raise errors.bad_request(
                f'strconv.ParseInt: parsing "{raw_timeout}": invalid syntax'
            ) from None
    since = params.get("resourceVersion", "")
    watch = Watch(rtype.store_key, rtype, ns, predicate)
    backlog: list[tuple[str, Obj]] = []
    too_old = False
    snapshot_rv = cluster.rv  # the backlog is everything up to here
    if since in ("", "0") or send_initial:
        current = sorted(
            cluster.list_objects(rtype, ns),
            key=lambda o: int(o["metadata"]["resourceVersion"]),
        )
        backlog = [("ADDED", o) for o in current if watch.sees(o)]
    else:
        try:
            since_rv = int(since)
        except ValueError:
            # kube-apiserver answers this with a plain (500) error.
            raise errors.internal(
                f'resourceVersion: Invalid value: "{since}": strconv.ParseUint: parsing '
                f'"{since}": invalid syntax'
            ) from None
        if since_rv < cluster.compacted_rv:
            too_old = True
        else:
            for event in cluster.events_since(since_rv, rtype.store_key):
                backlog += _translate(watch, event)
    watches.setdefault(rtype.store_key, set()).add(watch)
    response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": wire.JSON})
    response.enable_chunked_encoding()
    try:
        await response.prepare(raw)
        if too_old:
            gone = errors.gone(
                f"too old resource version: {since} ({cluster.compacted_rv})"
            ).status()
            await _write(response, "ERROR", gone, rtype, False)
            return response
        for type_, obj in backlog:
            await _write(response, type_, obj, rtype, as_table)
        if send_initial and bookmarks:
            # The snapshot's resourceVersion: events after it may already be queued.
            await _bookmark(response, rtype, snapshot_rv, initial_end=True)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            wait = bookmark_interval if bookmarks else None
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wait = remaining if wait is None else min(wait, remaining)
            try:
                async with asyncio.timeout(wait):
                    item: Event | None = await watch.queue.get()
            except TimeoutError:
                # A bookmark promises every event up to the cluster's resourceVersion
                # was sent: not while one is still queued (the wait can time out just
                # as an event arrives; the watch may then end at its deadline).
                if bookmarks and watch.queue.empty():
                    await _bookmark(response, rtype, cluster.rv)
                continue
            if item is None:  # cut by fault injection
                break
            for type_, obj in _translate(watch, item):
                await _write(response, type_, obj, rtype, as_table)
    except ConnectionResetError:
        return response
    finally:  # also when cancelled: the client went away
        watches.get(rtype.store_key, set()).discard(watch)
    try:
        await response.write_eof()
    except (ConnectionResetError, RuntimeError):
        pass
    return response


def _translate(watch: Watch, event: Event) -> list[tuple[str, Obj]]:
    now, before = watch.sees(event.obj), watch.sees(event.old)
    if event.type == "DELETED":
        return [("DELETED", event.obj)] if before or now else []
    if now and before:
        return [("MODIFIED", event.obj)]
    if now:
        return [("ADDED", event.obj)]
    if before:
        return [("DELETED", event.obj)]
    return []


async def _write(
    response: aiohttp.web.StreamResponse,
    type_: str,
    obj: Obj,
    rtype: ResourceType,
    as_table: bool,
) -> None:
    if type_ != "ERROR":
        obj = wire.as_version(obj, rtype)
        if as_table:
            obj = tables.table(
                rtype,
                [obj],
                obj["metadata"]["resourceVersion"],
                datetime.datetime.now(datetime.UTC),
            )
    line = json.dumps({"type": type_, "object": obj}, separators=(",", ":")) + "\n"
    await response.write(line.encode())


async def _bookmark(
    response: aiohttp.web.StreamResponse,
    rtype: ResourceType,
    rv: int,
    *,
    initial_end: bool = False,
) -> None:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}
    await response.write((json.dumps({"type": "BOOKMARK", "object": obj}) + "\n").encode())
