"""`scripts/control-plane up` stopped by a signal: a second Ctrl-C or `down` while it tears
down does not cut the teardown short (a terminal's Ctrl-C reaches the whole process group,
so `up` can be sent one signal by the terminal and another by whoever runs it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chart.rendering import ROOT

pytestmark = [pytest.mark.real_component, pytest.mark.timeout(240)]


def _wait_for_line(
    output: Path, text: str, process: subprocess.Popen[bytes], within: float
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in output.read_text():
            return
        assert process.poll() is None, output.read_text()
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} within {within:.0f}s:\n{output.read_text()}")


def test_a_second_signal_during_teardown_does_not_cut_it_short(tmp_path: Path) -> None:
    directory, output = tmp_path / "control-plane", tmp_path / "up.log"
    with output.open("wb") as log:
        up = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "gemini_webhooks.controlplane",
                "up",
                "--node",
                "none",
                "--dir",
                str(directory),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_line(output, "stops everything", up, 180)
        up.send_signal(signal.SIGTERM)  # `down`
        # The teardown has begun (it stops the components one by one, the API server last).
        _wait_for_line(output, "stopped kube-scheduler", up, 60)
        up.send_signal(signal.SIGINT)  # and Ctrl-C
        assert up.wait(timeout=120) == 0, output.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    said = output.read_text()
    assert said.rstrip().endswith("stopped"), said
    for component in ("kube-apiserver", "etcd"):
        assert f"stopped {component}" in said, said
    assert not (directory / "up.pid").exists()
    left = subprocess.run(["pgrep", "-f", str(directory)], capture_output=True, text=True)
    assert left.stdout == ""
