"""Rotation benchmark: a rotation under ~50 events/s with 3 receiver replicas.

Starts the sandbox system on the real node (`scripts/sandbox --kube real`'s: the 3 receiver
Pods are containers of our image, kube-proxy spreads the receiver Service's connections
over them), applies a GeminiWebhook with
`receiver.replicas: 3`, and rotates it under traffic, once with `Grace` and once with
`Immediate` revocation (`gemini_webhooks.sandbox.rotation_run`). Prints, per rotation, the
window (the new secret's creation, i.e. the operator's rotate call, to the last replica's
reload, after which it verifies with the new secret), the number of deliveries Gemini (the
emulator) retried, failed attempts by status, rejections by reason summed over the
replicas, and how many copies of each event reached the consumer.

    .venv/bin/python bench/receiver/rotation.py [--rate 50] [--replicas 3]
        [--revocation Grace,Immediate] [--state-dir DIR]

Root, as the real node needs. One real node per machine: beside the tests, run it under
`flock /tmp/gwo-real-node.lock`, as they do. The node's binaries and our images are built
on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gemini_webhooks.sandbox.demo import scenario_for  # noqa: E402
from gemini_webhooks.sandbox.rotation_run import (  # noqa: E402
    example,
    rotate_under_traffic,
    set_revocation,
    wait_replicas,
)
from gemini_webhooks.sandbox.system import Sandbox, SandboxOptions  # noqa: E402

NAME = "rotation-bench"


async def main(rate: float, replicas: int, revocations: list[str], state_dir: Path) -> int:
    log: list[str] = []
    sandbox = Sandbox(
        SandboxOptions(state_dir=state_dir, echo_consumer=False, batch_seconds=2.0, kube="real"),
        progress=log.append,
    )
    async with sandbox:
        path = state_dir / f"{NAME}.yaml"
        path.write_text(example(sandbox, NAME, revocations[0], replicas))
        scenario = scenario_for(sandbox, log.append)
        scenario.example_path = path
        scenario.name = NAME
        await scenario.apply()
        await scenario.wait_ready(within=180)
        assert sandbox.api is not None
        await wait_replicas(sandbox.api, scenario, replicas, within=180)
        print(f"{replicas} receiver replicas ready; {rate:g} events/s")
        for revocation in revocations:
            await set_revocation(scenario, revocation)
            run = await rotate_under_traffic(
                scenario, sandbox.api, revocation=revocation, replicas=replicas, rate=rate
            )
            reloads = ", ".join(f"{at:.3f}" for at in run.reloads_at.values())
            window = "n/a" if run.window_seconds is None else f"{run.window_seconds:.3f} s"
            print(
                f"{revocation:>9}: window {window} (replicas reloaded at +{reloads} s); "
                f"{run.retried} deliveries retried; {run.failed_attempts} failed attempts "
                f"{run.attempt_statuses}; rejected {run.rejected}; {run.sent} events at "
                f"{run.rate:.1f}/s, copies per event at the consumer {run.arrivals}; "
                f"accepted per replica {list(run.accepted_by.values())}"
            )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--revocation", default="Grace,Immediate")
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="gwo-rotation-")) / "state"
    sys.exit(asyncio.run(main(args.rate, args.replicas, args.revocation.split(","), state)))
