"""One real node per machine (`hostlock`): a second holder is refused while the first
lives, naming it; the lock is free again the moment its holder dies, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gemini_webhooks.controlplane.hostlock import HostBusyError, HostLock

HOLD = """
import sys, time
from pathlib import Path
from gemini_webhooks.controlplane.hostlock import HostLock
HostLock(Path(sys.argv[1])).acquire("real node /somewhere")
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_holder_is_refused_naming_the_first_until_it_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "run" / "node.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        second = HostLock(path)
        with pytest.raises(HostBusyError) as refused:
            second.acquire("real node /elsewhere")
        assert f"pid {holder.pid}, real node /somewhere" in str(refused.value)
        assert not second.held
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    # Its holder died without releasing it: the lock is free, its file says who has it now.
    second.acquire("real node /elsewhere")
    assert second.held
    assert path.read_text().startswith(f"pid {os.getpid()}, real node /elsewhere")
    second.acquire("again")  # held already: nothing to do
    second.release()
    assert not path.exists() and not second.held
    second.release()  # released already: nothing to do
