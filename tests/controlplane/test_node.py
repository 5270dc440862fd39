"""The control plane and its node, started here as `scripts/control-plane up` starts them:
real kube-apiserver answers, the node registers and heartbeats, runs a Pod of our image
exactly from its spec as its own ServiceAccount, and says clearly what it cannot run."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gemini_webhooks.controlplane.cluster import NODE_NAME
from gemini_webhooks.controlplane.node import UNSUPPORTED_IMAGE, runs_image
from gemini_webhooks.controlplane.threaded import ThreadedControlPlane
from gemini_webhooks.sandbox.supervisor import group_alive
from tests.fixtures.kube import KUBECTL

pytestmark = [pytest.mark.real_component, pytest.mark.timeout(240)]

IMAGE = "ghcr.io/gemini-webhook-operator/gemini-webhook-operator:0.1.0"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedControlPlane]:
    running = ThreadedControlPlane(tmp_path_factory.mktemp("cp") / "state")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def kubectl(plane: ThreadedControlPlane, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(plane.admin_kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def test_image_matching_is_by_repository_name() -> None:
    assert runs_image(IMAGE)
    assert runs_image("registry.local:5000/team/gemini-webhook-operator@sha256:abc")
    assert runs_image("gemini-webhook-operator")
    assert not runs_image("nginx:1.27")
    assert not runs_image("ghcr.io/x/gemini-webhook-operator-extra:1")


def test_the_api_server_is_kubernetes_1_37_2_with_rbac(plane: ThreadedControlPlane) -> None:
    version = json.loads(kubectl(plane, "get", "--raw", "/version"))
    assert version["gitVersion"] == "v1.37.2"
    assert kubectl(plane, "auth", "can-i", "--list").strip()
    # A client without credentials is system:anonymous, and refused.
    assert plane.plane is not None
    context = ssl.create_default_context(cafile=str(plane.plane.layout.ca))
    url = f"{plane.server}/api/v1/namespaces/default/secrets"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=context, timeout=10)
    assert refused.value.code == 403
    assert "system:anonymous" in refused.value.read().decode()


def test_the_node_is_registered_ready_and_heartbeats(plane: ThreadedControlPlane) -> None:
    node = json.loads(kubectl(plane, "get", "node", NODE_NAME, "-o", "json"))
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
    lease = lambda: json.loads(  # noqa: E731
        kubectl(plane, "get", "lease", NODE_NAME, "-n", "kube-node-lease", "-o", "json")
    )["spec"]["renewTime"]
    first = lease()
    wait("a lease renewal", lambda: lease() != first, timeout=30)


def _pod_of(plane: ThreadedControlPlane, app: str) -> dict[str, Any] | None:
    listed = json.loads(kubectl(plane, "get", "pods", "-l", f"app={app}", "-o", "json"))
    return listed["items"][0] if listed["items"] else None


def test_a_pod_of_our_image_runs_from_its_spec_as_its_own_service_account(
    plane: ThreadedControlPlane,
) -> None:
    manifest = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: runner, namespace: default}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: runner-config, namespace: default}}
data: {{greeting: hello-from-a-configmap}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: runner, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: runner}}}}
  template:
    metadata: {{labels: {{app: runner}}}}
    spec:
      serviceAccountName: runner
      containers:
      - name: main
        image: {IMAGE}
        command: ["sh", "-c"]
        args:
        - 'echo "greeting=$(cat "$GREETING_FILE")"; echo "namespace=$MY_NAMESPACE";
           echo "whoami=$(kubectl auth whoami -o jsonpath={{.status.userInfo.username}})";
           kubectl get secrets >/dev/null 2>&1 || echo "secrets=forbidden"; sleep 3600'
        env:
        - {{name: GREETING_FILE, value: /etc/runner/greeting}}
        - name: MY_NAMESPACE
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
        volumeMounts:
        - {{name: config, mountPath: /etc/runner}}
      volumes:
      - name: config
        configMap: {{name: runner-config}}
"""
    kubectl(plane, "apply", "-f", "-", stdin=manifest)
    pod = wait(
        "the runner pod to be Ready",
        lambda: (
            (p := _pod_of(plane, "runner"))
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
            and p
        ),
    )
    assert pod["spec"]["nodeName"] == NODE_NAME  # bound by the real scheduler
    assert pod["status"]["phase"] == "Running"
    log_dir = plane.plane.layout.logs  # type: ignore[union-attr]
    log = log_dir / f"pod-default-{pod['metadata']['name']}.log"
    text = wait("the pod's output", lambda: "secrets=" in _read(log) and _read(log))
    assert "greeting=hello-from-a-configmap" in text
    assert "namespace=default" in text
    assert "whoami=system:serviceaccount:default:runner" in text
    assert "secrets=forbidden" in text  # RBAC holds the pod to its own ServiceAccount
    ready = json.loads(kubectl(plane, "get", "deployment", "runner", "-o", "json"))
    assert ready["status"].get("availableReplicas") == 1

    kubectl(plane, "delete", "deployment", "runner", "--wait=false")
    wait("the pod to be gone", lambda: _pod_of(plane, "runner") is None)
    assert plane.node is not None
    node = plane.node
    wait(
        "the node to forget the pod",
        lambda: not any(p.name == pod["metadata"]["name"] for p in node.pods.values()),
        timeout=10,
    )


def test_a_pod_it_cannot_run_says_so(plane: ThreadedControlPlane) -> None:
    kubectl(plane, "run", "other", "--image=nginx:1.27", "--labels=app=other")
    pod = wait(
        "a waiting status",
        lambda: (
            (p := _pod_of(plane, "other")) and p.get("status", {}).get("containerStatuses") and p
        ),
    )
    state = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert state["reason"] == UNSUPPORTED_IMAGE
    assert "nginx:1.27" in state["message"]
    assert pod["status"]["phase"] == "Pending"
    kubectl(plane, "delete", "pod", "other", "--wait=false")


def test_stopping_leaves_no_process(tmp_path: Path) -> None:
    running = ThreadedControlPlane(tmp_path / "state", with_node=False)
    running.start()
    assert running.plane is not None and running.plane.supervisor is not None
    groups = [c.pid for c in running.plane.supervisor.children]
    assert len(groups) == 4
    running.stop()
    assert not [g for g in groups if group_alive(g)]
    assert os.path.exists(tmp_path / "state" / "logs" / "kube-apiserver.log")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
