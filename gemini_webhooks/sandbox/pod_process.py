"""One pod's process on the sandbox's kubelet (a loopback node). Its files laid out and the
process started from a `PodPlan`, mounted files kept current, the kubelet's crash back-off,
and stopping it."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from gemini_webhooks.sandbox.podplan import PodPlan
from gemini_webhooks.sandbox.supervisor import Child, ProcessSpec, Supervisor

MAX_BACKOFF = 30.0


def restart_delay(restarts: int) -> float:
    """Seconds before restart number `restarts` (from 1): the kubelet's doubling back-off
    from one second, at most `MAX_BACKOFF`."""
    return min(MAX_BACKOFF, 2.0 ** min(restarts - 1, 5))


@dataclass
class PodProcess:
    """A pod's process and what its node remembers about it across syncs."""

    namespace: str
    name: str
    _: KW_ONLY
    plan: PodPlan | None = None
    child: Child | None = None
    ready: bool = False
    restarts: int = 0
    not_before: float = 0.0  # a crashed process is not restarted before this (monotonic)
    last_error: str = ""  # the last reason it could not start, said once

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    def exit_code(self) -> int | None:
        """The code its process exited with by itself, or None while it runs (or has none)."""
        if self.child is None or self.child.running:
            return None
        return self.child.process.returncode

    def backing_off(self) -> bool:
        return time.monotonic() < self.not_before

    def forget_exited(self, supervisor: Supervisor) -> None:
        """Drop a process that exited by itself."""
        if self.child is not None:
            supervisor.forget(self.child)
        self.child = None
        self.ready = False

    def back_off(self, supervisor: Supervisor) -> float:
        """Drop a crashed process and count a restart; the delay before it may start again."""
        self.forget_exited(supervisor)
        self.restarts += 1
        delay = restart_delay(self.restarts)
        self.not_before = time.monotonic() + delay
        return delay

    async def start(self, supervisor: Supervisor, pod_dir: Path, plan: PodPlan) -> None:
        """Lay out the pod's directory afresh (its volumes' files) and start its process."""
        lay_out(pod_dir, plan)
        spec = ProcessSpec(
            name=f"pod-{self.namespace}-{self.name}", argv=plan.argv, env=plan.env, cwd=plan.cwd
        )
        self.child = await supervisor.start(spec)
        self.plan = plan
        self.ready = False

    def refresh_files(self, plan: PodPlan) -> None:
        """Rewrite the mounted files whose content changed, as a kubelet updates volumes."""
        previous = self.plan.files if self.plan is not None else {}
        for path, content in plan.files.items():
            if previous.get(path) != content:
                write_atomically(path, content)
        self.plan = plan

    async def stop(self, supervisor: Supervisor) -> None:
        if self.child is not None:
            await supervisor.stop(self.child)
        self.child = None
        self.ready = False


def lay_out(pod_dir: Path, plan: PodPlan) -> None:
    """The pod's directory as a fresh start finds it: only what its plan writes."""
    if pod_dir.exists():
        shutil.rmtree(pod_dir)
    for directory in plan.dirs:
        directory.mkdir(parents=True, exist_ok=True)
    pod_dir.mkdir(parents=True, exist_ok=True)
    for path, content in plan.files.items():
        write_atomically(path, content)


def write_atomically(path: Path, content: bytes) -> None:
    """A reader sees the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)
