"""The supervisor starts children in their own process groups and leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gemini_webhooks.sandbox.supervisor import (
    ChildFailedError,
    ProcessSpec,
    Supervisor,
    file_ready,
    group_alive,
)

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not _alive(pid)


async def test_a_child_runs_in_its_own_process_group(tmp_path: Path) -> None:
    async with Supervisor(tmp_path) as supervisor:
        child = await supervisor.start(
            ProcessSpec("sleeper", [PY, "-c", "import time; time.sleep(60)"])
        )
        assert os.getpgid(child.pid) == child.pid
        assert os.getpgid(child.pid) != os.getpgid(0)


async def test_closing_stops_the_child_and_everything_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(p.pid))
        time.sleep(60)
        """
    )
    supervisor = Supervisor(tmp_path / "logs")
    child = await supervisor.start(
        ProcessSpec("parent", [PY, "-c", script], ready=file_ready(pidfile))
    )
    grandchild = int(pidfile.read_text())
    await supervisor.aclose()
    assert await _wait_gone(child.pid)
    assert await _wait_gone(grandchild)
    assert not group_alive(child.pid)


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready"
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"open({str(ready)!r}, 'w').write('1'); time.sleep(60)"
    )
    supervisor = Supervisor(tmp_path / "logs", stop_grace=0.5)
    child = await supervisor.start(
        ProcessSpec("stubborn", [PY, "-c", script], ready=file_ready(ready))
    )
    started = time.monotonic()
    await supervisor.aclose()
    assert child.process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


async def test_a_child_that_dies_before_it_is_ready_is_reported_with_its_log(
    tmp_path: Path,
) -> None:
    script = "import sys; print('cannot bind the port: address in use'); sys.exit(3)"
    async with Supervisor(tmp_path) as supervisor:
        with pytest.raises(ChildFailedError) as failure:
            await supervisor.start(
                ProcessSpec("broken", [PY, "-c", script], ready=file_ready(tmp_path / "never"))
            )
    message = str(failure.value)
    assert "broken exited with code 3" in message
    assert "address in use" in message


async def test_a_child_that_is_never_ready_times_out_naming_what_was_awaited(
    tmp_path: Path,
) -> None:
    progress: list[str] = []
    async with Supervisor(tmp_path, progress=progress.append) as supervisor:
        with pytest.raises(ChildFailedError, match="waited for the marker file"):
            await supervisor.start(
                ProcessSpec(
                    "slow",
                    [PY, "-c", "import time; time.sleep(60)"],
                    ready=file_ready(tmp_path / "never"),
                    ready_what="the marker file",
                ),
                ready_timeout=2.5,
            )
    assert any(line.startswith("waiting for slow: the marker file") for line in progress)
    assert not supervisor.children


_PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from gemini_webhooks.sandbox.supervisor import ProcessSpec, Supervisor, install_stop_signals

    async def main():
        stop = asyncio.Event()
        install_stop_signals(stop)
        async with Supervisor(Path(sys.argv[1])) as supervisor:
            for name in ("a", "b"):
                child = await supervisor.start(
                    ProcessSpec(name, [sys.executable, "-c", "import time; time.sleep(60)"])
                )
                print(child.pid, flush=True)
            print("up", flush=True)
            await stop.wait()
        print("clean", flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_ctrl_c_or_sigterm_stops_every_child_and_exits_cleanly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    program = await asyncio.create_subprocess_exec(
        PY, "-c", _PROGRAM, str(tmp_path), stdout=subprocess.PIPE
    )
    assert program.stdout is not None
    pids = [int(await program.stdout.readline()) for _ in range(2)]
    assert (await program.stdout.readline()).strip() == b"up"
    program.send_signal(sig)
    out, _ = await asyncio.wait_for(program.communicate(), 20)
    assert program.returncode == 0
    assert b"clean" in out
    for pid in pids:
        assert await _wait_gone(pid)


async def test_children_die_with_a_sandbox_killed_by_sigkill(tmp_path: Path) -> None:
    program = await asyncio.create_subprocess_exec(
        PY, "-c", _PROGRAM, str(tmp_path), stdout=subprocess.PIPE
    )
    assert program.stdout is not None
    pids = [int(await program.stdout.readline()) for _ in range(2)]
    await program.stdout.readline()
    program.kill()
    await program.wait()
    for pid in pids:
        assert await _wait_gone(pid)


def test_the_sandbox_refuses_to_empty_a_directory_it_did_not_make(tmp_path: Path) -> None:
    from gemini_webhooks.sandbox.system import StateDirError, prepare_state_dir

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StateDirError, match="refusing to empty it"):
        prepare_state_dir(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_sandbox_empties_its_own_state_directory_on_start(tmp_path: Path) -> None:
    from gemini_webhooks.sandbox.system import prepare_state_dir

    state = tmp_path / "state"
    prepare_state_dir(state)
    (state / "logs" / "old.log").write_text("previous run")
    prepare_state_dir(state)
    assert not (state / "logs" / "old.log").exists()
