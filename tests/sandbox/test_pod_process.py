"""A pod's process on a loopback node, as the sandbox's kubelet runs it: a fresh directory
per start, mounted files kept current, the crash back-off."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gemini_webhooks.sandbox.pod_process import MAX_BACKOFF, PodProcess, restart_delay
from gemini_webhooks.sandbox.podplan import PodPlan
from gemini_webhooks.sandbox.supervisor import Supervisor


def _plan(pod_dir: Path, files: dict[str, bytes], argv: list[str] | None = None) -> PodPlan:
    return PodPlan(
        argv=argv or ["sleep", "30"],
        env={},
        files={pod_dir / name: content for name, content in files.items()},
        dirs=[pod_dir / "volumes"],
        cwd=pod_dir,
        ports=[],
        readiness=None,
    )


def test_the_back_off_doubles_from_one_second_up_to_its_bound() -> None:
    delays = [restart_delay(n) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]


async def test_a_start_lays_out_a_fresh_directory_and_a_refresh_rewrites_only_what_changed(
    tmp_path: Path,
) -> None:
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    (pod_dir / "left-over").write_text("from a previous start")
    supervisor = Supervisor(tmp_path / "logs")
    pod = PodProcess("ns", "web")
    try:
        await pod.start(supervisor, pod_dir, _plan(pod_dir, {"a": b"1", "b": b"1"}))
        assert not (pod_dir / "left-over").exists()
        assert (pod_dir / "volumes").is_dir() and (pod_dir / "a").read_bytes() == b"1"
        assert pod.child is not None and pod.child.running
        (pod_dir / "a").write_bytes(b"touched by hand")  # unchanged in the plan: left alone
        pod.refresh_files(_plan(pod_dir, {"a": b"1", "b": b"2"}))
        assert (pod_dir / "a").read_bytes() == b"touched by hand"
        assert (pod_dir / "b").read_bytes() == b"2"
        assert list(pod_dir.glob(".*.tmp")) == []
    finally:
        await pod.stop(supervisor)
    assert pod.child is None and not pod.ready


async def test_a_crashed_process_is_dropped_and_held_back_before_its_restart(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    pod = PodProcess("ns", "web")
    pod_dir = tmp_path / "pod"
    await pod.start(supervisor, pod_dir, _plan(pod_dir, {}, ["sh", "-c", "exit 3"]))
    assert pod.child is not None
    await asyncio.wait_for(pod.child.process.wait(), 30)
    assert pod.exit_code() == 3
    assert pod.back_off(supervisor) == 1.0
    assert (pod.child, pod.restarts, pod.ready) == (None, 1, False)
    assert pod.backing_off() and supervisor.children == []
    assert pod.exit_code() is None


def test_a_pod_is_named_by_its_namespace_and_name() -> None:
    assert PodProcess("ns", "web").label == "ns/web"
