"""`gemini-webhooks kube-sandbox`: serves until told to stop, and writes a kubeconfig."""

from __future__ import annotations

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
