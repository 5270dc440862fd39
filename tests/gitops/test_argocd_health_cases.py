"""The Argo CD health check we ship, run by Argo CD's own Lua health runtime on each case of
its `health_test.yaml` — the check Argo CD's repository runs on every
`resource_customizations/<group>/<Kind>/` it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gemini_webhooks.contracts import crd
from tests.gitops import tools

# The Go programs are built in the background during scripts/test's sandbox phase.
pytestmark = [pytest.mark.real_component, pytest.mark.late_build]

ROOT = Path(__file__).resolve().parents[2]
CUSTOMIZATION = ROOT / "gitops/argocd/resource_customizations/gemini.webhooks.dev/GeminiWebhook"
CASES: list[dict[str, Any]] = yaml.safe_load((CUSTOMIZATION / "health_test.yaml").read_text())[
    "tests"
]


def test_the_cases_cover_healthy_progressing_and_degraded() -> None:
    statuses = {case["healthStatus"]["status"] for case in CASES}
    assert statuses == {"Healthy", "Progressing", "Degraded"}
    inputs = {case["inputPath"] for case in CASES}
    assert inputs == {
        str(p.relative_to(CUSTOMIZATION)) for p in (CUSTOMIZATION / "testdata").glob("*.yaml")
    }


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_each_case_is_a_valid_geminiwebhook(case: dict[str, Any]) -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = yaml.safe_load((CUSTOMIZATION / case["inputPath"]).read_text())
    jsonschema.Draft7Validator(schema).validate(obj)


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_argocd_computes_the_expected_health(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CUSTOMIZATION / case["inputPath"]).read_text())
    assert tools.argocd(CUSTOMIZATION / "health.lua", obj) == case["healthStatus"]


KSTATUS_FOR = {"Healthy": "Current", "Progressing": "InProgress", "Degraded": "Failed"}


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if "status" in yaml.safe_load((CUSTOMIZATION / c["inputPath"]).read_text())],
    ids=lambda c: Path(c["inputPath"]).stem,
)
def test_argocd_and_kstatus_agree(case: dict[str, Any]) -> None:
    """On every case the operator has written a status to (without one, kstatus reads
    Current: docs/deploy.md#6-gitops-health-in-argo-cd-and-flux)."""
    obj = yaml.safe_load((CUSTOMIZATION / case["inputPath"]).read_text())
    assert tools.kstatus(obj)["status"] == KSTATUS_FOR[case["healthStatus"]["status"]]
