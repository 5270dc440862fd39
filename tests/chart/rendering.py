"""Rendering the chart with the real Helm library (PyPI `helm-python-sdk`, Helm v4's Go SDK
behind a C ABI), in process, each combination of values once per session."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "gemini-webhook-operator"
RELEASE = "gwo"
RELEASE_NAMESPACE = "gemini-system"

MONITORING_ON = {
    "serviceMonitor": {"enabled": True},
    "receiverPodMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboard": {"enabled": True},
}

# The combinations every structural test runs against: name -> values.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "monitoring": {"monitoring": MONITORING_ON},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "ha": {"replicaCount": 3},
    "everything": {
        "replicaCount": 2,
        "watchNamespaces": ["team-a"],
        "monitoring": MONITORING_ON,
        "apiKeySecret": {"createFromInsecureValue": True, "insecureValue": "test-key-not-real"},
        "image": {"digest": "sha256:" + "0" * 64},
        "podAnnotations": {"example.com/owner": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "receivers": {
            "proxy": {
                "httpProxy": "http://proxy.corp.example:3128",
                "httpsProxy": "proxy.corp.example:3128",
                "noProxy": ".svc,.cluster.local,10.244.0.0/16",
            }
        },
    },
}


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def _freeze(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)


@functools.cache
def _render(frozen: str) -> dict[str, str]:
    return chart().render(
        json.loads(frozen), name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True
    )


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print it."""
    return _render(_freeze(values or {}))


def manifests(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the release would create (NOTES.txt excluded)."""
    objects = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append(document)
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def notes(values: dict[str, Any] | None = None) -> str:
    return next(text for path, text in render(values).items() if path.endswith("NOTES.txt"))
