"""`bench/operator/bench_operator.py --kube node`: what it installs the chart with, and how it
knows the real node's lock is already its own. (The run itself is the bench's.)"""

from __future__ import annotations

import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import yaml

from bench.operator.pod import POD_NAMESPACE, chart_values
from gemini_webhooks.controlplane.nodeconfig import NODE_NETWORK
from tests.chart.rendering import CHART_DIR, ROOT, find, manifests

PROXY_PORT = 41234
DEFAULTS = yaml.safe_load((CHART_DIR / "values.yaml").read_text())


def test_the_bench_values_keep_the_chart_default_limit_and_open_the_way_to_the_host() -> None:
    objects = manifests(chart_values(PROXY_PORT, Namespace(drift=20.0)))
    (deployment,) = find(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == DEFAULTS["resources"]
    assert container["resources"]["limits"]["memory"] == "384Mi"
    assert {f"--namespace={POD_NAMESPACE}", "--drift-interval=20", "--api-rate=1000"} <= set(
        container["args"]
    )
    (policy,) = find(objects, "NetworkPolicy")
    host = {"ipBlock": {"cidr": f"{NODE_NETWORK.host_ip}/32"}}
    egress = policy["spec"]["egress"]
    assert {"to": [host], "ports": [{"protocol": "TCP", "port": PROXY_PORT}]} in egress
    (metrics,) = [r for r in policy["spec"]["ingress"] if r.get("from")]
    assert host in metrics["from"]


def _held(*wrapper: str, lock: Path) -> str:
    """What `lock_held_by_a_parent` says in a Python started under `wrapper`."""
    code = f"from bench.operator.pod import lock_held_by_a_parent as h; print(h({str(lock)!r}))"
    result = subprocess.run(
        [*wrapper, sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_the_lock_counts_as_held_only_under_flock_of_that_very_file(tmp_path: Path) -> None:
    lock = tmp_path / "real-node.lock"
    assert _held("flock", str(lock), lock=lock) == "True"
    assert _held("flock", str(tmp_path / "another.lock"), lock=lock) == "False"
    assert _held(lock=lock) == "False"
