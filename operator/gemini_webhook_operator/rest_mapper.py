"""Where a kind lives in the API, learnt from the API server's discovery (client-go's
RESTMapper, kubectl's deferred discovery) instead of a table kept by hand.

`(apiVersion, kind)` → path prefix, plural and scope. The objects we write carry their
apiVersion, so only that group version's resources are needed, never a preferred version.

Aggregated discovery (apidiscovery.k8s.io/v2, kube-apiserver ≥ 1.30) answers everything
in one request per root (`/api`, `/apis`); a server that does not serve it answers the
same request with its APIVersions / APIGroupList, and the resource list of a group version
(`/api/v1`, `/apis/<group>/<version>`) is then read when first needed. Everything is kept
until a kind is missing: the root is discovered again once (a CRD installed since, such as
Gateway API's HTTPRoute), and a kind still missing is believed missing for
`REDISCOVER_AFTER` seconds, so a cluster without it costs no request per reconciliation.

The parsing is pure; the one I/O edge is `Fetch`, which reads a bounded body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gemini_webhooks import json_depth

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
# Aggregated when served, the unaggregated document otherwise (what kubectl sends).
ACCEPT_ROOT = f"{AGGREGATED},application/json"
ACCEPT_LIST = "application/json"
# A cluster with a few hundred CRDs has an aggregated /apis of a few MiB; more is refused.
MAX_BYTES = 16 * 1024 * 1024
REDISCOVER_AFTER = 30.0  # the garbage collector's discovery resync

# (path, Accept) → (Content-Type, body), None for a 404; raises for any other failure.
Fetch = Callable[[str, str], Awaitable[tuple[str, bytes] | None]]


class DiscoveryError(ValueError):
    """A discovery document we cannot use; the message names the path and what is wrong."""


@dataclass(frozen=True)
class RESTMapping:
    prefix: str  # /api/v1 or /apis/<group>/<version>
    plural: str
    namespaced: bool

    def path(self, namespace: str, name: str | None = None) -> str:
        scope = f"{self.prefix}/namespaces/{namespace}" if self.namespaced else self.prefix
        collection = f"{scope}/{self.plural}"
        return f"{collection}/{name}" if name else collection


Kinds = dict[str, RESTMapping]  # by kind, in one group version


def prefix(api_version: str) -> str:
    return f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"


def root(api_version: str) -> str:
    return "/apis" if "/" in api_version else "/api"


def parse_json(path: str, body: bytes) -> dict[str, Any]:
    try:
        document = json_depth.loads(body)
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError among them
        raise DiscoveryError(f"{path}: not JSON ({str(error)[:100]})") from None
    if not isinstance(document, dict):
        raise DiscoveryError(f"{path}: not a JSON object")
    return document


def _items(path: str, parent: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    found = parent.get(key)
    if found is None:
        return []
    if not isinstance(found, list) or not all(isinstance(i, dict) for i in found):
        raise DiscoveryError(f"{path}: {key} is not a list of objects")
    return found


def _text(path: str, parent: Mapping[str, Any], key: str) -> str:
    found = parent.get(key)
    if not isinstance(found, str):
        raise DiscoveryError(f"{path}: {key} is not a string")
    return found


def parse_aggregated(path: str, document: Mapping[str, Any]) -> dict[str, Kinds]:
    """An APIGroupDiscoveryList: the kinds of every group version it holds."""
    if "items" not in document:
        raise DiscoveryError(f"{path}: an APIGroupDiscoveryList without items")
    served: dict[str, Kinds] = {}
    for group in _items(path, document, "items"):
        metadata = group.get("metadata") or {}
        name = metadata.get("name", "") if isinstance(metadata, dict) else None
        if not isinstance(name, str):
            raise DiscoveryError(f"{path}: a group's metadata.name is not a string")
        for entry in _items(path, group, "versions"):
            api_version = f"{name}/{_text(path, entry, 'version')}".lstrip("/")
            kinds = served.setdefault(api_version, {})
            for resource in _items(path, entry, "resources"):
                plural = _text(path, resource, "resource")
                scope = _text(path, resource, "scope")
                if scope not in ("Namespaced", "Cluster"):
                    raise DiscoveryError(f"{path}: {plural} has scope {scope[:40]!r}")
                response_kind = resource.get("responseKind")
                # client-go skips a resource without a kind as well: nothing maps to it.
                kind = response_kind.get("kind") if isinstance(response_kind, dict) else None
                if isinstance(kind, str) and kind:
                    mapping = RESTMapping(prefix(api_version), plural, scope == "Namespaced")
                    kinds.setdefault(kind, mapping)
    return served


def parse_group_versions(path: str, document: Mapping[str, Any]) -> set[str]:
    """The group versions an unaggregated root lists: `/api`'s APIVersions or `/apis`'s
    APIGroupList."""
    if document.get("kind") == "APIVersions":
        versions = document.get("versions")
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise DiscoveryError(f"{path}: versions is not a list of strings")
        return set(versions)
    if document.get("kind") == "APIGroupList":
        return {
            _text(path, entry, "groupVersion")
            for group in _items(path, document, "groups")
            for entry in _items(path, group, "versions")
        }
    raise DiscoveryError(f"{path}: neither a discovery list nor an API version list")


def parse_resource_list(path: str, document: Mapping[str, Any]) -> Kinds:
    """An APIResourceList: the kinds of one group version (subresources left out)."""
    api_version = _text(path, document, "groupVersion")
    kinds: Kinds = {}
    for resource in _items(path, document, "resources"):
        plural = _text(path, resource, "name")
        namespaced = resource.get("namespaced")
        if not isinstance(namespaced, bool):
            raise DiscoveryError(f"{path}: {plural[:60]}.namespaced is not a boolean")
        if "/" not in plural:
            mapping = RESTMapping(prefix(api_version), plural, namespaced)
            kinds.setdefault(_text(path, resource, "kind"), mapping)
    return kinds


def is_aggregated(content_type: str, document: Mapping[str, Any]) -> bool:
    return "g=apidiscovery.k8s.io" in content_type or document.get("kind") == (
        "APIGroupDiscoveryList"
    )


class RESTMapper:
    """Discovery, cached; `mapping` is what a client asks before every request."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        rediscover_after: float = REDISCOVER_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._rediscover_after = rediscover_after
        self._clock = clock
        # Per root: what each group version serves; None when its list is not read yet.
        self._roots: dict[str, dict[str, Kinds | None]] = {}
        self._missed: dict[tuple[str, str], float] = {}  # when a re-discovery confirmed it
        self._lock = asyncio.Lock()

    async def mapping(self, api_version: str, kind: str) -> RESTMapping | None:
        """Where `kind` of `api_version` lives; None when the server does not serve it.
        Raises DiscoveryError for an unusable document and whatever `fetch` raises."""
        kinds = self._roots.get(root(api_version), {}).get(api_version)
        if kinds is not None and kind in kinds:
            return kinds[kind]
        async with self._lock:  # one discovery at a time; those waiting then find its result
            fetched = await self._load(api_version)
            found = self._known(api_version, kind)
            if found is not None or fetched:
                return self._note(api_version, kind, found)
            missed = self._missed.get((api_version, kind))
            if missed is not None and self._clock() - missed < self._rediscover_after:
                return None
            self._roots.pop(root(api_version), None)
            await self._load(api_version)
            return self._note(api_version, kind, self._known(api_version, kind))

    def _known(self, api_version: str, kind: str) -> RESTMapping | None:
        return (self._roots.get(root(api_version), {}).get(api_version) or {}).get(kind)

    def _note(self, api_version: str, kind: str, found: RESTMapping | None) -> RESTMapping | None:
        if found is None:
            self._missed[(api_version, kind)] = self._clock()
        else:
            self._missed.pop((api_version, kind), None)
        return found

    async def _load(self, api_version: str) -> bool:
        """Read what is not known yet of `api_version`'s root and resource list; whether
        anything was read."""
        top = root(api_version)
        fetched = False
        if top not in self._roots:
            self._roots[top] = await self._read_root(top)
            fetched = True
        versions = self._roots[top]
        if api_version in versions and versions[api_version] is None:
            path = prefix(api_version)
            answer = await self._fetch(path, ACCEPT_LIST)
            versions[api_version] = (
                {} if answer is None else parse_resource_list(path, parse_json(path, answer[1]))
            )
            fetched = True
        return fetched

    async def _read_root(self, top: str) -> dict[str, Kinds | None]:
        answer = await self._fetch(top, ACCEPT_ROOT)
        if answer is None:
            raise DiscoveryError(f"{top}: not found (not a Kubernetes API server?)")
        content_type, body = answer
        document = parse_json(top, body)
        if is_aggregated(content_type, document):
            return dict(parse_aggregated(top, document))
        return dict.fromkeys(parse_group_versions(top, document))
