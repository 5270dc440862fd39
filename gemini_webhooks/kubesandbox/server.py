"""The HTTP face of the sandbox: a kmock handler that serves the Kubernetes API.

`KubeSandbox` extends `kmock.RawHandler`: kmock parses requests, keeps them for
assertions and lets tests add their own reactions with its DSL (`sandbox['get /x'] << 500`),
which take precedence. Whatever no reaction answers, the sandbox serves from `Cluster`.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock

from gemini_webhooks.kubesandbox import (
    discovery,
    errors,
    list_watch,
    patch_requests,
    scale,
    tables,
    wire,
)
from gemini_webhooks.kubesandbox.errors import ApiError
from gemini_webhooks.kubesandbox.faults import (
    AuditEntry,
    FaultError,
    Faults,
    fault_from_json,
    fault_to_json,
)
from gemini_webhooks.kubesandbox.list_watch import Watch
from gemini_webhooks.kubesandbox.resources import ResourceType
from gemini_webhooks.kubesandbox.selectors import FIELD_LABELS, Predicate, combined, field_selector
from gemini_webhooks.kubesandbox.store import Cluster, Event

logger = logging.getLogger(__name__)

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
                    data=wire.loads_or_none(body),
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
            return wire.error_response(e)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, aiohttp.web.HTTPException):
            code = exc.status
            return wire.error_response(
                ApiError(code, exc.reason.replace(" ", ""), exc.text or exc.reason)
            )
        logger.exception("the kube sandbox failed to serve a request")
        return wire.error_response(
            ApiError(500, "InternalError", f"internal error: {type(exc).__name__}")
        )

    async def _serve(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/") or "/"
        method = str(
            request.method.value if hasattr(request.method, "value") else request.method
        ).upper()
        if path.startswith("/sandbox/v1/"):
            return await self._serve_control(request, path, method)
        if method == "GET":
            static = discovery.serve_static(request, path, self.cluster.served_types())
            if static is not None:
                return static
        target = parse_target(path)
        if target is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.plural is None:
            if method != "GET":
                raise errors.method_not_allowed(f"{method} is not allowed on {path}")
            return wire.json_response(
                discovery.serve_discovery(target.group, target.version, self.cluster.served_types())
            )
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
        watching = method == "GET" and wire.flag(params, "watch")
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
                return await list_watch.serve_watch(
                    self.cluster,
                    self._watches,
                    request,
                    rtype,
                    ns,
                    predicate,
                    bookmark_interval=self.bookmark_interval,
                )
            return list_watch.serve_list(self.cluster, request, rtype, ns, predicate)
        if verb == "get" and target.subresource == "scale" and rtype.scale is not None:
            assert target.name is not None
            return scale.serve_scale(
                self.cluster, request, rtype, target.name, ns, verb, None, dry_run
            )
        if verb == "get":
            assert target.name is not None
            obj = wire.as_version(self.cluster.get(rtype, ns, target.name), rtype)
            if wire.wants_table(request.headers):
                return wire.json_response(
                    tables.table(
                        rtype,
                        [obj],
                        obj["metadata"]["resourceVersion"],
                        datetime.datetime.now(datetime.UTC),
                        include_object=params.get("includeObject", "Metadata"),
                    )
                )
            return wire.json_response(obj)
        body = wire.decode_body(request) if verb in ("create", "update", "patch") else None
        if rtype.group == "authorization.k8s.io":
            return wire.json_response(_review(rtype, body), 201)
        if target.subresource == "scale" and rtype.scale is not None:
            assert target.name is not None
            return scale.serve_scale(
                self.cluster, request, rtype, target.name, ns, verb, body, dry_run
            )
        if verb == "create":
            obj, warnings = self.cluster.create(
                rtype, ns, body, field_validation=field_validation, dry_run=dry_run
            )
            return wire.json_response(
                wire.as_version(obj, rtype), 201, wire.warning_headers(warnings)
            )
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
            return wire.json_response(
                wire.as_version(obj, rtype), 200, wire.warning_headers(warnings)
            )
        if verb == "patch":
            assert target.name is not None
            content_type = request.headers.get("Content-Type", "")
            existed = (ns or "", target.name) in self.cluster.objects[rtype.store_key]
            obj, warnings = patch_requests.patch(
                self.cluster,
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
            return wire.json_response(
                wire.as_version(obj, rtype), 200 if existed else 201, wire.warning_headers(warnings)
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
                    deleted.append(wire.as_version(gone, rtype))
            return wire.json_response(
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
            return wire.json_response(
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
        return wire.json_response(wire.as_version(obj, rtype))

    # --- the control API for subprocess tests ---------------------------------------------

    async def _serve_control(
        self, request: kmock.Request, path: str, method: str
    ) -> aiohttp.web.Response:
        if path == "/sandbox/v1/faults":
            if method == "GET":
                return wire.json_response(
                    {"faults": [fault_to_json(f) for f in self.faults.pending]}
                )
            if method == "POST":
                try:
                    fault = self.faults.add(fault_from_json(json.loads(request.body or b"null")))
                except (ValueError, FaultError) as e:
                    raise errors.bad_request(f"invalid fault: {e}") from None
                return wire.json_response(fault_to_json(fault), 201)
            if method == "DELETE":
                self.faults.clear()
                return wire.json_response({"faults": []})
        if path == "/sandbox/v1/watches/cut" and method == "POST":
            data = request.data if isinstance(request.data, dict) else {}
            return wire.json_response(
                {"cut": self.cut_watches(data.get("resource"), data.get("group"))}
            )
        if path == "/sandbox/v1/resourceversions/expire" and method == "POST":
            return wire.json_response(
                {"compactedResourceVersion": str(self.expire_resource_versions())}
            )
        if path == "/sandbox/v1/audit" and method == "GET":
            return wire.json_response({"audit": [e._asdict() for e in self.audit]})
        raise ApiError(404, "NotFound", f"no sandbox control endpoint {method} {path}")


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


def _selectable(rtype: ResourceType) -> frozenset[str]:
    if rtype.custom:
        return rtype.selectable_fields
    return FIELD_LABELS.get((rtype.group, rtype.plural), frozenset())


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda obj: a(obj) and b(obj)
