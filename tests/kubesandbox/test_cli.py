"""`gemini-webhooks kube-sandbox`: serves until told to stop, and writes a kubeconfig."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures.kube import KUBECTL

pytestmark = pytest.mark.real_component


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gemini_webhooks", "kube-sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_command_serves_the_api_and_writes_a_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    process = _start("--port", "0", "--kubeconfig", str(kubeconfig))
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("kube sandbox serving on http://127.0.0.1:")
        deadline = time.monotonic() + 10
        while not kubeconfig.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == line.split()[-1]
        assert kubeconfig.stat().st_mode & 0o077 == 0
        env = {
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(tmp_path / "cache"),
            "PATH": "/usr/bin:/bin",
        }
        out = subprocess.run(
            [KUBECTL, "get", "ns", "-o", "name"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert "namespace/kube-system" in out
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0


def test_an_out_of_range_port_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    process = _start("--port", "70000", "--kubeconfig", str(tmp_path / "config"))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "--port" in err


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = _start("--port", str(port), "--kubeconfig", str(tmp_path / "config"))
        _, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "cannot serve" in err


def test_without_kubernetes_schemas_kubectl_still_applies_lists_and_merges_built_ins(
    tmp_path: Path,
) -> None:
    # Installed without the dev extra (no `kubernetes-validate`), built-ins have no schema
    # of Kubernetes' own: kubectl must neither validate a List's items against a stand-in
    # nor compute strategic merges from one, but use its compiled-in types, quietly.
    kubeconfig = tmp_path / "config"
    hide = "import sys; sys.modules['kubernetes_validate'] = None; "
    run = "from gemini_webhooks.cli import main; sys.argv[0] = 'gemini-webhooks'; main()"
    process = subprocess.Popen(
        [sys.executable, "-c", hide + run, "kube-sandbox", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("kube sandbox serving on")
        deadline = time.monotonic() + 10
        while not kubeconfig.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        env = {"KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache")}

        def apply(env_vars: list[dict[str, str]]) -> subprocess.CompletedProcess[str]:
            manifest = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d"},
                "spec": {
                    "selector": {"matchLabels": {"app": "d"}},
                    "template": {
                        "metadata": {"labels": {"app": "d"}},
                        "spec": {"containers": [{"name": "a", "image": "i", "env": env_vars}]},
                    },
                },
            }
            return subprocess.run(
                [KUBECTL, "apply", "-f", "-"],
                input=yaml.safe_dump(manifest),
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )

        items = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
        ]
        listed = subprocess.run(
            [KUBECTL, "apply", "-f", "-"],
            input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0 and "configmap/c created" in listed.stdout, listed.stderr
        apply([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        second = apply([{"name": "B", "value": "3"}])
        assert "warning" not in second.stderr.lower(), second.stderr
        out = subprocess.run(
            [KUBECTL, "get", "deployment", "d", "-o", "jsonpath={.spec.template.spec.containers}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        (container,) = json.loads(out)
        assert container["env"] == [{"name": "B", "value": "3"}]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
