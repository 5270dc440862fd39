"""`sandbox --kube real`'s decisions, without a node: who may run it, how the host reaches
Services, how the Pods reach the consumer on the host, the operator's environment. (The
run itself: tests/controlplane/test_real_node.py, late_build.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gemini_webhooks.sandbox.cli import _wait_until_stopped_or_crashed
from gemini_webhooks.sandbox.real_node import (
    SOCKET_PATH_MAX,
    check_socket_paths,
    consumer_endpoint_slice,
    require_root,
    service_addresses,
    without_proxy,
)
from gemini_webhooks.sandbox.supervisor import ChildFailedError
from gemini_webhooks.sandbox.system import Sandbox, SandboxOptions


def test_anyone_but_root_is_told_to_use_sudo_or_the_in_memory_sandbox() -> None:
    with pytest.raises(ChildFailedError, match=r"needs root: run `sudo scripts/sandbox --kube"):
        require_root(1000)
    require_root(0)


def _service(name: str, cluster_ip: str | None, *ports: dict[str, object]) -> dict[str, object]:
    spec: dict[str, object] = {"ports": list(ports)}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"metadata": {"name": name, "namespace": "team"}, "spec": spec}


def test_every_tcp_port_of_a_service_with_a_cluster_ip_is_reached_at_it() -> None:
    services = [
        _service("web", "10.0.0.7", {"port": 80}, {"port": 9090, "protocol": "TCP"}),
        _service("dns", "10.0.0.10", {"port": 53, "protocol": "UDP"}),
        _service("headless", "None", {"port": 80}),
        _service("pending", None, {"port": 80}),
    ]
    assert service_addresses(services) == {
        "team/web:80": "10.0.0.7:80",
        "team/web:9090": "10.0.0.7:9090",
    }


def test_the_consumers_endpoint_slice_names_the_host_address_under_the_service_port() -> None:
    slice_ = consumer_endpoint_slice("sample-consumer", "default", "http", "10.201.0.1", 4321)
    assert slice_["metadata"]["labels"] == {"kubernetes.io/service-name": "sample-consumer"}
    assert slice_["endpoints"] == [{"addresses": ["10.201.0.1"], "conditions": {"ready": True}}]
    assert slice_["ports"] == [{"name": "http", "port": 4321, "protocol": "TCP"}]


def test_the_operator_on_the_real_node_gets_no_proxy_variables() -> None:
    env = {"HTTP_PROXY": "x", "no_proxy": "y", "Https_Proxy": "z", "PATH": "/bin", "HOME": "/"}
    assert without_proxy(env) == {"PATH": "/bin", "HOME": "/"}


def test_a_node_directory_too_deep_for_containerds_sockets_is_refused_before_starting() -> None:
    fits = Path("/tmp/s-node")
    check_socket_paths(fits)
    deep = Path("/tmp") / ("d" * SOCKET_PATH_MAX) / "s-node"
    with pytest.raises(ChildFailedError, match="choose a shorter --state-dir"):
        check_socket_paths(deep)


async def test_sandbox_kube_real_without_root_stops_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    sandbox = Sandbox(SandboxOptions(state_dir=tmp_path / "s", kube="real"), progress=print)
    with pytest.raises(ChildFailedError, match="needs root"):
        await sandbox.start()
    assert sandbox.control_plane is None and not sandbox.supervisor.children
    assert not (tmp_path / "s-node").exists()


async def test_a_failed_real_node_ends_the_sandbox_with_exit_1_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = Sandbox(SandboxOptions(state_dir=tmp_path / "s", kube="real"), progress=print)
    assert sandbox.real_node is not None
    assert sandbox.real_node.failed() is None

    async def node_gives_up() -> None:
        raise ChildFailedError("kubelet exited with code 1, its 6th exit within 600s")

    task = asyncio.create_task(node_gives_up())
    await asyncio.gather(task, return_exceptions=True)
    sandbox.real_node._tasks.append(task)
    code = await asyncio.wait_for(_wait_until_stopped_or_crashed(sandbox, asyncio.Event()), 5)
    assert code == 1
    assert "the real node failed: kubelet exited with code 1" in capsys.readouterr().err
