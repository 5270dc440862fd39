"""The sandbox in-process on the test's own loop, and kmock's DSL on top of it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from gemini_webhooks.kubesandbox import KubeSandbox, KubeSandboxServer
from gemini_webhooks.kubesandbox.store import Cluster


async def test_the_server_starts_on_an_ephemeral_port_and_stops(tmp_path: Path) -> None:
    server = KubeSandboxServer(kubeconfig=tmp_path / "kubeconfig")
    await server.start()
    try:
        assert server.port > 0
        config = yaml.safe_load((tmp_path / "kubeconfig").read_text())
        assert config["clusters"][0]["cluster"]["server"] == server.base_url
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.base_url}/version") as reply,
        ):
            assert reply.status == 200
    finally:
        await server.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{server.base_url}/version")


async def test_kmock_reactions_answer_before_the_sandbox() -> None:
    async with KubeSandboxServer() as server, aiohttp.ClientSession() as session:
        server.sandbox["get /api/v1/namespaces/default"] << 418 << {"reason": "a teapot"}
        async with session.get(f"{server.base_url}/api/v1/namespaces/default") as reply:
            assert reply.status == 418 and (await reply.json()) == {"reason": "a teapot"}
        async with session.get(f"{server.base_url}/api/v1/namespaces/kube-system") as reply:
            assert reply.status == 200
        paths = [request.url.path for request in server.sandbox]
        assert paths == ["/api/v1/namespaces/default", "/api/v1/namespaces/kube-system"]


async def test_the_state_is_inspectable_in_process() -> None:
    async with KubeSandboxServer() as server, aiohttp.ClientSession() as session:
        body = {"metadata": {"name": "seen"}, "data": {"a": "1"}}
        async with session.post(
            f"{server.base_url}/api/v1/namespaces/default/configmaps", json=body
        ) as reply:
            assert reply.status == 201
        configmaps = server.sandbox.cluster.find_type("", "v1", "configmaps")
        assert configmaps is not None
        stored = server.sandbox.cluster.get(configmaps, "default", "seen")
        assert stored["data"] == {"a": "1"}


async def test_a_watch_that_falls_too_far_behind_is_cut() -> None:
    async with KubeSandboxServer() as server, aiohttp.ClientSession() as session:
        server.sandbox.max_watch_backlog = 3
        url = f"{server.base_url}/api/v1/namespaces/default/configmaps"
        async with session.get(
            url, params={"watch": "1", "resourceVersion": "0", "timeoutSeconds": "3"}
        ) as watch:
            assert watch.status == 200
            await asyncio.sleep(0.1)  # the stream is open and waiting
            configmaps = server.sandbox.cluster.find_type("", "v1", "configmaps")
            assert configmaps is not None
            for i in range(10):  # no awaits in between: the watch cannot drain its queue
                server.sandbox.cluster.create(
                    configmaps, "default", {"metadata": {"name": f"c{i}"}}
                )
            lines = [line async for line in watch.content if line.strip()]
        # What was queued before the cut is gone; the stream ended instead of growing.
        assert len(lines) < 10


def test_a_threaded_sandbox_that_cannot_bind_cleans_up(tmp_path: Path) -> None:
    import socket
    import threading

    from gemini_webhooks.kubesandbox import ThreadedKubeSandbox

    before = set(threading.enumerate())  # others' threads may end meanwhile: only new ones count
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        runner = ThreadedKubeSandbox(port=busy.getsockname()[1], kubeconfig=tmp_path / "kubeconfig")
        with pytest.raises(OSError):
            runner.start()
    assert set(threading.enumerate()) - before == set()
    assert not (tmp_path / "kubeconfig").exists()


async def test_a_watch_from_a_version_older_than_the_kept_history_is_gone() -> None:
    sandbox = KubeSandbox(cluster=Cluster(history_size=5))
    async with KubeSandboxServer(sandbox=sandbox) as server, aiohttp.ClientSession() as session:
        url = f"{server.base_url}/api/v1/namespaces/default/configmaps"
        versions = []
        for i in range(8):  # more changes than the history keeps
            async with session.post(url, json={"metadata": {"name": f"c{i}"}}) as reply:
                versions.append((await reply.json())["metadata"]["resourceVersion"])

        params = {"watch": "1", "resourceVersion": versions[0], "timeoutSeconds": "1"}
        async with session.get(url, params=params) as watch:
            old = [line async for line in watch.content if line.strip()]
        params["resourceVersion"] = versions[-2]
        async with session.get(url, params=params) as watch:
            recent = [line async for line in watch.content if line.strip()]
    (gone,) = (json.loads(line) for line in old)
    assert gone["type"] == "ERROR" and gone["object"]["code"] == 410
    assert gone["object"]["reason"] == "Expired"
    (added,) = (json.loads(line) for line in recent)
    assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "c7")
