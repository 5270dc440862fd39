"""The GitOps tools' own health code, built here from their Go modules and run on our
resources: kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status`, what Flux and kstatus-based
tools compute), Flux's `healthCheckExprs` evaluator (`github.com/fluxcd/pkg/runtime/cel`)
and Argo CD's Lua health runtime (`github.com/argoproj/argo-cd/v3/util/lua`).

Each is a tiny Go program under `modules/<name>/` (`main.go`, and the `go.mod`/`go.sum`
pinning the library), built as the control plane's binaries are
(`gemini_webhooks.controlplane.build`: through the Go module proxy, cached by a key over
everything the build reads, a second build costs nothing):

    python -m tests.gitops.tools build     # what scripts/test runs before pytest
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemini_webhooks.controlplane import build

MODULES = Path(__file__).resolve().parent / "modules"


@dataclass(frozen=True)
class Tool(build.Component):
    """A Go program of ours built like a control-plane component (whose cache key covers
    a wrapper's own Go sources, this `main.go`)."""

    @property
    def module_dir(self) -> Path:
        return MODULES / self.name


KSTATUS = Tool(
    "kstatus",
    "cli-utils-v0.37.2",
    {"kstatus": "gemini-webhook-operator/gitops/kstatus"},
)
ARGOCD_HEALTH = Tool(
    "argocd-health",
    "argo-cd-v3.5.8",
    {"argocd-health": "gemini-webhook-operator/gitops/argocd-health"},
)
TOOLS = (KSTATUS, ARGOCD_HEALTH)


_built: dict[str, Path] = {}


def progress(line: str) -> None:
    print(f"[gitops-tools] {line}", file=sys.stderr, flush=True)


def binary(tool: Tool) -> Path:
    """The tool's binary, built unless cached (progress on stderr)."""
    if tool.name not in _built:
        directory = build.build(tool, progress)
        _built[tool.name] = directory / next(iter(tool.commands))
    return _built[tool.name]


def _run(argv: list[str], resource: Mapping[str, Any]) -> dict[str, str]:
    result = subprocess.run(
        argv, input=json.dumps(resource), capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{Path(argv[0]).name} failed: {result.stderr.strip()}")
    answer: dict[str, str] = json.loads(result.stdout)
    return answer


def kstatus(resource: Mapping[str, Any]) -> dict[str, str]:
    """kstatus's `status.Compute`: {"status": Current|InProgress|Failed|..., "message"}."""
    return _run([str(binary(KSTATUS))], resource)


def flux(expressions: Path, resource: Mapping[str, Any]) -> dict[str, str]:
    """Flux's evaluation of one `healthCheckExprs` entry (a JSON file of current,
    inProgress, failed): {"status": ..., "message": ...}."""
    return _run([str(binary(KSTATUS)), "flux", str(expressions)], resource)


def argocd(health_lua: Path, resource: Mapping[str, Any]) -> dict[str, str]:
    """Argo CD's verdict of `health_lua` on the resource: {"status": Healthy|..., "message"}."""
    return _run([str(binary(ARGOCD_HEALTH)), str(health_lua)], resource)


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print("usage: python -m tests.gitops.tools build", file=sys.stderr)
        return 2
    for tool in TOOLS:
        build.build(tool, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
