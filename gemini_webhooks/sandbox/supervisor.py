"""Run child processes the way a careful init system would, on a small scale.

Every child starts in its own session (so its own process group): a Ctrl-C in the terminal
reaches only the sandbox, which then stops the children itself, newest first, with SIGTERM
to the whole group, then SIGKILL after a grace period. On Linux each child also gets
`PR_SET_PDEATHSIG`, so even a sandbox killed with SIGKILL does not leave its children
running. Output goes to one log file per child; a child that dies while we wait for it to
become ready is reported with the end of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp

Progress = Callable[[str], None]
ReadinessCheck = Callable[[], Awaitable[bool]]

DEFAULT_STOP_GRACE = 10.0
_PR_SET_PDEATHSIG = 1


class ChildFailedError(RuntimeError):
    """A child exited, or did not become ready in time. The message says which and why."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def http_ready(url: str, *, timeout: float = 2.0) -> ReadinessCheck:
    """A readiness check: GET `url` answers 2xx."""

    async def check() -> bool:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                session.get(url) as response,
            ):
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    return check


def file_ready(path: Path) -> ReadinessCheck:
    """A readiness check: `path` exists and is not empty."""

    async def check() -> bool:
        try:
            return os.stat(path).st_size > 0
        except OSError:
            return False

    return check


@dataclass
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # None: inherit ours
    cwd: Path | None = None
    ready: ReadinessCheck | None = None
    ready_what: str = ""  # shown in progress lines: what we are waiting for


@dataclass
class Child:
    spec: ProcessSpec
    process: asyncio.subprocess.Process
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_alive(pgid: int) -> bool:
    """Does any process of group `pgid` still exist?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def stop_child(child: Child, *, grace: float = DEFAULT_STOP_GRACE) -> int | None:
    """SIGTERM the child's process group, SIGKILL it after `grace`; reap the child."""
    pgid = child.pid
    if child.running:
        _signal_group(pgid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await child.process.wait()
        except TimeoutError:
            _signal_group(pgid, signal.SIGKILL)
            await child.process.wait()
    # The leader is gone; anything it started in its group goes with it.
    if group_alive(pgid):
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        # Nothing signals the death of a process we did not fork: poll.
        while group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
    return child.process.returncode


class Supervisor:
    """Starts children, waits until each is ready, and stops all of them on exit."""

    def __init__(
        self,
        log_dir: Path,
        *,
        progress: Progress | None = None,
        stop_grace: float = DEFAULT_STOP_GRACE,
    ) -> None:
        self.log_dir = log_dir
        self.progress: Progress = progress or (lambda _line: None)
        self.stop_grace = stop_grace
        self.children: list[Child] = []

    async def start(self, spec: ProcessSpec, *, ready_timeout: float = 60.0) -> Child:
        """Start `spec` and wait until its readiness check passes (if it has one)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        env = dict(os.environ if spec.env is None else spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(spec=spec, process=process, log_path=log_path)
        self.children.append(child)
        self.progress(f"started {spec.name} (pid {process.pid}, log {log_path})")
        if spec.ready is not None:
            await self.wait_ready(child, within=ready_timeout)
        return child

    async def wait_ready(self, child: Child, *, within: float) -> None:
        """Poll the child's readiness check, saying every few seconds what we wait for."""
        check = child.spec.ready
        assert check is not None
        what = child.spec.ready_what or "its readiness check"
        started = time.monotonic()
        next_report = started + 2.0
        delay = 0.05
        while True:
            if not child.running:
                raise ChildFailedError(
                    f"{child.name} exited with code {child.process.returncode} before it was "
                    f"ready; the end of its log ({child.log_path}):\n{child.log_tail()}"
                )
            if await check():
                self.progress(f"{child.name} is ready ({time.monotonic() - started:.1f}s)")
                return
            now = time.monotonic()
            if now - started > within:
                raise ChildFailedError(
                    f"{child.name} was not ready after {within:.0f}s (waited for {what}); "
                    f"the end of its log ({child.log_path}):\n{child.log_tail()}"
                )
            if now >= next_report:
                self.progress(f"waiting for {child.name}: {what} ({now - started:.0f}s)")
                next_report = now + 3.0
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def stop(self, child: Child) -> int | None:
        code = await stop_child(child, grace=self.stop_grace)
        if child in self.children:
            self.children.remove(child)
        self.progress(f"stopped {child.name} (exit code {code})")
        return code

    def forget(self, child: Child) -> None:
        """Drop a child that exited by itself (its process is already reaped)."""
        if child in self.children and not child.running:
            self.children.remove(child)

    def exited(self) -> list[Child]:
        """Children that exited on their own (not stopped by us)."""
        return [c for c in self.children if not c.running]

    async def aclose(self) -> None:
        """Stop every child, newest first. Safe to call twice."""
        for child in reversed(list(self.children)):
            await self.stop(child)

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded: a second Ctrl-C during shutdown must not leave children behind.
        await asyncio.shield(self.aclose())


def install_stop_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Set `stop` on SIGINT/SIGTERM; returns a function that restores the defaults."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    def restore() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return restore
