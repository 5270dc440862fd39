"""A request the operator's client gives up on (cancelled when the leader Lease is lost, or
timed out) is reset, not closed gracefully: the server sees the connection reset, and the
kernel keeps nothing of it to deliver later (`kube.abortive_socket`)."""

from __future__ import annotations

import asyncio

import pytest

from gemini_webhook_operator.kube import Kube, KubeError
from gemini_webhooks.kube_access import ClusterAccess


async def test_a_request_given_up_on_is_reset_not_closed() -> None:
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's head: it has arrived
        try:
            while await reader.read(65536):
                pass
            ended.set_result("closed")  # a FIN: what the kernel had queued is still sent
        except ConnectionResetError:
            ended.set_result("reset")
        writer.close()

    server = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    kube = Kube(ClusterAccess(server=f"http://127.0.0.1:{port}"), timeout=0.5)
    try:
        with pytest.raises(KubeError, match="unreachable"):
            await kube.request("PATCH", "/api/v1/namespaces/ns/secrets/s", {"data": {}})
        assert await asyncio.wait_for(ended, 5) == "reset"
    finally:
        await kube.close()
        server.close()
        await server.wait_closed()
