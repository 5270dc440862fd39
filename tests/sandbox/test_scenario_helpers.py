"""The pure parts of the tour: metric arithmetic, the summary table, kubectl-backed reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gemini_webhooks.sandbox.demo import StepResult, table
from gemini_webhooks.sandbox.kubeapi import KubectlApi
from gemini_webhooks.sandbox.metric_samples import Samples, moved, total

BEFORE: Samples = {
    ("gemini_receiver_deliveries_total", (("outcome", "accepted"), ("reason", "ok"))): 2.0,
    ("gemini_receiver_deliveries_total", (("outcome", "rejected"), ("reason", "bad"))): 1.0,
}
AFTER: Samples = {
    ("gemini_receiver_deliveries_total", (("outcome", "accepted"), ("reason", "ok"))): 7.0,
    ("gemini_receiver_deliveries_total", (("outcome", "rejected"), ("reason", "bad"))): 1.0,
    ("gemini_receiver_forwards_total", (("outcome", "ok"), ("target", "t"))): 5.0,
    ("gemini_receiver_inflight", ()): 3.0,
}


def test_total_sums_the_samples_whose_labels_match() -> None:
    assert total(AFTER, "gemini_receiver_deliveries_total") == 8.0
    assert total(AFTER, "gemini_receiver_deliveries_total", outcome="rejected") == 1.0
    assert total(AFTER, "gemini_receiver_deliveries_total", outcome="duplicate") == 0.0


def test_moved_lists_only_counters_that_grew_largest_first() -> None:
    assert moved(BEFORE, AFTER, "gemini_receiver_") == [
        ("gemini_receiver_deliveries_total{outcome=accepted,reason=ok}", 5.0),
        ("gemini_receiver_forwards_total{outcome=ok,target=t}", 5.0),
    ]


def test_the_summary_table_has_one_row_per_step() -> None:
    rendered = table(
        [StepResult("apply", "ok", "created", 0.1), StepResult("delete", "FAILED", "still", 2)]
    )
    lines = rendered.splitlines()
    assert len(lines) == 4
    assert "FAILED" in lines[3] and "still" in lines[3]


async def test_kubectl_reads_objects_and_says_none_for_missing_ones(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    exe = Path(sys.executable).parent / "gemini-webhooks"
    server = subprocess.Popen([exe, "kube-sandbox", "--kubeconfig", str(kubeconfig)])
    try:
        import asyncio

        for _ in range(300):
            if kubeconfig.exists():
                break
            await asyncio.sleep(0.05)
        api = KubectlApi(str(kubeconfig))
        namespace = await api.get("namespaces", None, "default")
        assert namespace is not None and namespace["metadata"]["name"] == "default"
        assert await api.get("deployments.apps/v1", "default", "absent") is None
    finally:
        server.terminate()
        server.wait(30)


def test_kubectl_resource_names_carry_the_group() -> None:
    assert KubectlApi.kind("deployments.apps/v1") == "deployments.apps"
    assert KubectlApi.kind("geminiwebhooks.gemini.webhooks.dev/v1alpha1") == (
        "geminiwebhooks.gemini.webhooks.dev"
    )
    assert KubectlApi.kind("secrets") == "secrets"


def test_the_sandbox_command_refuses_a_state_dir_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    exe = Path(sys.executable).parent / "gemini-webhooks"
    result = subprocess.run(
        [exe, "sandbox", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "refusing to empty it" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_ctrl_c_while_the_sandbox_starts_stops_what_was_started(tmp_path: Path) -> None:
    import os
    import re
    import signal
    import time

    exe = Path(sys.executable).parent / "gemini-webhooks"
    process = subprocess.Popen(
        [exe, "sandbox", "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    seen = ""
    for line in process.stdout:  # interrupt as soon as the first child runs
        seen += line
        if "started emulator" in line:
            break
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    seen += out
    assert process.returncode in (0, 130), seen
    assert "no processes left behind" in seen
    pids = [int(p) for p in re.findall(r"\(pid (\d+),", seen)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, seen


def _kubectl_children() -> list[int]:
    import os

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat.split("(", 1)[1].rsplit(") ", 1)
        state, ppid = rest.split()[0], int(rest.split()[1])
        if comm == "kubectl" and ppid == os.getpid() and state != "Z":
            found.append(int(entry.name))
    return found


async def test_a_kubectl_cancelled_or_timed_out_is_killed_not_left_running(tmp_path: Path) -> None:
    """Ctrl-C during the demo's `kubectl wait` must not leave a kubectl behind."""
    import asyncio

    import pytest

    from gemini_webhooks.sandbox.steps import Kubectl

    kubeconfig = tmp_path / "kubeconfig"
    exe = Path(sys.executable).parent / "gemini-webhooks"
    server = subprocess.Popen([exe, "kube-sandbox", "--kubeconfig", str(kubeconfig)])
    try:
        for _ in range(300):
            if kubeconfig.exists():
                break
            await asyncio.sleep(0.05)
        kubectl = Kubectl(kubeconfig)
        watch = asyncio.create_task(kubectl("get", "namespaces", "--watch"))  # never ends
        for _ in range(100):
            if _kubectl_children():
                break
            await asyncio.sleep(0.05)
        assert _kubectl_children()
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
        assert _kubectl_children() == []

        kubectl.timeout = 1.0
        with pytest.raises(TimeoutError):
            await kubectl("get", "namespaces", "--watch")
        assert _kubectl_children() == []
    finally:
        server.terminate()
        server.wait(30)
