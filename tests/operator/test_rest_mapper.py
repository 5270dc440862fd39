"""The REST mapper's decisions over discovery documents served by a fake `fetch` (no
server): what it asks, when it asks again, what it makes of each answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gemini_webhook_operator.rest_mapper import (
    ACCEPT_LIST,
    ACCEPT_ROOT,
    AGGREGATED,
    REDISCOVER_AFTER,
    DiscoveryError,
    RESTMapper,
    RESTMapping,
)


def resource(plural: str, kind: str, group: str, version: str, scope: str = "Namespaced") -> Any:
    return {
        "resource": plural,
        "responseKind": {"group": group, "version": version, "kind": kind},
        "scope": scope,
        "verbs": ["get"],
        "subresources": [{"subresource": "status", "responseKind": {"kind": kind}}],
    }


def group(name: str, version: str, *resources: Any) -> Any:
    return {"metadata": {"name": name}, "versions": [{"version": version, "resources": resources}]}


CORE = {
    "kind": "APIGroupDiscoveryList",
    "items": [
        {
            "metadata": {},
            "versions": [{"version": "v1", "resources": [resource("secrets", "Secret", "", "v1")]}],
        }
    ],
}
APIS = {
    "kind": "APIGroupDiscoveryList",
    "items": [
        group("apps", "v1", resource("deployments", "Deployment", "apps", "v1")),
        group(
            "rbac.authorization.k8s.io",
            "v1",
            resource("clusterroles", "ClusterRole", "rbac.authorization.k8s.io", "v1", "Cluster"),
        ),
    ],
}
ROUTE = resource("httproutes", "HTTPRoute", "gateway.networking.k8s.io", "v1")


class Server:
    """What a fake API server answers, by path and Accept; records what was asked."""

    def __init__(self, documents: dict[str, Any], *, aggregated: bool = True) -> None:
        self.documents = documents
        self.aggregated = aggregated
        self.asked: list[tuple[str, str]] = []

    async def fetch(self, path: str, accept: str) -> tuple[str, bytes] | None:
        self.asked.append((path, accept))
        found = self.documents.get(path)
        if found is None:
            return None
        body = found if isinstance(found, bytes) else json.dumps(found).encode()
        return (AGGREGATED if self.aggregated else "application/json"), body


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_aggregated_discovery_is_one_request_per_root_then_cached() -> None:
    server = Server({"/api": CORE, "/apis": APIS})
    mapper = RESTMapper(server.fetch)
    assert await mapper.mapping("v1", "Secret") == RESTMapping("/api/v1", "secrets", True)
    assert await mapper.mapping("apps/v1", "Deployment") == RESTMapping(
        "/apis/apps/v1", "deployments", True
    )
    for _ in range(3):
        await mapper.mapping("apps/v1", "Deployment")
        await mapper.mapping("v1", "Secret")
    assert server.asked == [("/api", ACCEPT_ROOT), ("/apis", ACCEPT_ROOT)]


async def test_a_cluster_scoped_kind_maps_to_a_path_without_namespace() -> None:
    mapper = RESTMapper(Server({"/apis": APIS}).fetch)
    found = await mapper.mapping("rbac.authorization.k8s.io/v1", "ClusterRole")
    assert found is not None and not found.namespaced
    assert found.path("ignored", "admin") == "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin"


async def test_an_aggregated_list_is_known_by_its_kind_when_a_proxy_drops_the_media_type() -> None:
    server = Server({"/apis": APIS}, aggregated=False)
    mapper = RESTMapper(server.fetch)
    assert await mapper.mapping("apps/v1", "Deployment") is not None
    assert server.asked == [("/apis", ACCEPT_ROOT)]


async def test_without_aggregated_discovery_only_the_asked_group_version_is_read() -> None:
    server = Server(
        {
            "/apis": {
                "kind": "APIGroupList",
                "groups": [
                    {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]},
                    {"name": "x.io", "versions": [{"groupVersion": "x.io/v1", "version": "v1"}]},
                ],
            },
            "/apis/apps/v1": {
                "kind": "APIResourceList",
                "groupVersion": "apps/v1",
                "resources": [
                    {"name": "deployments", "kind": "Deployment", "namespaced": True},
                    {"name": "deployments/scale", "kind": "Scale", "namespaced": True},
                ],
            },
            "/api": {"kind": "APIVersions", "versions": ["v1"]},
            "/api/v1": {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": [{"name": "namespaces", "kind": "Namespace", "namespaced": False}],
            },
        },
        aggregated=False,
    )
    mapper = RESTMapper(server.fetch)
    assert await mapper.mapping("apps/v1", "Deployment") == RESTMapping(
        "/apis/apps/v1", "deployments", True
    )
    assert await mapper.mapping("v1", "Namespace") == RESTMapping("/api/v1", "namespaces", False)
    assert [path for path, _ in server.asked] == ["/apis", "/apis/apps/v1", "/api", "/api/v1"]
    assert server.asked[1] == ("/apis/apps/v1", ACCEPT_LIST)
    # A miss re-reads the root and the group version: a CRD may have added a kind to it.
    assert await mapper.mapping("apps/v1", "Scale") is None  # a subresource is no kind
    assert [path for path, _ in server.asked[4:]] == ["/apis", "/apis/apps/v1"]


async def test_a_kind_not_served_is_none_after_one_rediscovery() -> None:
    clock = Clock()
    server = Server({"/apis": APIS})
    mapper = RESTMapper(server.fetch, clock=clock)
    await mapper.mapping("apps/v1", "Deployment")
    assert await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute") is None
    assert [path for path, _ in server.asked] == ["/apis", "/apis"]


async def test_a_kind_missing_on_first_discovery_is_not_asked_for_twice() -> None:
    server = Server({"/apis": APIS})
    mapper = RESTMapper(server.fetch)
    assert await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute") is None
    assert len(server.asked) == 1  # what was just read is fresh: no second request


async def test_a_confirmed_miss_costs_no_request_until_rediscover_after() -> None:
    clock = Clock()
    server = Server({"/apis": APIS})
    mapper = RESTMapper(server.fetch, clock=clock)
    await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute")
    for _ in range(10):
        assert await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute") is None
    assert len(server.asked) == 1
    clock.now += REDISCOVER_AFTER
    assert await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute") is None
    assert len(server.asked) == 2


async def test_a_crd_installed_after_start_is_found_by_the_rediscovery() -> None:
    server = Server({"/apis": APIS})
    mapper = RESTMapper(server.fetch)
    await mapper.mapping("apps/v1", "Deployment")
    server.documents["/apis"] = {
        **APIS,
        "items": [*APIS["items"], group("gateway.networking.k8s.io", "v1", ROUTE)],
    }
    found = await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute")
    assert found == RESTMapping("/apis/gateway.networking.k8s.io/v1", "httproutes", True)
    assert len(server.asked) == 2


async def test_a_crd_installed_after_a_confirmed_miss_is_found_once_it_is_stale() -> None:
    clock = Clock()
    server = Server({"/apis": APIS})
    mapper = RESTMapper(server.fetch, clock=clock)
    assert await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute") is None
    server.documents["/apis"] = {"items": [group("gateway.networking.k8s.io", "v1", ROUTE)]}
    assert await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute") is None
    clock.now += REDISCOVER_AFTER
    assert await mapper.mapping("gateway.networking.k8s.io/v1", "HTTPRoute") is not None


async def test_callers_at_once_share_one_discovery() -> None:
    server = Server({"/apis": APIS})
    mapper = RESTMapper(server.fetch)
    found = await asyncio.gather(*(mapper.mapping("apps/v1", "Deployment") for _ in range(50)))
    assert len(set(found)) == 1 and found[0] is not None
    assert len(server.asked) == 1


async def test_a_failed_discovery_is_tried_again_by_the_next_caller() -> None:
    calls = []

    async def flaky(path: str, accept: str) -> tuple[str, bytes] | None:
        calls.append(path)
        if len(calls) == 1:
            raise ConnectionError("down")
        return AGGREGATED, json.dumps(APIS).encode()

    mapper = RESTMapper(flaky)
    with pytest.raises(ConnectionError):
        await mapper.mapping("apps/v1", "Deployment")
    assert await mapper.mapping("apps/v1", "Deployment") is not None


async def test_a_root_that_is_not_found_is_a_clear_error() -> None:
    mapper = RESTMapper(Server({}).fetch)
    with pytest.raises(DiscoveryError, match="/apis: not found"):
        await mapper.mapping("apps/v1", "Deployment")


def _nested(depth: int) -> bytes:
    return b'{"items":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>proxy error</html>", "not JSON"),
        (b"\xff\xfe\xfa", "not JSON"),
        (_nested(100_000), "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"kind": "Status"}', "neither a discovery list"),
        (b'{"kind": "APIGroupDiscoveryList", "items": {}}', "items is not a list"),
        (b'{"kind": "APIGroupDiscoveryList", "items": [{"versions": [{}]}]}', "version is not"),
        (
            b'{"kind": "APIGroupDiscoveryList", "items": [{"metadata": {"name": 7}}]}',
            "metadata.name",
        ),
        (
            json.dumps({"kind": "APIGroupDiscoveryList", "items": [group("a", "v1", {})]}).encode(),
            "resource is not a string",
        ),
        (
            json.dumps(
                {
                    "kind": "APIGroupDiscoveryList",
                    "items": [group("a", "v1", ROUTE | {"scope": "X"})],
                }
            ).encode(),
            "scope 'X'",
        ),
        (b'{"kind": "APIGroupList", "groups": [{"versions": [{"groupVersion": 1}]}]}', "groupV"),
        (b'{"kind": "APIVersions", "versions": "v1"}', "versions is not a list"),
    ],
)
async def test_a_malformed_root_document_is_a_discovery_error_naming_it(
    body: bytes, reason: str
) -> None:
    mapper = RESTMapper(Server({"/apis": body}, aggregated=False).fetch)
    with pytest.raises(DiscoveryError, match=reason) as raised:
        await mapper.mapping("apps/v1", "Deployment")
    assert str(raised.value).startswith("/apis: ")


async def test_an_aggregated_answer_without_items_is_a_discovery_error() -> None:
    mapper = RESTMapper(Server({"/apis": {"kind": "Status"}}).fetch)
    with pytest.raises(DiscoveryError, match="without items"):
        await mapper.mapping("apps/v1", "Deployment")


@pytest.mark.parametrize(
    ("resources", "reason"),
    [
        ("nope", "resources is not a list"),
        ([{"name": "deployments", "kind": "Deployment"}], "namespaced is not a boolean"),
        ([{"name": "deployments", "namespaced": True}], "kind is not a string"),
    ],
)
async def test_a_malformed_resource_list_is_a_discovery_error(resources: Any, reason: str) -> None:
    documents = {
        "/apis": {
            "kind": "APIGroupList",
            "groups": [{"versions": [{"groupVersion": "apps/v1"}]}],
        },
        "/apis/apps/v1": {"groupVersion": "apps/v1", "resources": resources},
    }
    mapper = RESTMapper(Server(documents, aggregated=False).fetch)
    with pytest.raises(DiscoveryError, match=reason):
        await mapper.mapping("apps/v1", "Deployment")


async def test_a_resource_without_a_kind_is_skipped_as_client_go_does() -> None:
    nameless = {"resource": "bindings", "scope": "Namespaced"}
    mapper = RESTMapper(Server({"/apis": {"items": [group("apps", "v1", nameless)]}}).fetch)
    assert await mapper.mapping("apps/v1", "Binding") is None
