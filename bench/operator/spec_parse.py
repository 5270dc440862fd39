"""Reading a GeminiWebhook's spec (issue 25: one pydantic model for the whole spec): µs per
`model.parse` of 1,000 resources, against the hand-written field walker it replaced.

    .venv/bin/python bench/operator/spec_parse.py [--resources 1000] [--rounds 7]
        [--baseline 962a1b6]

The operator parses every resource once per reconcile and once per health tick. The
baseline is the walker's `operator/gemini_webhook_operator/model.py` as of the git revision
`--baseline` (the last one with the walker), loaded from the repository's history beside
today's. Both read the same resources — a mix of plain ones, schedules and intervals,
adoptions, deployed and exposed receivers — and must read them alike (checked first: the
figures of a parser that reads differently would mean nothing). Printed: the median over
`--rounds` rounds of µs per parse, for each, and their ratio; run on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from gemini_webhook_operator import model  # noqa: E402
from gemini_webhooks.contracts import crd  # noqa: E402

MODEL_PATH = "operator/gemini_webhook_operator/model.py"
DEFAULT_BASELINE = "962a1b6"  # main before the spec model: the walker's last revision


def resource(index: int) -> dict[str, Any]:
    """One of a few shapes of GeminiWebhook, as the API server hands them out (defaults
    applied)."""
    spec: dict[str, Any] = {
        "url": f"https://hooks.example.com/{index}",
        "events": ["batch.succeeded", "batch.failed", "video.generated"][: 1 + index % 3],
        "state": "Enabled" if index % 5 else "Disabled",
        "apiKeySecretRef": {"name": "gemini-api-key", "key": "api-key"},
        "rotation": {"revocation": "Grace", "paused": False},
        "deletionPolicy": "Delete",
    }
    shape = index % 4
    if shape == 1:
        spec["rotation"]["schedule"] = "0 3 1 * *"
        spec["displayName"] = f"Orders {index}"
    elif shape == 2:
        spec["rotation"]["interval"] = "720h"
        spec["webhookId"] = f"wh-{index}"
        spec["apiBaseUrl"] = "http://emulator.gemini.svc:8000"
    elif shape == 3:
        del spec["url"]
        spec["receiver"] = {
            "enabled": True,
            "replicas": 2,
            "routes": [
                {
                    "name": "batches",
                    "match": {"types": ["batch.*"]},
                    "targets": [{"service": {"name": "worker", "port": 8080}}],
                }
            ],
            "defaultRoute": {"targets": [{"url": "http://sink.team-a.svc/"}]},
            "expose": {
                "ingress": {
                    "host": f"hooks-{index}.example.com",
                    "path": "/gemini",
                    "tls": {"issuer": {"name": "letsencrypt"}},
                }
            },
        }
        spec["healthCheck"] = {"enabled": True, "interval": "10m"}
    annotations = {crd.ANNOTATION_ROTATE: "now"} if index % 7 == 0 else {}
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {
            "name": f"webhook-{index}",
            "namespace": "team-a",
            "uid": f"6f1d2a3b-0000-4000-8000-{index:012d}",
            "generation": 1,
            "annotations": annotations,
        },
        "spec": spec,
    }


def walker(revision: str) -> types.ModuleType:
    """The walker's model.py as of `revision`, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{MODEL_PATH}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType(f"walker_model_{revision}")
    module.__dict__["__name__"] = module.__name__
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:{MODEL_PATH}", "exec"), module.__dict__)
    return module


def per_parse_us(parse: Callable[[dict[str, Any]], Any], bodies: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for body in bodies:
        parse(body)
    return (time.perf_counter() - started) / len(bodies) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision")
    args = parser.parse_args()
    bodies = [resource(index) for index in range(args.resources)]
    baseline = walker(args.baseline)

    for body in bodies:  # the same reading, field by field
        ours, theirs = model.parse(body), baseline.parse(body)
        if dataclasses.asdict(ours) != dataclasses.asdict(theirs):
            print(f"{body['metadata']['name']}: read differently", file=sys.stderr)
            return 1

    timings: dict[str, list[float]] = {"walker": [], "model": []}
    for _ in range(args.rounds):
        timings["walker"].append(per_parse_us(baseline.parse, bodies))
        timings["model"].append(per_parse_us(model.parse, bodies))
    walker_us = statistics.median(timings["walker"])
    model_us = statistics.median(timings["model"])
    print(f"resources: {args.resources}, rounds: {args.rounds} (median shown)")
    print(f"baseline walker ({args.baseline}), µs per parse : {walker_us:8.1f}")
    print(f"pydantic spec model, µs per parse        : {model_us:8.1f}")
    print(f"ratio model / walker                     : {model_us / walker_us:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
