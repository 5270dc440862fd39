"""What targets receive: envelope or binary CloudEvent; Services by cluster DNS, through
HTTP_PROXY unless NO_PROXY says otherwise."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

import pytest
from aiohttp import web

from gemini_webhook_receiver.forwarding import Target
from gemini_webhook_receiver.http11 import PlainHttp
from tests.fixtures.cluster_proxy import ClusterProxy

from .conftest import RecordingTarget, StartReceiver, base_config, envelope, start_app


async def test_cloudevents_target_gets_a_binary_mode_cloudevent(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    config = base_config(target.url, path)
    config["default_route"] = {"targets": [{"url": target.url, "format": "cloudevents"}]}
    client = await start_receiver(config)
    event = envelope("batch.succeeded", user_metadata={"team": "a"})
    _, _, msg_id = await client.deliver([secret], event)
    received = target.requests[0]
    assert received.headers["ce-specversion"] == "1.0"
    assert received.headers["ce-id"] == msg_id
    assert received.headers["ce-type"] == "batch.succeeded"
    assert received.headers["ce-source"].endswith("/orders")
    assert received.headers["ce-time"] == event["timestamp"]
    assert received.headers["ce-subject"] == event["data"]["id"]
    assert json.loads(received.headers["ce-usermetadata"]) == {"team": "a"}
    assert json.loads(received.body) == event["data"]


async def test_service_target_goes_by_its_cluster_name_through_http_proxy(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    cluster_proxy: ClusterProxy,
) -> None:
    path, secret = secrets_file
    address = target.url.split("//")[1].split("/")[0]
    cluster_proxy.serve_service("handler", "team-a", 8080, address)
    config = base_config(target.url, path)
    config["default_route"] = {
        "targets": [
            {"service": {"name": "handler", "namespace": "team-a", "port": 8080, "path": "/in"}}
        ]
    }
    client = await start_receiver(config)
    assert (await client.deliver([secret]))[0] == 200
    assert len(target.requests) == 1
    assert target.requests[0].headers["host"] == "handler.team-a.svc.cluster.local:8080"
    assert (
        await client.metric(
            "gemini_receiver_forwards_total", target="team-a/handler:8080", outcome="ok"
        )
        >= 1
    )


@pytest.mark.parametrize(("no_proxy", "status", "delivered"), [("127.0.0.1", 200, 1), ("", 503, 0)])
async def test_a_no_proxy_host_is_reached_directly_and_any_other_through_http_proxy(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
    status: int,
    delivered: int,
) -> None:
    """HTTP_PROXY names a port where nothing listens: only a direct connection delivers."""
    path, secret = secrets_file
    for name in ("http_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    client = await start_receiver(base_config(target.url, path))
    assert (await client.deliver([secret]))[0] == status
    assert len(target.requests) == delivered


def test_the_lean_pool_sends_through_a_plain_proxy_with_the_absolute_url() -> None:
    direct = Target("t", "http://orders.shop.svc.cluster.local:8080/in?x=1", cloudevents=False)
    assert direct.plain_http == PlainHttp(
        "orders.shop.svc.cluster.local", 8080, b"orders.shop.svc.cluster.local:8080", b"/in?x=1"
    )
    proxied = Target(direct.name, direct.url, cloudevents=False, proxy="http://10.0.0.1:3128")
    assert proxied.plain_http == PlainHttp(
        "10.0.0.1",
        3128,
        b"orders.shop.svc.cluster.local:8080",
        b"http://orders.shop.svc.cluster.local:8080/in?x=1",
    )
    # A proxy that needs credentials or TLS goes through aiohttp's proxy support.
    for proxy in ("http://user:pw@10.0.0.1:3128", "https://10.0.0.1:3128"):
        assert Target("t", direct.url, cloudevents=False, proxy=proxy).plain_http is None


async def test_event_goes_to_every_target_of_its_rule(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    config = base_config(target.url, path)
    config["routes"] = [
        {
            "name": "both",
            "match": {"types": ["batch.*"]},
            "targets": [{"url": target.url + "/one"}, {"url": target.url + "/two"}],
        }
    ]
    client = await start_receiver(config)
    _, _, msg_id = await client.deliver([secret])
    assert target.ids() == [msg_id, msg_id]


async def test_unroutable_event_goes_to_the_dead_letter_target_inline(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    config = base_config(target.url, path)
    del config["default_route"]
    config["routes"] = [
        {
            "name": "videos",
            "match": {"types": ["video.*"]},
            "targets": [{"url": "http://127.0.0.1:9/"}],
        }
    ]
    config["dead_letter"] = {"target": {"url": target.url + "/dead"}}
    client = await start_receiver(config)
    status, _, msg_id = await client.deliver([secret])
    assert status == 200
    assert target.ids() == [msg_id]
    assert await client.metric("gemini_receiver_unroutable_total", source="orders") >= 1


async def test_target_closing_idle_connections_does_not_fail_the_next_delivery(
    start_receiver: StartReceiver, secrets_file: tuple[Path, str]
) -> None:
    from aiohttp import web

    recorder = RecordingTarget()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.05)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
    try:
        path, secret = secrets_file
        client = await start_receiver(base_config(url, path))
        for _ in range(3):
            assert (await client.deliver([secret]))[0] == 200
            await asyncio.sleep(0.2)  # the target drops the kept-alive connection
        assert len(recorder.requests) == 3
    finally:
        await runner.cleanup()


async def test_each_failed_forward_is_counted_by_what_failed(target: RecordingTarget) -> None:
    import aiohttp

    from gemini_webhook_receiver.forwarding import Event, Forwarder, Target
    from gemini_webhook_receiver.metrics import (
        FORWARD_CONNECTION_ERROR,
        FORWARD_HTTP_ERROR,
        FORWARD_OK,
        FORWARD_OUTCOMES,
        FORWARD_TIMEOUT,
    )

    event = Event("msg_outcomes", "orders", "hmac", "batch.failed", json.dumps(envelope()).encode())
    session = aiohttp.ClientSession()
    forwarder = Forwarder(4, lambda: session)
    try:
        to_target = Target("t", target.url, cloudevents=False)
        outcomes = [await forwarder.forward(event, to_target, 2)]
        target.fail_next = 1
        outcomes.append(await forwarder.forward(event, to_target, 2))
        target.delay = 0.5
        outcomes.append(await forwarder.forward(event, to_target, 0.1))
        closed = Target("closed", "http://127.0.0.1:9/", cloudevents=False)
        outcomes.append(await forwarder.forward(event, closed, 2))
    finally:
        forwarder.close()
        await session.close()
    assert outcomes == [FORWARD_OK, FORWARD_HTTP_ERROR, FORWARD_TIMEOUT, FORWARD_CONNECTION_ERROR]
    assert set(outcomes) <= set(FORWARD_OUTCOMES)


def test_url_target_name_carries_no_credentials_or_query() -> None:
    from gemini_webhook_receiver.forwarding import resolve
    from gemini_webhooks.contracts.egress_proxy import DIRECT
    from gemini_webhooks.contracts.receiver_config import TargetConfig

    target = resolve(
        TargetConfig(url="https://user:hunter2@hooks.example.test:8443/in?token=abc#x"),
        "cluster.local",
        DIRECT,
    )
    assert target.name == "https://hooks.example.test:8443/in"
    assert target.url.endswith("/in?token=abc#x")  # what is sent is unchanged


async def test_each_static_webhook_is_its_own_source_for_routing(
    start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    from .conftest import new_secret, write_secrets

    orders_secret, videos_secret = new_secret(), new_secret()
    write_secrets(tmp_path / "orders.json", orders_secret)
    write_secrets(tmp_path / "videos.json", videos_secret)
    config = base_config(target.url, None)
    config["static_webhooks"] = [
        {"name": name, "secrets": {"file": {"path": str(tmp_path / f"{name}.json")}}}
        for name in ("orders", "videos")
    ]
    config["routes"] = [
        {"name": "v", "match": {"sources": ["videos"]}, "targets": [{"url": target.url + "/v"}]}
    ]
    client = await start_receiver(config)
    assert (await client.deliver([orders_secret]))[0] == 200
    assert (await client.deliver([videos_secret]))[0] == 200
    sources = [r.headers["X-Gemini-Source"] for r in target.requests]
    assert sources == ["orders", "videos"]
    routed = await client.metric(
        "gemini_receiver_forwards_total", target=target.url + "/v", outcome="ok"
    )
    defaulted = await client.metric(
        "gemini_receiver_forwards_total", target=target.url, outcome="ok"
    )
    assert (routed, defaulted) == (1, 1)  # videos by its rule, orders by the default route


async def test_a_large_answer_from_a_target_is_read_without_being_held(
    start_receiver: StartReceiver, secrets_file: tuple[Path, str]
) -> None:
    """A URL with credentials goes through aiohttp (as https does), which held the whole
    answer (`response.read()`) only to drop it."""
    size = 64 * 1024 * 1024

    async def big(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        response.content_length = size
        await response.prepare(request)
        chunk = b"x" * (1024 * 1024)
        for _ in range(size // len(chunk)):
            await response.write(chunk)
        return response

    app = web.Application()
    app.router.add_post("/in", big)
    runner, port = await start_app(app)
    try:
        path, secret = secrets_file
        client = await start_receiver(base_config(f"http://u:p@127.0.0.1:{port}/in", path))
        tracemalloc.start()
        try:
            status = (await client.deliver([secret]))[0]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 200
        assert peak < size / 4
    finally:
        await runner.cleanup()
