"""The operator's client finds each kind through the API server's discovery, on both API
servers (the sandbox, and kube-apiserver with `GWO_KUBE=real`): every kind the operator
writes, a kind not served, a CRD installed after the client started, and what discovery
costs. Discovery that fails or answers nonsense is a KubeError (a test double serves it)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gemini_webhook_operator import receiver_resources, rest_mapper
from gemini_webhook_operator.kube import Kube, KubeError
from gemini_webhooks.contracts import crd
from gemini_webhooks.kube_access import ClusterAccess
from tests.fixtures import gateway_api
from tests.operator.api_proxy import KubeLink
from tests.operator.harness import Cluster

# Where each kind the operator writes lives (the table kube.py kept by hand before).
COLLECTIONS = {
    ("v1", "ConfigMap"): "/api/v1/namespaces/ns/configmaps",
    ("v1", "Secret"): "/api/v1/namespaces/ns/secrets",
    ("v1", "Pod"): "/api/v1/namespaces/ns/pods",
    ("v1", "Service"): "/api/v1/namespaces/ns/services",
    ("v1", "ServiceAccount"): "/api/v1/namespaces/ns/serviceaccounts",
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
    ): "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/rolebindings"
    ),
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/ns/deployments",
    ("policy/v1", "PodDisruptionBudget"): "/apis/policy/v1/namespaces/ns/poddisruptionbudgets",
    ("networking.k8s.io/v1", "Ingress"): "/apis/networking.k8s.io/v1/namespaces/ns/ingresses",
    ("networking.k8s.io/v1", "NetworkPolicy"): (
        "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies"
    ),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): (
        "/apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes"
    ),
    ("coordination.k8s.io/v1", "Lease"): "/apis/coordination.k8s.io/v1/namespaces/ns/leases",
    (crd.API_VERSION, crd.KIND): f"/apis/{crd.API_VERSION}/namespaces/ns/{crd.PLURAL}",
}


async def test_every_kind_the_operator_writes_maps_to_its_collection(
    cluster: Cluster, kube: Any
) -> None:
    gateway_api.install(kube)
    client = Kube(ClusterAccess.load(str(kube.kubeconfig)))
    try:
        found = {of: await client.path(*of, "ns") for of in COLLECTIONS}
        assert found == COLLECTIONS
        assert set(receiver_resources.OWNED_KINDS) <= set(COLLECTIONS)
        cluster_scoped = await client.path("rbac.authorization.k8s.io/v1", "ClusterRole", "ns", "x")
        assert cluster_scoped == "/apis/rbac.authorization.k8s.io/v1/clusterroles/x"
    finally:
        await client.close()


async def test_a_kind_the_api_does_not_serve_is_none_as_a_missing_object(kube: Any) -> None:
    client = Kube(ClusterAccess.load(str(kube.kubeconfig)))
    absent = {
        "apiVersion": "absent.example.com/v1",
        "kind": "Nothing",
        "metadata": {"name": "n", "namespace": "default"},
    }
    try:
        assert await client.apply(absent) is None
        assert await client.create(absent) is None
        assert await client.get("absent.example.com/v1", "Nothing", "default", "n") is None
        assert await client.list("absent.example.com/v1", "Nothing", "default", "") == []
        await client.delete("absent.example.com/v1", "Nothing", "default", "n")
        # A kind missing from a group version that is served.
        assert await client.get("apps/v1", "Nothing", "default", "n") is None
    finally:
        await client.close()


def probe_crd(group: str) -> dict[str, Any]:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"probes.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "probes", "singular": "probe", "kind": "Probe"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_a_crd_installed_after_the_client_started_is_found_by_rediscovery(
    kube: Any,
) -> None:
    access = ClusterAccess.load(str(kube.kubeconfig))
    client, fresh = Kube(access), Kube(access)
    group = f"disco-{uuid.uuid4().hex[:8]}.example.com"
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    try:
        assert await client.path("apps/v1", "Deployment", "default") is not None  # discovered
        await client.request("POST", crds, probe_crd(group))

        async def served() -> bool:  # by the server's discovery, as a new client sees it
            fresh.mapper = rest_mapper.RESTMapper(fresh._discovery)
            return await fresh.path(f"{group}/v1", "Probe", "default") is not None

        await eventually(served, "the CRD to be served")
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Probe",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"x": 1},
        }
        stored = await client.apply(body)
        assert stored is not None and stored["spec"] == {"x": 1}
    finally:
        await client.request("DELETE", f"{crds}/probes.{group}")
        await client.close()
        await fresh.close()


async def test_discovery_is_two_requests_once_not_per_call(kube: Any) -> None:
    link = KubeLink.serve(ClusterAccess.load(str(kube.kubeconfig)))
    client = Kube(ClusterAccess(server=link.url))
    name = f"disco-{uuid.uuid4().hex[:8]}"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"a": "b"},
    }
    try:
        for _ in range(5):
            await client.get("v1", "Secret", "default", "absent")
            await client.list("apps/v1", "Deployment", "default", "")
            await client.apply(config_map)
            await client.get("networking.k8s.io/v1", "Ingress", "default", "absent")
        await client.delete("v1", "ConfigMap", "default", name)
        paths = [r.path for r in link.requests()]
        assert [p for p in paths if p in ("/api", "/apis")] == ["/api", "/apis"]
        assert len(paths) == 2 + 5 * 4 + 1  # every other request is the call itself
    finally:
        await client.close()
        link.close()


# -- Failing discovery (a test double answers /api and /apis) ------------------------------


Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serving() -> AsyncIterator[Callable[[Answer], Awaitable[Kube]]]:
    started: list[tuple[TestServer, Kube]] = []

    async def start(answer: Answer) -> Kube:
        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        client = Kube(ClusterAccess(server=f"http://127.0.0.1:{server.port}"))
        started.append((server, client))
        return client

    yield start
    for server, client in started:
        await client.close()
        await server.close()


def answering(status: int, body: bytes, content_type: str = "application/json") -> Answer:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    return answer


async def test_discovery_refused_is_a_kube_error_with_the_servers_message(serving: Any) -> None:
    status = {"kind": "Status", "message": "forbidden: User cannot get path /apis"}
    client = await serving(answering(403, json.dumps(status).encode()))
    with pytest.raises(KubeError, match="403: discovery at /apis: forbidden") as raised:
        await client.get("apps/v1", "Deployment", "default", "x")
    assert raised.value.status == 403


async def test_an_unreachable_server_is_a_kube_error() -> None:
    client = Kube(ClusterAccess(server="http://127.0.0.1:9"), timeout=5)
    try:
        with pytest.raises(KubeError, match="unreachable"):
            await client.get("v1", "Secret", "default", "x")
    finally:
        await client.close()


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b'{"items": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"kind": "APIGroupDiscoveryList", "items": [{"versions": "v1"}]}',
    ],
    ids=["html", "deep", "wrong-shape"],
)
async def test_a_malformed_discovery_body_is_a_kube_error(serving: Any, body: bytes) -> None:
    client = await serving(answering(200, body, rest_mapper.AGGREGATED))
    with pytest.raises(KubeError, match="discovery unusable: /apis: ") as raised:
        await client.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "n"},
            }
        )
    assert raised.value.status == 0


async def test_a_discovery_body_over_the_bound_is_refused(
    serving: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest_mapper, "MAX_BYTES", 1000)
    client = await serving(answering(200, b'{"items": []' + b" " * 2000 + b"}"))
    with pytest.raises(KubeError, match="discovery at /apis is over 1000 bytes"):
        await client.list("apps/v1", "Deployment", "default", "")
