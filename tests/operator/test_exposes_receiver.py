"""`spec.receiver.expose` end to end: the real operator, the emulator, and an API server
that accepts the Ingress, the HTTPRoute (Gateway API CRDs at the pinned version) and the
NetworkPolicy. The test plays the ingress or gateway controller by writing the route's
status; the URL reaches Gemini only once the route is admitted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from gemini_webhook_operator import receiver_names
from tests.fixtures import gateway_api
from tests.operator.harness import (
    Cluster,
    condition,
    is_ready,
    kubectl,
    operator_running,
    resource,
    synced_reason,
)

NAME = "exposed"
RECEIVER = receiver_names.receiver_name(NAME)
INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
HTTPROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"
CONTROLLER = "example.net/gateway-controller"


def exposed(expose: dict[str, Any], base_url: str) -> dict[str, Any]:
    receiver = {
        "enabled": True,
        "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
        "expose": expose,
    }
    body = resource(NAME, "unused", base_url, receiver=receiver)
    del body["spec"]["url"]
    return body


async def eventually(probe: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def remote_uris(emulator: Any) -> list[str]:
    return [w.uri for w in emulator.client().webhooks.list().webhooks or []]


async def set_status(gemini: Cluster, collection: str, status: dict[str, Any]) -> None:
    await gemini.client.request(
        "PATCH",
        f"{collection}/{RECEIVER}/status",
        {"status": status},
        content_type="application/merge-patch+json",
    )


async def test_an_ingress_url_is_registered_once_the_ingress_has_an_address(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    ingress = {
        "ingressClassName": "nginx",
        "host": "hooks.example.com",
        "path": "/gemini",
        "tls": {"issuer": {"name": "letsencrypt"}},
    }
    async with operator_running(kube):
        await gemini.apply(exposed({"ingress": ingress}, emulator.base_url))
        waiting = await gemini.wait_for(
            NAME, lambda o: synced_reason(o) == "WaitingForIngressAddress"
        )
        assert condition(waiting, "Ready")["reason"] == "WaitingForIngressAddress"
        event = await gemini.wait_event(NAME, {"WaitingForIngressAddress"})
        assert event["type"] == "Normal"  # a wait, not a failure
        assert remote_uris(emulator) == []  # nothing registered before the route works
        stored = await gemini.client.get("networking.k8s.io/v1", "Ingress", "default", RECEIVER)
        assert stored is not None
        assert stored["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
        assert stored["metadata"]["ownerReferences"][0]["uid"] == waiting["metadata"]["uid"]
        # The receiver itself is up while the route waits; its NetworkPolicy was accepted.
        assert await gemini.client.get("apps/v1", "Deployment", "default", RECEIVER) is not None
        assert (
            await gemini.client.get("networking.k8s.io/v1", "NetworkPolicy", "default", RECEIVER)
            is not None
        )

        await set_status(gemini, INGRESSES, {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
        ready = await gemini.wait_for(NAME, is_ready)
        assert ready["status"]["url"] == "https://hooks.example.com/gemini"
        assert remote_uris(emulator) == ["https://hooks.example.com/gemini"]
        printed = kubectl(kube, "get", "geminiwebhook", NAME)
        assert "https://hooks.example.com/gemini" in printed.splitlines()[1]

        await gemini.patch(
            NAME, {"spec": {"receiver": {"expose": {"ingress": {"host": "new.example.com"}}}}}
        )
        await gemini.wait_for(
            NAME, lambda o: o["status"].get("url") == "https://new.example.com/gemini"
        )
        assert remote_uris(emulator) == ["https://new.example.com/gemini"]
        rule = (
            await gemini.client.get("networking.k8s.io/v1", "Ingress", "default", RECEIVER) or {}
        )["spec"]["rules"][0]
        assert rule["host"] == "new.example.com"

        await gemini.delete(NAME)
        await gemini.wait_gone(NAME, timeout=60)

        async def route_gone() -> bool:
            return (
                await gemini.client.get("networking.k8s.io/v1", "Ingress", "default", RECEIVER)
                is None
            )

        # A real garbage collector takes its time (owned objects go in the background).
        await eventually(route_gone, "the Ingress to be garbage-collected", timeout=90)
    assert remote_uris(emulator) == []


async def test_an_http_route_url_is_registered_once_its_gateway_accepts_it(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    gateway_api.install(kube)
    route = {
        "parentRefs": [{"name": "public", "namespace": "default"}],
        "hostnames": ["hooks.example.com"],
        "path": "/hook",
    }

    def accepted(generation: int) -> dict[str, Any]:
        return {
            "parents": [
                {
                    "parentRef": {"name": "public", "namespace": "default"},
                    "controllerName": CONTROLLER,
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "True",
                            "reason": "Accepted",
                            "message": "",
                            "observedGeneration": generation,
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ],
                }
            ]
        }

    async with operator_running(kube):
        await gemini.apply(exposed({"httpRoute": route}, emulator.base_url))
        await gemini.wait_for(NAME, lambda o: synced_reason(o) == "WaitingForRouteAccepted")
        assert remote_uris(emulator) == []
        stored = await gemini.client.request("GET", f"{HTTPROUTES}/{RECEIVER}")
        assert stored is not None

        await set_status(gemini, HTTPROUTES, accepted(stored["metadata"]["generation"]))
        ready = await gemini.wait_for(NAME, is_ready)
        assert ready["status"]["url"] == "https://hooks.example.com/hook"
        assert remote_uris(emulator) == ["https://hooks.example.com/hook"]

        await gemini.patch(
            NAME,
            {"spec": {"receiver": {"expose": {"httpRoute": {"hostnames": ["b.example.com"]}}}}},
        )
        # The gateway has not seen the new generation yet: the old URL stays registered.
        await gemini.wait_for(NAME, lambda o: synced_reason(o) == "WaitingForRouteAccepted")
        assert remote_uris(emulator) == ["https://hooks.example.com/hook"]
        stored = await gemini.client.request("GET", f"{HTTPROUTES}/{RECEIVER}")
        assert stored is not None and stored["spec"]["hostnames"] == ["b.example.com"]
        await set_status(gemini, HTTPROUTES, accepted(stored["metadata"]["generation"]))
        await gemini.wait_for(NAME, lambda o: is_ready(o) and "b.example.com" in o["status"]["url"])
        assert remote_uris(emulator) == ["https://b.example.com/hook"]

        await gemini.delete(NAME)
        await gemini.wait_gone(NAME, timeout=60)

        async def route_gone() -> bool:
            return await gemini.client.request("GET", f"{HTTPROUTES}/{RECEIVER}") is None

        # A real garbage collector picks up a CRD installed moments ago at its next
        # discovery resync (30 s).
        await eventually(route_gone, "the HTTPRoute to be garbage-collected", timeout=90)


@pytest.mark.sandbox_only  # a fresh API server without the Gateway API CRDs
async def test_an_http_route_without_the_gateway_api_is_reported(
    gemini: Cluster, emulator: Any, kube_sandbox: Any
) -> None:
    route = {"parentRefs": [{"name": "public"}], "hostnames": ["hooks.example.com"]}
    async with operator_running(kube_sandbox):
        await gemini.apply(exposed({"httpRoute": route}, emulator.base_url))
        obj = await gemini.wait_for(NAME, lambda o: synced_reason(o) == "RouteKindNotServed")
        assert "Gateway API CRDs" in condition(obj, "Synced")["message"]
    assert remote_uris(emulator) == []


async def test_a_receiver_for_googles_api_without_expose_is_an_invalid_spec(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    body = exposed({"ingress": {"host": "h.example.com", "tls": {"secretName": "t"}}}, "")
    del body["spec"]["apiBaseUrl"]  # Google's API
    del body["spec"]["receiver"]["expose"]
    async with operator_running(kube):
        await gemini.apply(body)
        obj = await gemini.wait_for(NAME, lambda o: synced_reason(o) == "InvalidSpec")
        assert "spec.receiver.expose" in condition(obj, "Synced")["message"]
        await gemini.patch(NAME, {"spec": {"url": "http://hooks.example.com/"}})
        obj = await gemini.wait_for(
            NAME, lambda o: "https://" in condition(o, "Synced").get("message", "")
        )
        assert synced_reason(obj) == "InvalidSpec"
    assert await gemini.client.get("apps/v1", "Deployment", "default", RECEIVER) is None
