"""On the real node (`GWO_KUBE=real-node`) the sandbox runs with the receivers' NetworkPolicy
on: who reaches a receiver's ports there, as kube-router enforces it. The policy itself,
from Pods in and out of the allowed peers and its egress, is tests/chart/test_real_install.py's
(`test_the_receivers_network_policy_is_enforced_both_ways`); this pins the sandbox's own
shape: the emulator's Pod (standing where an ingress controller would) on the public port
only, the operator's Pod on the internal port only (its own policy's egress has no public
port), the host on the internal port only (the sandbox's `host_access_policy`). On the API
sandbox nothing enforces a policy: deselected (`real_cluster_only`)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gemini_webhook_operator import receiver_names
from gemini_webhooks.sandbox.node_workloads import EMULATOR
from gemini_webhooks.sandbox.real_node import operator_pods
from tests.e2e.conftest import System, sandbox_of
from tests.e2e.test_resilience import _cleanup, _receiver_pod

pytestmark = [
    pytest.mark.real_component,
    pytest.mark.real_cluster_only,  # a node that enforces NetworkPolicy
    pytest.mark.sandbox_only,  # the sandbox's emulator and operator Pods
    pytest.mark.asyncio(loop_scope="session"),
]

NAME = "policy"
PUBLIC, INTERNAL = receiver_names.HTTP_PORT, receiver_names.INTERNAL_PORT


async def _pod_connects(system: System, pod: str, ip: str, port: int) -> bool:
    """Whether a TCP connection from `pod`'s container to ip:port opens within 2 seconds."""
    attempt = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({ip!r}, {port}), timeout=2).close()\n"
        "    print('OPEN')\n"
        "except OSError:\n"
        "    print('SHUT')\n"
    )
    out = await system.kubectl("exec", "-n", system.namespace, pod, "--", "python", "-c", attempt)
    assert out.strip() in ("OPEN", "SHUT"), out
    return out.strip() == "OPEN"


def _host_connects(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=2).close()
    except OSError:
        return False
    return True


async def test_the_receivers_ports_open_to_the_emulator_the_operator_and_the_host_as_allowed(
    system: System,
) -> None:
    sandbox = sandbox_of(system)
    assert sandbox.real_node is not None and sandbox.api is not None
    scenario = await system.scenario(NAME)
    try:
        await scenario.apply()
        await scenario.wait_ready(within=180)
        receiver = await _receiver_pod(sandbox.api, system.namespace, NAME)
        ip = receiver["status"]["podIP"]
        (operator,) = await operator_pods(sandbox.api, system.namespace)
        operator_pod = operator["metadata"]["name"]
        peers = {"emulator": EMULATOR, "operator": operator_pod}
        opened = {
            (peer, port): await _pod_connects(system, pod, ip, port)
            for peer, pod in peers.items()
            for port in (PUBLIC, INTERNAL)
        }
        for port in (PUBLIC, INTERNAL):
            opened["host", port] = await asyncio.to_thread(_host_connects, ip, port)
        assert opened == {
            ("emulator", PUBLIC): True,  # the peer on the public port
            ("emulator", INTERNAL): False,
            ("operator", PUBLIC): False,  # the operator's own policy: no such egress
            ("operator", INTERNAL): True,  # its ping-status reads
            ("host", PUBLIC): False,
            ("host", INTERNAL): True,  # the sandbox's host policy: metrics, as a Prometheus
        }, opened
    finally:
        await _cleanup(system, NAME)
