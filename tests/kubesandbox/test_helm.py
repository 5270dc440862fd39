"""The real Helm (v4, server-side apply) installs, upgrades and uninstalls our chart here."""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest

from tests.fixtures.kube import Kube
from tests.kubesandbox.conftest import Api, unique

CHART = Path(__file__).resolve().parents[2] / "charts" / "gemini-webhook-operator"
pytestmark = pytest.mark.real_component


def test_helm_installs_upgrades_and_uninstalls_the_chart(kube: Kube, api: Api) -> None:
    release = unique("gwo")
    config = helm.Config(kubeconfig_path=str(kube.kubeconfig), namespace="default")
    chart = helm.Chart.load(str(CHART))
    config.install(chart, release, {})
    deployments = api.get(
        "/apis/apps/v1/namespaces/default/deployments",
        query={"labelSelector": f"app.kubernetes.io/instance={release}"},
    ).body["items"]
    assert deployments
    config.upgrade(chart, release, {"replicaCount": 2})
    assert [r["revision"] for r in config.list() if r["name"] == release] == [2]
    config.uninstall(release)
    left = api.get(
        "/apis/apps/v1/namespaces/default/deployments",
        query={"labelSelector": f"app.kubernetes.io/instance={release}"},
    ).body["items"]
    assert left == []
