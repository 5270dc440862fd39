"""`sandbox --kube real`'s decisions, without a node: who may run it, how the host reaches
Services, how the Pods reach the consumer on the host, the chart's values for the operator
and the sandbox's NetworkPolicy for the host. (The run itself:
tests/controlplane/test_real_node.py and GWO_KUBE=real-node tests/e2e, late_build.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gemini_webhooks.sandbox.cli import _wait_until_stopped_or_crashed
from gemini_webhooks.sandbox.node_workloads import (
    EMULATOR_LABELS,
    host_access_policy,
    operator_values,
)
from gemini_webhooks.sandbox.real_node import (
    SOCKET_PATH_MAX,
    check_socket_paths,
    consumer_endpoint_slice,
    require_root,
    service_addresses,
)
from gemini_webhooks.sandbox.supervisor import ChildFailedError
from gemini_webhooks.sandbox.system import Sandbox, SandboxOptions
from tests.chart.rendering import find, manifests


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


def _sandbox_release(**extra: Any) -> list[dict[str, Any]]:
    values = operator_values(
        "default",
        api_base_url="http://10.0.0.9:8765",
        host_ip="10.201.0.1",
        drift_interval=10.0,
        extra_args=["--receiver-http-proxy=http://10.201.0.1:3128"],
    )
    return manifests({**values, **extra})


def test_the_sandboxs_operator_is_the_charts_with_the_receivers_network_policy_on() -> None:
    (deployment,) = find(_sandbox_release(), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert container["image"].startswith("localhost/gwo-product:")
    assert container["imagePullPolicy"] == "Never"  # imported into the node, never pulled
    assert "--no-receiver-network-policy" not in args
    # The emulator, in the sandbox's namespace, is the peer on the receivers' public port.
    assert "--receiver-public-namespace=default" in args
    assert "--api-base-url=http://10.0.0.9:8765" in args
    assert "--drift-interval=10" in args
    assert args[-1] == "--receiver-http-proxy=http://10.201.0.1:3128"  # options.operator_args


def test_the_sandboxs_operator_may_reach_the_emulator_and_be_scraped_from_the_host() -> None:
    (policy,) = find(_sandbox_release(), "NetworkPolicy")
    spec = policy["spec"]
    to_emulator = {
        "to": [{"podSelector": {"matchLabels": EMULATOR_LABELS}}],
        "ports": [{"protocol": "TCP", "port": 8765}],
    }
    assert to_emulator in spec["egress"]
    (metrics,) = [rule for rule in spec["ingress"] if rule.get("from")]
    assert {"ipBlock": {"cidr": "10.201.0.1/32"}} in metrics["from"]


def test_the_hosts_policy_opens_the_receivers_internal_port_and_the_consumer_only() -> None:
    policy = host_access_policy("default", "10.201.0.1", 4321)
    host = [{"ipBlock": {"cidr": "10.201.0.1/32"}}]
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "gemini-webhook-receiver"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": host, "ports": [{"protocol": "TCP", "port": 9090}]}],
        "egress": [{"to": host, "ports": [{"protocol": "TCP", "port": 4321}]}],
    }


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
