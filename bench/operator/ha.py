"""High availability by Lease (issue 24): the figures of the partition and load runs.

    .venv/bin/python bench/operator/ha.py [--kube sandbox|real]

Runs the two scenario tests of `tests/operator/test_leader_election.py` — they are the
harness: real operator processes (`gemini-webhooks operator --leader-elect`), each with
its own recording proxy in front of the WebhookService and its own recording link to the
Kubernetes API, the emulator delivering to a recording endpoint — and prints the figures
they measure from the outside:

- partition: the leader's link to the Kubernetes API refuses every connection; its last
  write attempt after the cut, when it stopped, when the standby took over;
- load: 3 replicas, 20 resources rotating every 30 s (5 requested), deliveries flowing,
  SIGKILL of the leader: kill -> Lease taken, then taken -> GeminiWebhooks listed, first
  Secret read and first write of the new leader (from its own link and proxy); writes per
  replica, rotations and double actions, deliveries received and failing verification.

Lease timings are the tests' (8/6/1 s, client-go's proportions). A failing assertion is
reported after the figures. The machine may be shared: re-run on a quiet one.

    .venv/bin/python bench/operator/ha.py --real-node

runs `tests/chart/test_real_rollout.py` instead (root; one real node on the machine at a
time, `flock /tmp/gwo-real-node.lock`): the chart's Deployment on the real node, rolled by
`helm upgrade` under load, then its leader's container killed from the host, then stopped
(SIGSTOP for twice the Lease) and resumed, then its Pod cut from the API server (an nftables
rule in its network namespace; the emulator in reach) and healed; writes per Pod from the
API server's audit log and the emulator's calls, at the chart's Lease timings.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = "tests/operator/test_leader_election.py"
SCENARIOS = "cut_from_the_api_server or three_replicas_under_load"
REAL_NODE = "tests/chart/test_real_rollout.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kube", choices=("sandbox", "real"), default="real")
    parser.add_argument(
        "--real-node", action="store_true", help="the chart's Deployment on the real node"
    )
    args = parser.parse_args()
    env = dict(os.environ, GWO_KUBE="sandbox" if args.real_node else args.kube)
    env.pop("KUBECONFIG", None)
    paths = [str(ROOT), str(ROOT / "operator"), str(ROOT / "receiver")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
    selected = [REAL_NODE] if args.real_node else [TESTS, "-k", SCENARIOS]
    result = subprocess.run(
        [*command, *selected], cwd=ROOT, env=env, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    # pytest's progress dots may precede a line: take each from its marker on.
    marker = "HA figures"
    lines = [line for line in output.splitlines() if marker in line and not line.startswith("E ")]
    figures = [line[line.index(marker) :] for line in lines]
    for line in figures:
        print(line.replace(" | ", "\n    "))
    summary = [line for line in output.splitlines() if " passed" in line or " failed" in line]
    print(summary[-1] if summary else output[-3000:])
    if result.returncode != 0:
        failures = [line for line in output.splitlines() if line.startswith("E ")]
        print("\n".join(failures[:40]))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
