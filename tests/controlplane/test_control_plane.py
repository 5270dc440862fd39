"""The control plane alone, started here as `scripts/control-plane up --node none` starts
it: the real kube-apiserver answers with RBAC on, and stopping it leaves no process. The
node is tests/controlplane/test_real_node.py's."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gemini_webhooks.controlplane.threaded import ThreadedControlPlane
from gemini_webhooks.sandbox.supervisor import group_alive
from tests.fixtures.control_plane import kubectl

pytestmark = [pytest.mark.real_component, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedControlPlane]:
    running = ThreadedControlPlane(tmp_path_factory.mktemp("cp") / "state")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_the_api_server_is_kubernetes_1_37_2_with_rbac(plane: ThreadedControlPlane) -> None:
    version = json.loads(kubectl(plane.admin_kubeconfig, "get", "--raw", "/version"))
    assert version["gitVersion"] == "v1.37.2"
    assert kubectl(plane.admin_kubeconfig, "auth", "can-i", "--list").strip()
    # A client without credentials is system:anonymous, and refused.
    assert plane.plane is not None
    context = ssl.create_default_context(cafile=str(plane.plane.layout.ca))
    url = f"{plane.server}/api/v1/namespaces/default/secrets"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=context, timeout=10)
    assert refused.value.code == 403
    assert "system:anonymous" in refused.value.read().decode()


def test_stopping_leaves_no_process(tmp_path: Path) -> None:
    running = ThreadedControlPlane(tmp_path / "state")
    running.start()
    assert running.plane is not None and running.plane.supervisor is not None
    groups = [c.pid for c in running.plane.supervisor.children]
    assert len(groups) == 4
    running.stop()
    assert not [g for g in groups if group_alive(g)]
    assert os.path.exists(tmp_path / "state" / "logs" / "kube-apiserver.log")


def test_up_without_root_refuses_the_real_node_and_says_what_to_do() -> None:
    from gemini_webhooks.controlplane import cli

    assert cli.refusal("real", 0) is None
    assert cli.refusal("none", 1000) is None
    message = cli.refusal("real", 1000)
    assert message is not None
    assert "sudo scripts/control-plane up" in message and "--node none" in message


@pytest.mark.late_build  # `up` builds (finds cached) the node's binaries first
def test_up_without_our_images_says_so_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gemini_webhooks.controlplane import cli

    assert cli.main(["up", "--images", str(tmp_path), "--dir", str(tmp_path / "cp")]) == 1
    out = capsys.readouterr().out
    assert "[control-plane] failed: no image archive" in out
    assert not (tmp_path / "cp").exists()
    assert not (tmp_path / "cp-node").exists()
