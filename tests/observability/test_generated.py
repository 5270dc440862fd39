"""The dashboard and the alert rules: generated from code, committed, checked by promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhook_operator import metrics as operator_metrics
from gemini_webhook_receiver import metrics as receiver_metrics
from gemini_webhooks.observability import __main__ as generator
from gemini_webhooks.observability import alerts, dashboard

HERE = Path(__file__).resolve().parent
RULES_TESTS = HERE / "rules.test.yaml"
PROMQL_METRIC = re.compile(r"\b(gemini_[a-z_]+)\b")

ISSUE_ALERTS = {
    "GeminiWebhookRotationOverdue",
    "GeminiWebhookDisabledByFailedDeliveries",
    "GeminiReceiverVerificationFailureSpike",
    "GeminiReceiverForwardFailures",
    "GeminiReceiverDeadLettersGrowing",
    "GeminiReceiverDown",
    "GeminiWebhookOperatorReconcileErrors",
    "GeminiWebhookNotSynced",
    "GeminiWebhookHealingRotations",
}
ISSUE_PANELS = {
    "Deliveries per second by outcome",
    "Rejections by reason",
    "Acknowledgement latency",
    "End-to-end latency",
    "Forwards by target and outcome",
    "Queue depth and lag",
    "Dead letters",
    "Duplicates",
    "Webhooks by remote state",
    "Signing-secret age against the rotation schedule",
    "Reconcile errors",
    "WebhookService calls by status code",
}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(generator.DASHBOARD_FILE.read_text())
    return loaded


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    exprs = [t["expr"] for p in _panels() for t in p["targets"]]
    exprs += [v["query"] for v in _dashboard()["templating"]["list"] if v["type"] == "query"]
    return exprs


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load(generator.RULES_FILE.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def _exported_samples() -> set[str]:
    names = set(operator_metrics.ALL_METRIC_NAMES) | set(receiver_metrics.METRIC_NAMES)
    histograms = {n for n in names if not n.endswith("_total")}
    return names | {f"{n}{suffix}" for n in histograms for suffix in ("_bucket", "_sum", "_count")}


def test_committed_dashboard_and_rules_are_what_the_code_generates() -> None:
    for path, text in generator.generated().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: python -m gemini_webhooks.observability"
        )


def test_generator_check_mode_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "dashboard.json"
    stale.write_text("{}\n")
    monkeypatch.setattr(generator, "DASHBOARD_FILE", stale)
    monkeypatch.setattr(generator, "RULES_FILE", tmp_path / "rules.yaml")
    assert generator.main(["--check"]) == 1
    assert stale.read_text() == "{}\n"


def test_generation_is_deterministic() -> None:
    assert dashboard.render() == dashboard.render()
    assert alerts.render() == alerts.render()


# --- alerts ----------------------------------------------------------------------------------


@pytest.mark.real_component
def test_promtool_checks_the_shipped_rules_without_warnings() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(generator.RULES_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.alert_names())} rules found" in result.stdout
    assert "WARNING" not in (result.stdout + result.stderr).upper()


@pytest.mark.real_component
def test_promtool_unit_tests_pass_for_every_alert() -> None:
    result = subprocess.run(
        ["promtool", "test", "rules", str(RULES_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_promtool_tests_read_the_shipped_rules_file() -> None:
    spec = yaml.safe_load(RULES_TESTS.read_text())
    assert [(HERE / f).resolve() for f in spec["rule_files"]] == [generator.RULES_FILE]


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_stays_quiet() -> None:
    spec = yaml.safe_load(RULES_TESTS.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in spec["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    assert set(alerts.alert_names()) <= fires
    assert set(alerts.alert_names()) <= quiet


def test_rules_cover_every_alert_the_issue_asks_for() -> None:
    assert set(alerts.alert_names()) >= ISSUE_ALERTS


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    for group in alerts.rule_groups()["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
            assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())


def test_every_runbook_anchor_exists_in_the_deploy_guide() -> None:
    guide = (Path(generator.__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", guide, flags=re.M)
    }
    for name in alerts.alert_names():
        assert name.lower() in headings, f"docs/deploy.md has no section {name}"


# --- dashboard -------------------------------------------------------------------------------


def test_dashboard_has_every_panel_the_issue_asks_for() -> None:
    assert {p["title"] for p in _panels()} >= ISSUE_PANELS


def test_dashboard_latency_panels_show_p50_and_p99() -> None:
    for title in ("Acknowledgement latency", "End-to-end latency"):
        (panel,) = [p for p in _panels() if p["title"] == title]
        exprs = [t["expr"] for t in panel["targets"]]
        assert [e.split(",")[0] for e in exprs] == [
            "histogram_quantile(0.5",
            "histogram_quantile(0.99",
        ]


def test_dashboard_has_namespace_and_webhook_variables_used_by_receiver_panels() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert {"datasource", "namespace", "webhook"} <= set(variables)
    assert variables["webhook"]["multi"] and variables["namespace"]["includeAll"]
    for panel in _panels():
        for target in panel["targets"]:
            if "gemini_receiver_" in target["expr"]:
                assert 'namespace=~"$namespace"' in target["expr"]
                assert 'webhook=~"$webhook"' in target["expr"]


def test_dashboard_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not (mine & cells), p["title"]
        cells |= mine


def test_every_panel_queries_the_selected_data_source() -> None:
    for panel in _panels():
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def test_dashboard_and_alerts_query_only_metrics_the_components_export() -> None:
    exported = _exported_samples()
    used = {
        m
        for e in dashboard_queries() + list(alert_expressions().values())
        for m in PROMQL_METRIC.findall(e)
    }
    assert used, "no metric found in any query"
    assert used - exported == set()


def test_forward_failure_alert_is_unit_tested_with_every_failure_outcome_the_receiver_counts() -> (
    None
):
    tests = yaml.safe_load(RULES_TESTS.read_text())["tests"]
    (group,) = [t for t in tests if t["name"] == "GeminiReceiverForwardFailures"]
    outcomes = {
        m.group(1)
        for s in group["input_series"]
        if (m := re.search(r'outcome="([a-z_]+)"', s["series"]))
    }
    assert outcomes == set(receiver_metrics.FORWARD_OUTCOMES)
    assert (
        f'outcome!="{receiver_metrics.FORWARD_OK}"'
        in alert_expressions()["GeminiReceiverForwardFailures"]
    )
