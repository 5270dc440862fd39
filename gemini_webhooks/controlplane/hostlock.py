"""One real node per machine: an exclusive lock on a fixed host path, held for the node's
life by the process that runs it.

A real node uses names only one node can have at a time (its veth pair, the `kubepods`
cgroups, /var/lib/kubelet, /run/containerd…), and `up` clears a previous node's leftovers
by those names: a second node would tear the first one down from under it. So `up` takes
this lock first, and refuses with the holder's pid and directory while another node lives.
The kernel drops the lock when its holder dies, however it dies, so a killed node's
leftovers never block the next `up`, which then clears them.

`HostState` is the machine's record of what `up` found before it changed anything (the
sysctls the kubelet sets, the fixed host paths), kept beside the lock, so that whichever
`up` or `down` comes next puts it back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from gemini_webhooks.controlplane import nodeconfig
from gemini_webhooks.sandbox.supervisor import ChildFailedError


class HostBusyError(ChildFailedError):
    """Another living process holds the machine's real node."""


@dataclass
class HostLock:
    """The lock at `path`, once `acquire`d, until `release` (or the process ends)."""

    path: Path
    _fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, owner: str) -> None:
        """Take the lock without waiting, and write who holds it (`owner`, with our pid);
        HostBusyError naming the holder when a living process has it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                os.close(fd)
                raise HostBusyError(
                    f"another real node runs on this machine ({holder or 'holder unknown'}; "
                    f"lock {self.path}): one node per machine, stop it first"
                ) from None
            # The file may have been unlinked by a holder releasing it between our open and
            # our lock: then the lock is on a name nobody else will find; take it again.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {owner}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the file and drop the lock (unlinked first, while still held, so that no
        one locks the name in between)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(fd)


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value + "\n")


@dataclass
class HostState:
    """What `up` found before it changed anything, so that `down` can put it back, and the
    node directory that changed it (whose mounts a killed node left)."""

    sysctls: dict[str, str]
    existing_paths: list[str]
    root: str

    @classmethod
    def record(cls, root: Path) -> HostState:
        sysctls = {n: v for n in nodeconfig.KUBELET_SYSCTLS if (v := read_sysctl(n)) is not None}
        existing = [str(p) for p in nodeconfig.FIXED_HOST_PATHS if p.exists()]
        return cls(sysctls, existing, str(root))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> HostState | None:
        try:
            data = json.loads(path.read_text())
            return cls(dict(data["sysctls"]), list(data["existing_paths"]), str(data["root"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
