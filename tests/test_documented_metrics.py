"""Every metric name README.md and docs/*.md mention is one the code exports (issue 12,
point 5): names are read from the operator's and the receiver's registries, with the
samples each family exposes (`_total` of a counter, `_bucket`/`_sum`/`_count` of a
histogram), so a renamed metric or a misspelt doc fails here."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry

import gemini_webhook_receiver.metrics  # noqa: F401 — registers the receiver's metrics
from gemini_webhook_operator.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A `gemini_` word not inside another identifier (a Prometheus meta label such as
# `__meta_kubernetes_pod_label_gemini_webhooks_dev_webhook` is not a mention).
MENTION = re.compile(r"(?<![A-Za-z0-9_])gemini_[a-z_]+")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("", "_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def exported_samples() -> set[str]:
    names: set[str] = set()
    registries = [OperatorMetrics(CollectorRegistry()).registry, prometheus_client.REGISTRY]
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def mentions() -> dict[str, list[str]]:
    """Each metric-like word, with where it is mentioned (Python package names aside)."""
    found: dict[str, list[str]] = {}
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text().splitlines(), 1):
            for word in MENTION.findall(line):
                if importlib.util.find_spec(word) is None:
                    found.setdefault(word, []).append(f"{document.name}:{number}")
    return found


def test_every_documented_metric_name_is_exported() -> None:
    exported = exported_samples()
    unknown = {
        word: where
        for word, where in mentions().items()
        if not word.endswith("_") and word not in exported
    }
    assert not unknown, f"documented but not exported: {unknown}"


def test_every_documented_metric_prefix_is_one_the_code_uses() -> None:
    exported = exported_samples()
    unknown = {
        word: where
        for word, where in mentions().items()
        if word.endswith("_") and not any(name.startswith(word) for name in exported)
    }
    assert not unknown, f"documented prefixes no metric has: {unknown}"


def test_the_check_knows_the_names_the_docs_must_use() -> None:
    exported = exported_samples()
    assert "gemini_receiver_deliveries_total" in exported
    assert "gemini_webhook_receiver_deliveries_total" not in exported
    assert "gemini_webhook_operator_reconcile_duration_seconds_bucket" in exported
    assert "gemini_webhook_operator_heal_holds_total" in exported
