"""Test-only fault injection: crash the operator process at one step boundary.

`GWO_TEST_CRASHPOINT=<step>` (one of `reconciler.STEPS`, e.g. `rotate.called`) arms it:
when a reconciliation reaches that boundary, the process writes
`GWO_TEST_CRASHPOINT reached <step>` to stderr and sends itself SIGKILL — a real crash,
no `finally` block, no kopf shutdown, nothing flushed. Only tests set the variable
(`tests/operator/test_crash_injection.py`). Unset or empty, nothing is installed: the
reconciler keeps its no-op step hook, so production pays one environment lookup at
start-up.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping

from gemini_webhook_operator.reconciler import STEPS, StepHook

ENV = "GWO_TEST_CRASHPOINT"
MARKER = f"{ENV} reached"

log = logging.getLogger(__name__)


class CrashPointError(ValueError):
    """GWO_TEST_CRASHPOINT names no step boundary."""


def crash_point(environ: Mapping[str, str]) -> str | None:
    """The step to crash at, None when unset; an unknown step is an error (a typo would
    otherwise never crash, and the test would wait for nothing)."""
    step = environ.get(ENV, "").strip()
    if not step:
        return None
    if step not in STEPS:
        raise CrashPointError(f"{ENV}={step!r} is not a step boundary; one of: {', '.join(STEPS)}")
    return step


def _crash(step: str) -> None:
    os.write(2, f"{MARKER} {step}\n".encode())  # unbuffered: the only thing that gets out
    os.kill(os.getpid(), signal.SIGKILL)


def hook_from_environment(environ: Mapping[str, str]) -> StepHook | None:
    """The step hook that crashes at GWO_TEST_CRASHPOINT, or None when it is unset."""
    target = crash_point(environ)
    if target is None:
        return None
    log.warning("test-only fault injection armed: the process kills itself at %s", target)

    async def hook(step: str) -> None:
        if step == target:
            _crash(step)

    return hook
