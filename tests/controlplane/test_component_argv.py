"""The controller manager's and the scheduler's command lines: each with its own kubeconfig
and serving certificate, on loopback, without leader election."""

from __future__ import annotations

from pathlib import Path

from gemini_webhooks.controlplane.cluster import (
    Layout,
    Ports,
    controller_manager_argv,
    scheduler_argv,
)

ROOT = Path("/state")
PORTS = Ports(etcd_client=1, etcd_peer=2, apiserver=3, controller_manager=4, scheduler=5)


def _serving(component: str, port: int) -> list[str]:
    kubeconfig = Layout(ROOT).kubeconfig(component)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file=/state/pki/{component}-serving.crt",
        f"--tls-private-key-file=/state/pki/{component}-serving.key",
        "--leader-elect=false",
    ]


def test_the_scheduler_serves_on_its_port_with_its_own_credentials() -> None:
    argv = scheduler_argv(Path("/bin/kube-scheduler"), Layout(ROOT), PORTS)
    assert argv == ["/bin/kube-scheduler", *_serving("scheduler", 5), "--profiling=false", "--v=0"]


def test_the_controller_manager_serves_on_its_port_and_signs_service_account_tokens() -> None:
    argv = controller_manager_argv(Path("/bin/kcm"), Layout(ROOT), PORTS)
    serving = _serving("controller-manager", 4)
    assert argv[: 1 + len(serving)] == ["/bin/kcm", *serving]
    assert "--service-account-private-key-file=/state/pki/service-account.key" in argv
    assert "--use-service-account-credentials=true" in argv
    assert argv[-2:] == ["--profiling=false", "--v=0"]
