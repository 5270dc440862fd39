"""Discovery: the server's version, health, the API group and resource lists (aggregated,
apidiscovery.k8s.io/v2, when the client asks for it, as kube-apiserver ≥ 1.30 answers),
and the OpenAPI documents, all derived from the types the cluster serves."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp.web
import kmock

from gemini_webhooks.kubesandbox import openapi, openapi_v2, wire
from gemini_webhooks.kubesandbox.errors import ApiError
from gemini_webhooks.kubesandbox.resources import ResourceType

# What a client sends to /api and /apis for aggregated discovery, and what it gets back.
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

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


def serve_static(
    request: kmock.Request, path: str, served: list[ResourceType]
) -> aiohttp.web.Response | None:
    """The paths outside the resource tree: /version, health, /api, /apis, OpenAPI."""
    if path == "/version":
        return wire.json_response(SERVER_VERSION)
    if path in ("/healthz", "/readyz", "/livez"):
        return aiohttp.web.Response(text="ok")
    if path == "/":
        paths = sorted(
            {"/api", "/api/v1", "/apis", "/version", "/openapi/v2", "/openapi/v3", "/healthz"}
            | {f"/apis/{g}" for g in _groups(served)}
        )
        return wire.json_response({"paths": paths})
    if path in ("/api", "/apis") and _wants_aggregated(request.headers.get("Accept", "")):
        return aiohttp.web.Response(
            body=json.dumps(aggregated(served, core=path == "/api")).encode(),
            headers={"Content-Type": AGGREGATED, "Vary": "Accept"},
        )
    if path == "/api":
        return wire.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.host or ""}
                ],
            }
        )
    if path == "/apis":
        return wire.json_response(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_group(g, vs) for g, vs in _groups(served).items()],
            }
        )
    if path == "/openapi/v3":
        return wire.json_response(openapi.index(served))
    if path.startswith("/openapi/v3/"):
        gv = path[len("/openapi/v3/") :]
        doc = openapi.group_version_doc(served, gv)
        if doc is None:
            raise ApiError(404, "NotFound", f"no OpenAPI document for {gv}")
        return wire.json_response(doc)
    if path == "/openapi/v2":
        doc, encoded = openapi_v2.served(served)
        accept = request.headers.get("Accept", "")
        if any(t in accept for t in openapi_v2.PROTOBUF_ACCEPTED):
            return aiohttp.web.Response(body=encoded, headers={"Content-Type": openapi_v2.PROTOBUF})
        return wire.json_response(doc)
    return None


def _wants_aggregated(accept: str) -> bool:
    """Whether an Accept header lists the v2 APIGroupDiscoveryList (its parameters in any
    order, as kube-apiserver's negotiation reads them)."""
    for media in accept.split(","):
        kind, *params = (part.strip() for part in media.split(";"))
        wanted = {"g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"}
        if kind in ("application/json", "*/*") and wanted <= set(params):
            return True
    return False


def aggregated(served: list[ResourceType], *, core: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList of /api (`core`) or of /apis: every group, its versions
    (the preferred first) and their resources."""
    groups = _groups(served) if not core else {"": ["v1"]}
    items = []
    for group, versions in groups.items():
        entries = []
        for version in versions:
            types = [t for t in served if t.group == group and t.version == version]
            resources = [_aggregated_resource(t) for t in sorted(types, key=lambda t: t.plural)]
            entries.append({"version": version, "resources": resources, "freshness": "Current"})
        metadata: dict[str, Any] = {"creationTimestamp": None}
        if group:
            metadata["name"] = group
        items.append({"metadata": metadata, "versions": entries})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def _aggregated_resource(rtype: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rtype.plural,
        "responseKind": {"group": rtype.group, "version": rtype.version, "kind": rtype.kind},
        "scope": "Namespaced" if rtype.namespaced else "Cluster",
        "singularResource": rtype.singular,
        "verbs": list(rtype.verbs),
    }
    if rtype.short_names:
        entry["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        entry["categories"] = list(rtype.categories)
    if rtype.subresources:
        entry["subresources"] = [
            {
                "subresource": sub,
                "responseKind": _subresource_kind(rtype, sub),
                "verbs": ["get", "patch", "update"],
            }
            for sub in sorted(rtype.subresources)
        ]
    return entry


def _subresource_kind(rtype: ResourceType, sub: str) -> dict[str, str]:
    if sub == "scale":
        return {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    return {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}


def _groups(served: list[ResourceType]) -> dict[str, list[str]]:
    groups: dict[str, set[str]] = {}
    for rtype in served:
        if rtype.group:
            groups.setdefault(rtype.group, set()).add(rtype.version)
    return {g: sorted(vs, key=openapi.version_priority) for g, vs in sorted(groups.items())}


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def serve_discovery(group: str, version: str, served: list[ResourceType]) -> dict[str, Any]:
    """An APIGroup, or the APIResourceList of one group version."""
    groups = _groups(served)
    if group and group not in groups:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if not version:
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            **_group(group, groups[group]),
        }
    types = [t for t in served if t.group == group and t.version == version]
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
            "storageVersionHash": hashlib.sha256(rtype.group_resource.encode()).hexdigest()[:12],
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
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
