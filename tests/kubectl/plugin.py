"""Running the installed `kubectl-gemini` executable as a user would, in a subprocess."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXECUTABLE = "kubectl-gemini"


def executable() -> str:
    """The console script `pip install` made next to this Python (else on PATH)."""
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.exists():
        return str(beside)
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise AssertionError(f"{EXECUTABLE} is not installed: run scripts/bootstrap")
    return found


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err


async def run(kube: Any, *args: str, timeout: float = 120.0) -> Result:
    """`kubectl-gemini ARGS` with the cluster's kubeconfig in KUBECONFIG (as a user has it).
    Asynchronous: the operator under test runs on this event loop."""
    env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig))
    process = await asyncio.create_subprocess_exec(
        executable(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return Result(process.returncode or 0, out.decode(), err.decode())
