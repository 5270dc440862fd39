"""What a scenario's steps are made of: a step that did not hold (`StepFailed`), polling
until something holds, and the real kubectl echoed like a shell."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemini_webhooks.sandbox.kubeapi import run_kubectl


class StepFailed(AssertionError):
    """A step of the scenario did not hold; the message says what was seen instead."""


async def poll(
    check: Callable[[], Awaitable[Any]], *, within: float, what: str, every: float = 0.2
) -> Any:
    """Call `check` until it returns something truthy; StepFailed naming `what` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if loop.time() > deadline:
            raise StepFailed(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class Kubectl:
    """The real kubectl, with the sandbox's kubeconfig; each call is echoed like a shell."""

    kubeconfig: Path
    echo: Callable[[str], None] | None = None
    timeout: float = 120.0

    async def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        if self.echo is not None:
            self.echo("$ kubectl " + " ".join(args))
        code, out, _ = await run_kubectl(
            args,
            kubeconfig=str(self.kubeconfig),
            stdin=stdin.encode() if stdin is not None else None,
            within=self.timeout,
            merge_stderr=True,
        )
        text = out.decode(errors="replace").rstrip()
        if self.echo is not None and text:
            for line in text.splitlines():
                self.echo("  " + line)
        if check and code != 0:
            raise StepFailed(f"kubectl {' '.join(args)} exited {code}: {text}")
        return text


def describe_failure(error: BaseException) -> str:
    if isinstance(error, StepFailed):
        return str(error)
    return f"{type(error).__name__}: {error}"
