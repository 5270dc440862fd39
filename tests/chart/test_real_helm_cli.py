"""The chart's lifecycle with the real `helm` CLI on the real node (`up --node real`): the
operator runs as containers of our product image on a real kubelet, in a namespace that
enforces the `restricted` Pod Security Standard, held to the chart's namespaced RBAC
(`watchNamespaces`); the Gemini API is our emulator, a Pod of the tools image in a
namespace of its own that the chart's NetworkPolicy is opened to (`extraEgress`) and that
`operator.apiBaseUrl` names by its Service's DNS name.

- Lifecycle: `helm install --wait` (the Pod Ready by its probe), the chart's namespaced
  rules only (`kubectl auth can-i`), a GeminiWebhook Ready through `operator.apiBaseUrl`;
  `helm upgrade` with a changed drift interval replaces the Pod (Recreate) and the new one
  reconciles a change; `helm uninstall` leaves nothing but the CRDs.
- HA: `replicaCount` 2 under `watchNamespaces`: both replicas Ready, the chart's Lease names
  one, the resource is reconciled once; uninstall leaves nothing (the Lease included).

Not repeated here: `helm test` passing (its hook Pod run to completion on the kubelet) is
tests/chart/test_real_install.py's `test_helm_test_passes`; an upgrade that rolls a
2-replica Deployment is its `test_helm_upgrade_rolls_out_and_the_webhooks_stay_ready`."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhooks.contracts import crd
from gemini_webhooks.controlplane import nodeconfig
from tests.chart.rendering import CHART_DIR, ROOT
from tests.chart.test_helm_cli import API_KEY_SECRET, Helm, _resource
from tests.chart.test_real_install import (
    API_KEY,
    EMULATOR,
    EMULATOR_LABELS,
    EMULATOR_PORT,
    RESTRICTED,
    emulator_objects,
)
from tests.fixtures.kube import KUBECTL
from tests.fixtures.real_node import Cluster, wait_for

pytestmark = [pytest.mark.real_component, pytest.mark.late_build, pytest.mark.timeout(600)]

OPERATOR_SELECTOR = "app.kubernetes.io/name=gemini-webhook-operator"
# What Kubernetes itself puts in every namespace.
NAMESPACE_DEFAULTS = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}


class Emulator:
    """The emulator's Pod, reached from the host at its Service's cluster IP."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.in_cluster_url = f"http://{EMULATOR}.{namespace}.svc.cluster.local:{EMULATOR_PORT}"

    def webhooks(self) -> list[dict[str, Any]]:
        service = self.cluster.get("service", "-n", self.namespace, EMULATOR)
        url = f"http://{service['spec']['clusterIP']}:{EMULATOR_PORT}/v1/webhooks?page_size=1000"
        request = urllib.request.Request(url, headers={"x-goog-api-key": API_KEY})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return list(json.load(answer).get("webhooks") or [])


def restricted_namespace(cluster: Cluster, name: str) -> None:
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}
    )
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "sa", "-n", name, "-o", "name").strip(),
        60,
    )


@pytest.fixture(scope="module")
def node_emulator(real_node: Cluster) -> Iterator[Emulator]:
    namespace = f"helm-emulator-{uuid.uuid4().hex[:5]}"
    try:
        restricted_namespace(real_node, namespace)
        real_node.apply(*emulator_objects(namespace))
        real_node.kubectl("apply", "-f", str(ROOT / "crds"))
        real_node.kubectl(
            "wait",
            "--for=condition=Ready",
            "-n",
            namespace,
            f"pod/{EMULATOR}",
            "--timeout=120s",
            timeout=150,
        )
        yield Emulator(real_node, namespace)
    finally:
        # Leaves the node as the module found it, for the next module on it.
        real_node.kubectl(
            "delete", "namespace", namespace, "--ignore-not-found", "--timeout=120s", timeout=150
        )
        real_node.kubectl("delete", "-f", str(ROOT / "crds"), "--ignore-not-found", timeout=150)


