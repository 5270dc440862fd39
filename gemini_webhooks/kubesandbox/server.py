"""The HTTP face of the sandbox: a kmock handler that serves the Kubernetes API.

`KubeSandbox` extends `kmock.RawHandler`: kmock parses requests, keeps them for
assertions and lets tests add their own reactions with its DSL (`sandbox['get /x'] << 500`),
which take precedence. Whatever no reaction answers, the sandbox serves from `Cluster`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import datetime
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import kmock

from gemini_webhooks.contracts import label_selector
from gemini_webhooks.kubesandbox import errors, openapi, openapi_v2, protobuf, tables
from gemini_webhooks.kubesandbox.errors import ApiError
from gemini_webhooks.kubesandbox.faults import (
    AuditEntry,
    FaultError,
    Faults,
    fault_from_json,
    fault_to_json,
)
from gemini_webhooks.kubesandbox.resources import ResourceType
from gemini_webhooks.kubesandbox.selectors import FIELD_LABELS, Predicate, combined, field_selector
from gemini_webhooks.kubesandbox.store import Cluster, Event, Obj

logger = logging.getLogger(__name__)

SERVER_VERSION = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.0-kubesandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
JSON = "application/json"
_VERBS_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass
class Target:
    group: str
    version: str
    plural: str | None
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_target(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return Target(group, version, "", namespace, None, None)  # nothing serves this
    return Target(
        group,
        version,
        rest[0] if rest else None,
        namespace,
        rest[1] if len(rest) > 1 else None,
        rest[2] if len(rest) > 2 else None,
    )


def _flag(params: Mapping[str, str], name: str) -> bool:
    return params.get(name, "").lower() in ("1", "true")


def _json(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type=JSON,
        headers=headers,
    )


def _error(e: ApiError) -> aiohttp.web.Response:
    return _json(e.status(), e.code, e.headers)


def _as_version(obj: Obj, rtype: ResourceType) -> Obj:
    if obj.get("apiVersion") == rtype.api_version:
        return obj
    return {**obj, "apiVersion": rtype.api_version}


def _wants_table(headers: Mapping[str, str]) -> bool:
    accept = headers.get("Accept", "")
    return "as=Table" in accept


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


@attrs.define(kw_only=True, eq=False)
class KubeSandbox(kmock.RawHandler):
    """An in-memory Kubernetes API server, served through kmock's request handling."""

    cluster: Cluster = attrs.field(factory=Cluster)
    faults: Faults = attrs.field(factory=Faults)
    audit: list[AuditEntry] = attrs.field(factory=list)
    bookmark_interval: float = 5.0
    keep_requests: int = 1000  # kmock keeps every request for assertions; bound that
    max_watch_backlog: int = 10_000  # events queued for one slow watch before it is cut
    max_audit: int = 200_000
    _watches: dict[tuple[str, str], set[Watch]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self.cluster.listeners.append(self._fan_out)
        self.faults._cut_watches = self.cut_watches
        self.faults._expire = self.expire_resource_versions

    # --- control --------------------------------------------------------------------------

    def cut_watches(self, resource: str | None = None, group: str | None = None) -> int:
        count = 0
        for key, watches in self._watches.items():
            if (resource is None or key[1] == resource) and (group is None or key[0] == group):
                for watch in watches:
                    watch.queue.put_nowait(None)
                    count += 1
        return count

    def expire_resource_versions(self) -> int:
        self.cluster.expire()
        return self.cluster.compacted_rv

    def _fan_out(self, event: Event) -> None:
        for watch in self._watches.get(event.key, ()):
            if watch.queue.qsize() >= self.max_watch_backlog:
                # A client that does not keep up is cut off, as real API servers do; it
                # resumes from the last resourceVersion it saw.
                while not watch.queue.empty():
                    watch.queue.get_nowait()
                watch.queue.put_nowait(None)
            else:
                watch.queue.put_nowait(event)

    # --- request handling -----------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own entry point, minus one crash: kmock 0.8's URL parser raises on paths
        # that end in `/namespaces` (e.g. listing namespaces), so parse those without it.
        try:
            body = await raw_request.read()
            try:
                request = await kmock.Request._parse(raw_request, id=len(self._requests))
            except ValueError:
                request = kmock.Request(
                    id=len(self._requests),
                    raw_request=raw_request,
                    url=raw_request.url,
                    method=raw_request.method,
                    params=dict(raw_request.query),
                    headers=dict(raw_request.headers),
                    body=body,
                    text=body.decode("utf-8", "replace"),
                    data=_loads_or_none(body),
                )
            self._requests.append(request)
            return await self._handle(request)
        except Exception as e:
            return await self._render_error(e)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if len(self._requests) > self.keep_requests * 2:
            del self._requests[: -self.keep_requests]
        if len(self.audit) > self.max_audit:
            del self.audit[: -self.max_audit // 2]
        if self._payloads:  # reactions added by tests with kmock's DSL come first
            try:
                return await super()._handle(request)
            except NotImplementedError:
                pass
        try:
            return await self._serve(request)
        except ApiError as e:
            return _error(e)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, aiohttp.web.HTTPException):
            code = exc.status
            return _error(ApiError(code, exc.reason.replace(" ", ""), exc.text or exc.reason))
        logger.exception("the kube sandbox failed to serve a request")
        return _error(ApiError(500, "InternalError", f"internal error: {type(exc).__name__}"))

    async def _serve(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/") or "/"
        method = str(
            request.method.value if hasattr(request.method, "value") else request.method
        ).upper()
        if path.startswith("/sandbox/v1/"):
            return await self._serve_control(request, path, method)
        if method == "GET":
            static = self._serve_static(request, path)
            if static is not None:
                return static
        target = parse_target(path)
        if target is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.plural is None:
            if method != "GET":
                raise errors.method_not_allowed(f"{method} is not allowed on {path}")
            return _json(self._serve_discovery(target))
        rtype = self.cluster.find_type(target.group, target.version, target.plural)
        if rtype is None and not any(
            (t.group, t.version) == (target.group, target.version)
            for t in self.cluster.served_types()
        ):
            # No handler for that group/version at all: kube-apiserver's mux answers in text.
            return aiohttp.web.Response(
                status=404, text="404 page not found\n", content_type="text/plain"
            )
        if rtype is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.namespace is not None and not rtype.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource is not None and target.subresource not in rtype.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        params = request.params
        watching = method == "GET" and _flag(params, "watch")
        if method == "GET":
            verb = "watch" if watching else ("get" if target.name else "list")
        elif method == "DELETE":
            verb = "delete" if target.name else "deletecollection"
        else:
            verb = _VERBS_BY_METHOD.get(method, "")
        if (
            not verb
            or (verb in ("update", "patch") and not target.name)
            or (verb == "create" and target.name)
        ):
            raise errors.method_not_allowed(f"{method} is not supported on {path}")
        if verb not in rtype.verbs:
            raise errors.method_not_allowed(
                f"{verb} is not supported on {rtype.group_resource} (only {', '.join(rtype.verbs)})"
            )
        entry = AuditEntry(
            verb, rtype.group, rtype.plural, target.subresource or "", target.namespace or ""
        )
        self.audit.append(entry)
        fault = self.faults.take(entry, target.name)
        if fault is not None:
            raise fault.error()
        return await self._serve_resource(request, rtype, target, verb)

    async def _serve_resource(
        self, request: kmock.Request, rtype: ResourceType, target: Target, verb: str
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        ns = target.namespace
        field_validation = params.get("fieldValidation") or "Warn"
        options_kind = {"create": "CreateOptions", "update": "UpdateOptions"}.get(
            verb, "PatchOptions"
        )
        if field_validation not in ("Strict", "Warn", "Ignore") and verb in (
            "create",
            "update",
            "patch",
        ):
            raise errors.invalid(
                options_kind,
                "meta.k8s.io",
                "",
                [
                    errors.cause(
                        "fieldValidation",
                        "FieldValueNotSupported",
                        f'Unsupported value: "{field_validation}": supported values: "", '
                        '"Ignore", "Strict", "Warn"',
                    )
                ],
            )
        dry_run = params.get("dryRun") == "All"
        if verb in ("list", "watch"):
            predicate = combined(
                params.get("labelSelector"),
                params.get("fieldSelector"),
                _selectable(rtype),
                legacy=(rtype.group, rtype.plural) in FIELD_LABELS and not rtype.custom,
            )
            if target.name:
                by_name = field_selector(f"metadata.name={target.name}")
                predicate = by_name if predicate is None else _both(predicate, by_name)
            if verb == "watch":
                return await self._watch(request, rtype, ns, predicate)
            return self._list(request, rtype, ns, predicate)
        if verb == "get" and target.subresource == "scale" and rtype.scale is not None:
            assert target.name is not None
            return self._serve_scale(request, rtype, target.name, ns, verb, None, dry_run)
        if verb == "get":
            assert target.name is not None
            obj = _as_version(self.cluster.get(rtype, ns, target.name), rtype)
            if _wants_table(request.headers):
                return _json(
                    tables.table(
                        rtype,
                        [obj],
                        obj["metadata"]["resourceVersion"],
                        datetime.datetime.now(datetime.UTC),
                        include_object=params.get("includeObject", "Metadata"),
                    )
                )
            return _json(obj)
        body = self._body(request) if verb in ("create", "update", "patch") else None
        if rtype.group == "authorization.k8s.io":
            return _json(_review(rtype, body), 201)
        if target.subresource == "scale" and rtype.scale is not None:
            assert target.name is not None
            return self._serve_scale(request, rtype, target.name, ns, verb, body, dry_run)
        if verb == "create":
            obj, warnings = self.cluster.create(
                rtype, ns, body, field_validation=field_validation, dry_run=dry_run
            )
            return _json(_as_version(obj, rtype), 201, _warning_headers(warnings))
        assert target.name is not None or verb == "deletecollection"
        if verb == "update":
            assert target.name is not None
            obj, warnings = self.cluster.update(
                rtype,
                ns,
                target.name,
                body,
                subresource=target.subresource,
                field_validation=field_validation,
                dry_run=dry_run,
            )
            return _json(_as_version(obj, rtype), 200, _warning_headers(warnings))
        if verb == "patch":
            assert target.name is not None
            content_type = request.headers.get("Content-Type", "")
            existed = (ns or "", target.name) in self.cluster.objects[rtype.store_key]
            obj, warnings = self.cluster.patch(
                rtype,
                ns,
                target.name,
                content_type,
                body,
                subresource=target.subresource,
                field_validation=field_validation,
                dry_run=dry_run,
                field_manager=params.get("fieldManager"),
            )
            return _json(
                _as_version(obj, rtype), 200 if existed else 201, _warning_headers(warnings)
            )
        options = request.data if isinstance(request.data, dict) else {}
        propagation = params.get("propagationPolicy") or options.get("propagationPolicy")
        if propagation not in (None, "Background", "Foreground", "Orphan"):
            raise errors.invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                [
                    errors.cause(
                        "propagationPolicy",
                        "FieldValueNotSupported",
                        f'Unsupported value: "{propagation}": supported values: "Foreground", '
                        '"Background", "Orphan", "nil"',
                    )
                ],
            )
        if options.get("orphanDependents") is True:
            propagation = "Orphan"
        dry_run = dry_run or options.get("dryRun") == ["All"]
        if verb == "deletecollection":
            predicate = combined(
                params.get("labelSelector"),
                params.get("fieldSelector"),
                _selectable(rtype),
                legacy=(rtype.group, rtype.plural) in FIELD_LABELS and not rtype.custom,
            )
            deleted = []
            for obj in self.cluster.list_objects(rtype, ns):
                if predicate is None or predicate(obj):
                    gone, _ = self.cluster.delete(
                        rtype,
                        obj["metadata"].get("namespace"),
                        obj["metadata"]["name"],
                        propagation=propagation,
                        dry_run=dry_run,
                    )
                    deleted.append(_as_version(gone, rtype))
            return _json(
                {
                    "kind": rtype.list_kind,
                    "apiVersion": rtype.api_version,
                    "metadata": {"resourceVersion": str(self.cluster.rv)},
                    "items": deleted,
                }
            )
        assert target.name is not None
        obj, removed = self.cluster.delete(
            rtype,
            ns,
            target.name,
            propagation=propagation,
            preconditions=options.get("preconditions")
            if isinstance(options.get("preconditions"), dict)
            else None,
            dry_run=dry_run,
        )
        if removed and not rtype.custom:
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": target.name,
                        "group": rtype.group,
                        "kind": rtype.plural,
                        "uid": obj["metadata"]["uid"],
                    },
                }
            )
        return _json(_as_version(obj, rtype))

    def _serve_scale(
        self,
        request: kmock.Request,
        rtype: ResourceType,
        name: str,
        ns: str | None,
        verb: str,
        body: Any,
        dry_run: bool,
    ) -> aiohttp.web.Response:
        assert rtype.scale is not None
        spec_path = str(rtype.scale.get("specReplicasPath", ".spec.replicas"))
        obj = self.cluster.get(rtype, ns, name)
        current = _scale_of(obj, rtype.scale)
        if verb == "get":
            return _json(current)
        if verb == "update":
            wanted = body
        elif verb == "patch":
            wanted, _ = self.cluster.patch_document(
                current, request.headers.get("Content-Type", ""), body, custom=False
            )
        else:
            raise errors.method_not_allowed(f"{verb} is not supported on the scale subresource")
        replicas = (wanted.get("spec") or {}).get("replicas") if isinstance(wanted, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid(
                "Scale",
                "autoscaling",
                name,
                [
                    errors.cause(
                        "spec.replicas",
                        "FieldValueInvalid",
                        "Invalid value: must be a non-negative integer",
                    )
                ],
            )
        rv = (wanted.get("metadata") or {}).get("resourceVersion")
        updated = _set_path(obj, spec_path, replicas)
        updated["metadata"] = {
            **updated["metadata"],
            "resourceVersion": rv or obj["metadata"]["resourceVersion"],
        }
        new, _ = self.cluster.update(rtype, ns, name, updated, dry_run=dry_run, require_rv=False)
        return _json(_scale_of(new, rtype.scale))

    def _body(self, request: kmock.Request) -> Any:
        if not request.body:
            raise errors.bad_request("the request body is empty")
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith(protobuf.CONTENT_TYPE):
            try:
                return protobuf.decode_object(request.body)
            except protobuf.ProtobufError as e:
                raise ApiError(415, "UnsupportedMediaType", str(e)) from None
        if "cbor" in content_type or "protobuf" in content_type:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json, application/yaml, {protobuf.CONTENT_TYPE} "
                f"(not {content_type})",
            )
        if "yaml" in content_type:
            import yaml

            try:
                return yaml.safe_load(request.body)
            except yaml.YAMLError as e:
                raise errors.bad_request(f"the request body is not valid YAML: {e}") from None
        try:
            return json.loads(request.body)
        except ValueError:
            raise errors.bad_request("the request body is not valid JSON") from None

    # --- lists & watches ------------------------------------------------------------------

    def _list(
        self,
        request: kmock.Request,
        rtype: ResourceType,
        ns: str | None,
        predicate: Predicate | None,
    ) -> aiohttp.web.Response:
        params = request.params
        items = sorted(
            (o for o in self.cluster.list_objects(rtype, ns) if predicate is None or predicate(o)),
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )
        rv = str(self.cluster.rv)
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
        items = [_as_version(o, rtype) for o in items]
        if _wants_table(request.headers):
            result = tables.table(
                rtype,
                items,
                rv,
                datetime.datetime.now(datetime.UTC),
                include_object=params.get("includeObject", "Metadata"),
            )
            result["metadata"].update(meta)
            return _json(result)
        return _json(
            {
                "kind": rtype.list_kind,
                "apiVersion": rtype.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    async def _watch(
        self,
        request: kmock.Request,
        rtype: ResourceType,
        ns: str | None,
        predicate: Predicate | None,
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        raw = request._raw_request  # kmock keeps the aiohttp request only privately
        assert raw is not None
        bookmarks = _flag(params, "allowWatchBookmarks")
        send_initial = _flag(params, "sendInitialEvents")
        as_table = _wants_table(request.headers)
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
        snapshot_rv = self.cluster.rv  # the backlog is everything up to here
        if since in ("", "0") or send_initial:
            current = sorted(
                self.cluster.list_objects(rtype, ns),
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
            if since_rv < self.cluster.compacted_rv:
                too_old = True
            else:
                for event in self.cluster.events_since(since_rv, rtype.store_key):
                    backlog += self._translate(watch, event)
        self._watches.setdefault(rtype.store_key, set()).add(watch)
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        try:
            await response.prepare(raw)
            if too_old:
                gone = errors.gone(
                    f"too old resource version: {since} ({self.cluster.compacted_rv})"
                ).status()
                await self._write(response, "ERROR", gone, rtype, False)
                return response
            for type_, obj in backlog:
                await self._write(response, type_, obj, rtype, as_table)
            if send_initial and bookmarks:
                # The snapshot's resourceVersion: events after it may already be queued.
                await self._bookmark(response, rtype, snapshot_rv, initial_end=True)
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                wait = self.bookmark_interval if bookmarks else None
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    wait = remaining if wait is None else min(wait, remaining)
                try:
                    item: Event | None = await asyncio.wait_for(watch.queue.get(), wait)
                except TimeoutError:
                    # A bookmark promises every event up to the cluster's resourceVersion
                    # was sent: not while one is still queued (the wait can time out just
                    # as an event arrives; the watch may then end at its deadline).
                    if bookmarks and watch.queue.empty():
                        await self._bookmark(response, rtype, self.cluster.rv)
                    continue
                if item is None:  # cut by fault injection
                    break
                for type_, obj in self._translate(watch, item):
                    await self._write(response, type_, obj, rtype, as_table)
        except ConnectionResetError:
            return response
        finally:  # also when cancelled: the client went away
            self._watches.get(rtype.store_key, set()).discard(watch)
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    def _translate(self, watch: Watch, event: Event) -> list[tuple[str, Obj]]:
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
        self,
        response: aiohttp.web.StreamResponse,
        type_: str,
        obj: Obj,
        rtype: ResourceType,
        as_table: bool,
    ) -> None:
        if type_ != "ERROR":
            obj = _as_version(obj, rtype)
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
        self,
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

    # --- discovery ------------------------------------------------------------------------

    def _serve_static(self, request: kmock.Request, path: str) -> aiohttp.web.Response | None:
        if path == "/version":
            return _json(SERVER_VERSION)
        if path in ("/healthz", "/readyz", "/livez"):
            return aiohttp.web.Response(text="ok")
        if path == "/":
            paths = sorted(
                {"/api", "/api/v1", "/apis", "/version", "/openapi/v2", "/openapi/v3", "/healthz"}
                | {f"/apis/{g}" for g in self._groups()}
            )
            return _json({"paths": paths})
        if path == "/api":
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.host or ""}
                    ],
                }
            )
        if path == "/apis":
            return _json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._group(g, vs) for g, vs in self._groups().items()],
                }
            )
        if path == "/openapi/v3":
            return _json(openapi.index(self.cluster.served_types()))
        if path.startswith("/openapi/v3/"):
            gv = path[len("/openapi/v3/") :]
            doc = openapi.group_version_doc(self.cluster.served_types(), gv)
            if doc is None:
                raise ApiError(404, "NotFound", f"no OpenAPI document for {gv}")
            return _json(doc)
        if path == "/openapi/v2":
            doc, encoded = openapi_v2.served(self.cluster.served_types())
            accept = request.headers.get("Accept", "")
            if any(t in accept for t in openapi_v2.PROTOBUF_ACCEPTED):
                return aiohttp.web.Response(
                    body=encoded, headers={"Content-Type": openapi_v2.PROTOBUF}
                )
            return _json(doc)
        return None

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = {}
        for rtype in self.cluster.served_types():
            if rtype.group:
                groups.setdefault(rtype.group, set()).add(rtype.version)
        return {g: sorted(vs, key=openapi.version_priority) for g, vs in sorted(groups.items())}

    def _group(self, group: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _serve_discovery(self, target: Target) -> dict[str, Any]:
        groups = self._groups()
        if target.group and target.group not in groups:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not target.version:
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                **self._group(target.group, groups[target.group]),
            }
        types = [
            t
            for t in self.cluster.served_types()
            if t.group == target.group and t.version == target.version
        ]
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources = []
        for rtype in sorted(types, key=lambda t: t.plural):
            entry: dict[str, Any] = {
                "name": rtype.plural,
                "singularName": rtype.singular,
                "namespaced": rtype.namespaced,
                "kind": rtype.kind,
                "verbs": list(rtype.verbs),
                "storageVersionHash": hashlib.sha256(rtype.group_resource.encode()).hexdigest()[
                    :12
                ],
            }
            if rtype.short_names:
                entry["shortNames"] = list(rtype.short_names)
            if rtype.categories:
                entry["categories"] = list(rtype.categories)
            resources.append(entry)
            for sub in sorted(rtype.subresources):
                resources.append(
                    {
                        "name": f"{rtype.plural}/{sub}",
                        "singularName": "",
                        "namespaced": rtype.namespaced,
                        "kind": rtype.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{target.group}/{target.version}" if target.group else target.version,
            "resources": resources,
        }

    # --- the control API for subprocess tests ---------------------------------------------

    async def _serve_control(
        self, request: kmock.Request, path: str, method: str
    ) -> aiohttp.web.Response:
        if path == "/sandbox/v1/faults":
            if method == "GET":
                return _json({"faults": [fault_to_json(f) for f in self.faults.pending]})
            if method == "POST":
                try:
                    fault = self.faults.add(fault_from_json(json.loads(request.body or b"null")))
                except (ValueError, FaultError) as e:
                    raise errors.bad_request(f"invalid fault: {e}") from None
                return _json(fault_to_json(fault), 201)
            if method == "DELETE":
                self.faults.clear()
                return _json({"faults": []})
        if path == "/sandbox/v1/watches/cut" and method == "POST":
            data = request.data if isinstance(request.data, dict) else {}
            return _json({"cut": self.cut_watches(data.get("resource"), data.get("group"))})
        if path == "/sandbox/v1/resourceversions/expire" and method == "POST":
            return _json({"compactedResourceVersion": str(self.expire_resource_versions())})
        if path == "/sandbox/v1/audit" and method == "GET":
            return _json({"audit": [e._asdict() for e in self.audit]})
        raise ApiError(404, "NotFound", f"no sandbox control endpoint {method} {path}")


def _warning_headers(warnings: list[str]) -> dict[str, str] | None:
    if not warnings:
        return None
    # Field names come from the client: escape them so no control character (or non-ASCII)
    # reaches a header.
    safe = [w.encode("unicode_escape").decode("ascii").replace('"', '\\"') for w in warnings]
    return {"Warning": ", ".join(f'299 - "{w}"' for w in safe)}


def _review(rtype: ResourceType, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        raise errors.invalid(
            rtype.kind,
            rtype.group,
            "",
            [errors.cause("spec", "FieldValueRequired", "Required value")],
        )
    return {
        **body,
        "apiVersion": rtype.api_version,
        "kind": rtype.kind,
        "metadata": {"creationTimestamp": None},
        "status": {"allowed": True, "reason": "the kube sandbox does not enforce RBAC"},
    }


def _scale_of(obj: Obj, paths: Mapping[str, str]) -> dict[str, Any]:
    meta = obj["metadata"]
    spec_replicas = tables.jsonpath(obj, str(paths.get("specReplicasPath", ".spec.replicas")))
    status_replicas = tables.jsonpath(obj, str(paths.get("statusReplicasPath", ".status.replicas")))
    status: dict[str, Any] = {"replicas": status_replicas or 0}
    selector_path = paths.get("labelSelectorPath")
    if selector_path:
        selector = tables.jsonpath(obj, str(selector_path))
        if isinstance(selector, dict):  # a Deployment's LabelSelector, as a selector string
            try:
                selector = str(label_selector.from_object(selector))
            except label_selector.SelectorError:
                selector = None  # FormatLabelSelector's "<error>": no selector to scale by
        if selector:
            status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec_replicas or 0},
        "status": status,
    }


def _set_path(obj: Obj, path: str, value: Any) -> Obj:
    result = copy.deepcopy(obj)
    parts = [p for p in path.split(".") if p]
    target = result
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return result


def _selectable(rtype: ResourceType) -> frozenset[str]:
    if rtype.custom:
        return rtype.selectable_fields
    return FIELD_LABELS.get((rtype.group, rtype.plural), frozenset())


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda obj: a(obj) and b(obj)


def _loads_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None
