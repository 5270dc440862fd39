"""`gemini-webhooks sandbox --demo`: the tour, step by step, then a summary table.

Every step must hold for the demo to exit 0. After a failed step the rest are skipped,
except the last (delete), which always runs so that nothing is left registered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gemini_webhooks.emulator.control import ControlClient
from gemini_webhooks.sandbox.scenario import Scenario
from gemini_webhooks.sandbox.steps import Kubectl, describe_failure
from gemini_webhooks.sandbox.system import Sandbox

STEP_TIMEOUT = 180.0


@dataclass
class StepResult:
    name: str
    status: str  # "ok", "FAILED", "skipped"
    detail: str
    seconds: float


def scenario_for(sandbox: Sandbox, say: Callable[[str], None]) -> Scenario:
    assert sandbox.api is not None
    return Scenario(
        api=sandbox.api,
        kubectl=Kubectl(sandbox.kubeconfig, echo=say),
        namespace=sandbox.options.namespace,
        gemini_base_url=sandbox.emulator_url,
        api_key=sandbox.options.api_key,
        example_path=sandbox.example_path(),
        consumer=sandbox.consumer,
        control=ControlClient(sandbox.emulator_url, api_key=sandbox.options.api_key),
        endpoints=sandbox.endpoints,
        operator_metrics_url=sandbox.operator_metrics_url,
        say=say,
    )


def table(results: list[StepResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"  {'step':<{width}}  {'result':<7}  {'time':>6}  detail"]
    lines.append("  " + "-" * (width + 60))
    for r in results:
        lines.append(f"  {r.name:<{width}}  {r.status:<7}  {r.seconds:5.1f}s  {r.detail}")
    return "\n".join(lines)


async def run_demo(sandbox: Sandbox, *, out: Callable[[str], None] | None = None) -> bool:
    say = out or (lambda line: print(line, flush=True))
    scenario = scenario_for(sandbox, say)
    steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("apply the example", scenario.apply),
        ("wait for Ready", scenario.wait_ready),
        ("fire every event type (static)", scenario.static_events),
        ("fire every event type (dynamic)", scenario.dynamic_events),
        ("rotate the secret under traffic", scenario.rotate_under_traffic),
        ("metrics that moved", scenario.metrics_moved),
        ("delete: remote webhook gone", scenario.delete),
    ]
    results: list[StepResult] = []
    failed = False
    for index, (name, step) in enumerate(steps, 1):
        last = index == len(steps)
        if failed and not (last and scenario.webhook_id):
            results.append(StepResult(name, "skipped", "an earlier step failed", 0.0))
            continue
        say(f"\n== {index}/{len(steps)} {name}")
        started = time.monotonic()
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                detail = await step()
            status = "ok"
            say(f"   ok: {detail}")
        except Exception as error:
            detail = describe_failure(error)
            status = "FAILED"
            failed = True
            say(f"   FAILED: {detail}")
        results.append(StepResult(name, status, detail, time.monotonic() - started))
    say("\n" + table(results))
    held = all(r.status == "ok" for r in results)
    say("\nEvery step held." if held else f"\nSome steps did not hold; logs in {sandbox.state_dir}")
    return held