class Release:
    """One release in a `restricted` namespace of its own, on the real node's admin."""

    def __init__(self, cluster: Cluster, home: Path, name: str, namespace: str) -> None:
        self.cluster = cluster
        self.name = name
        self.namespace = namespace
        self.helm = Helm(home, namespace)
        self.helm.env["KUBECONFIG"] = str(cluster.kubeconfig)
        self.values = home / "values.yaml"

    def install(self, emulator: Emulator, **values: Any) -> None:
        """`helm install --wait` of our image, watching the release namespace only, with
        the emulator as the Gemini API and the operator's NetworkPolicy open to it."""
        emulator_peer = {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": emulator.namespace}
            },
            "podSelector": {"matchLabels": EMULATOR_LABELS},
        }
        chosen = {
            "image": {
                "repository": nodeconfig.IMAGE_REPOSITORIES["product"],
                "pullPolicy": "Never",
            },
            "watchNamespaces": [self.namespace],
            "networkPolicy": {
                "extraEgress": [
                    {"to": [emulator_peer], "ports": [{"protocol": "TCP", "port": EMULATOR_PORT}]}
                ]
            },
            **values,
        }
        chosen["operator"] = {"apiBaseUrl": emulator.in_cluster_url, **values.get("operator", {})}
        self.values.write_text(yaml.safe_dump(chosen))
        self.helm(
            "install",
            self.name,
            str(CHART_DIR),
            "-f",
            str(self.values),
            "--wait",
            "--timeout",
            "240s",
        )

    def operator_pods(self) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={self.name},{OPERATOR_SELECTOR}"
        pods = self.cluster.get("pods", "-n", self.namespace, "-l", selector)["items"]
        return [p for p in pods if "deletionTimestamp" not in p["metadata"]]

    def webhook(self, name: str) -> dict[str, Any]:
        return self.cluster.get(crd.PLURAL, "-n", self.namespace, name)

    def ready(self, name: str) -> bool:
        """Ready for the resource's current generation."""
        found = self.webhook(name)
        status = found.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        generation = found["metadata"].get("generation")
        return conditions.get("Ready") == "True" and status.get("observedGeneration") == generation

    def create_webhook(self, name: str) -> None:
        """The API key's Secret and a GeminiWebhook without apiBaseUrl (the chart's
        `operator.apiBaseUrl` names the emulator)."""
        self.cluster.kubectl(
            "create",
            "secret",
            "generic",
            API_KEY_SECRET,
            "-n",
            self.namespace,
            f"--from-literal=api-key={API_KEY}",
        )
        body = _resource(self.namespace)
        body["metadata"]["name"] = name
        self.cluster.apply(body)
        wait_for("the GeminiWebhook to be Ready", lambda: self.ready(name), 120)

    def delete_webhook_and_uninstall(self, name: str, emulator: Emulator) -> None:
        """First the resource (the operator removes the remote webhook and its finalizer),
        then the release: nothing is left but the CRDs."""
        self.cluster.kubectl(
            "delete", crd.PLURAL, name, "-n", self.namespace, "--timeout=60s", timeout=90
        )
        assert emulator.webhooks() == []
        self.cluster.kubectl("delete", "secret", API_KEY_SECRET, "-n", self.namespace)
        self.helm("uninstall", self.name, "--wait", "--timeout", "120s")
        deadline = time.monotonic() + 60
        while left := self.leftovers():
            assert time.monotonic() < deadline, f"left after helm uninstall: {left}"
            time.sleep(0.5)
        assert self.cluster.get("crd", crd.CRD_NAME)["metadata"]["name"] == crd.CRD_NAME

    def leftovers(self) -> list[str]:
        """Every object left in the namespace (bar what Kubernetes puts in each, and
        Events) and every cluster-scoped object of the release."""
        listed = self.cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name")
        kinds = [r for r in listed.split() if r not in ("events", "events.events.k8s.io")]
        items = self.cluster.get(",".join(kinds), "-n", self.namespace)["items"]
        selector = f"app.kubernetes.io/instance={self.name}"
        cluster_wide = self.cluster.get("clusterroles,clusterrolebindings", "-l", selector)
        return [
            f"{o['kind']}/{o['metadata']['name']}"
            for o in [*items, *cluster_wide["items"]]
            if (o["kind"], o["metadata"]["name"]) not in NAMESPACE_DEFAULTS
        ]

    def can_i(self, user: str, verb: str, resource: str, namespace: str) -> str:
        result = subprocess.run(
            [
                KUBECTL,
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "auth",
                "can-i",
                verb,
                resource,
                "-n",
                namespace,
                "--as",
                user,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout.strip()

    def remove(self) -> None:
        """Whatever a failed test left: the release, the resources' finalizers (nothing
        removes them with the operator gone), the namespace."""
        if self.name in self.helm("list", "-q").split():
            self.helm("uninstall", self.name, "--wait", "--timeout", "120s")
        for found in self.cluster.get(crd.PLURAL, "-n", self.namespace)["items"]:
            self.cluster.kubectl(
                "patch",
                crd.PLURAL,
                "-n",
                self.namespace,
                found["metadata"]["name"],
                "--type=merge",
                "-p",
                '{"metadata": {"finalizers": null}}',
            )
        self.cluster.kubectl(
            "delete",
            "namespace",
            self.namespace,
            "--ignore-not-found",
            "--timeout=120s",
            timeout=150,
        )


@pytest.fixture
def release(real_node: Cluster, node_emulator: Emulator, tmp_path: Path) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:5]
    made = Release(real_node, tmp_path, f"rel-{suffix}", f"helm-{suffix}")
    restricted_namespace(real_node, made.namespace)
    try:
        yield made
    finally:
        with contextlib.suppress(AssertionError, RuntimeError):
            made.remove()


def test_install_upgrade_and_uninstall_with_the_helm_cli(
    release: Release, node_emulator: Emulator
) -> None:
    emulator = node_emulator
    started = time.monotonic()
    # install: the operator Pod runs on the kubelet and turns Ready (its readiness probe).
    release.install(emulator, operator={"driftInterval": 300})
    installed = time.monotonic() - started
    (pod,) = release.operator_pods()
    account = pod["spec"]["serviceAccountName"]
    assert account.startswith(release.name)
    assert f"--api-base-url={emulator.in_cluster_url}" in pod["spec"]["containers"][0]["args"]
    # The Pod's identity holds the chart's namespaced rules only (watchNamespaces).
    user = f"system:serviceaccount:{release.namespace}:{account}"
    can = release.can_i(user, "list", "secrets", release.namespace)
    cannot = release.can_i(user, "list", "secrets", "default")
    assert (can, cannot) == ("yes", "no")

    release.create_webhook("lifecycle")
    webhook_id = release.webhook("lifecycle")["status"]["webhookId"]
    assert [w["id"] for w in emulator.webhooks()] == [webhook_id]

    # upgrade with a changed value: the Pod is replaced (Recreate) and the new one reconciles.
    release.helm(
        "upgrade",
        release.name,
        str(CHART_DIR),
        "--reuse-values",
        "--set",
        "operator.driftInterval=120",
        "--wait",
        "--timeout",
        "240s",
    )

    def replaced() -> dict[str, Any] | None:
        pods = release.operator_pods()
        new = len(pods) == 1 and pods[0]["metadata"]["uid"] != pod["metadata"]["uid"]
        return pods[0] if new else None

    new_pod = wait_for("the Pod to be replaced", replaced, 90)
    assert "--drift-interval=120" in new_pod["spec"]["containers"][0]["args"]
    release.cluster.kubectl(
        "patch",
        crd.PLURAL,
        "lifecycle",
        "-n",
        release.namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"events": ["batch.succeeded", "batch.failed"]}}),
    )
    wait_for("the new operator to reconcile the change", lambda: release.ready("lifecycle"), 120)
    (remote,) = emulator.webhooks()
    assert remote["id"] == webhook_id
    assert sorted(remote["subscribed_events"]) == ["batch.failed", "batch.succeeded"]

    release.delete_webhook_and_uninstall("lifecycle", emulator)
    print(
        f"\nhelm lifecycle on the real node: install --wait {installed:.1f}s, "
        f"whole test {time.monotonic() - started:.1f}s"
    )


def test_an_ha_release_runs_two_replicas_and_one_reconciles(
    release: Release, node_emulator: Emulator
) -> None:
    emulator = node_emulator
    """replicaCount 2: both replicas start and are Ready (the standby answers its probes),
    the chart's Lease names one of them, the chart's namespaced RBAC lets it lead, the
    resource is reconciled once; uninstall leaves nothing (the Lease included)."""
    release.install(emulator, replicaCount=2)
    pods = release.operator_pods()
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    lease_name = f"{release.name}-gemini-webhook-operator"

    def holder() -> str | None:
        lease = release.cluster.get("lease", lease_name, "-n", release.namespace)
        return (lease.get("spec") or {}).get("holderIdentity") or None

    leader = wait_for("a replica to hold the chart's Lease", holder, 90)
    assert leader in {p["metadata"]["name"] for p in pods}
    release.create_webhook("ha")
    remote = [w["id"] for w in emulator.webhooks()]
    assert remote == [release.webhook("ha")["status"]["webhookId"]], remote
    release.delete_webhook_and_uninstall("ha", emulator)
