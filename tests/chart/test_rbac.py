"""Least privilege, measured: the chart's RBAC rules against the API calls the operator
really makes.

The operator runs as a subprocess with the command line the chart renders (ports moved to
loopback), against the kube sandbox and the emulator, through a GeminiWebhook's life:
create with a receiver exposed through an Ingress (the test admits it, as the ingress
controller would), rotation by annotation, a switch to a Gateway API HTTPRoute, scale-out
of the receiver, a spec change, deletion, and a graceful stop. The sandbox's audit records
every request as `(verb, api_group, resource, subresource, namespace)`; the test's own
requests are accounted for one by one and taken out. Every remaining call must be allowed
by the rendered rules (nothing missing), and every rule must have been used (nothing
unused).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gemini_webhook_operator import receiver_names
from gemini_webhook_operator.receiver_resources import ReceiverSettings
from gemini_webhooks.contracts import crd
from gemini_webhooks.kubesandbox import AuditEntry
from tests.chart.rendering import RELEASE_NAMESPACE, ROOT, find, manifests
from tests.fixtures import gateway_api
from tests.fixtures.kube import KUBECTL
from tests.operator import receiver_rendering

pytestmark = [pytest.mark.real_component, pytest.mark.sandbox_only, pytest.mark.timeout(120)]

NAMESPACE = "team-a"
WEBHOOK = "orders"
EXPOSED = {"host": "hooks.example.com", "path": "/"}
GW_PATH = f"/apis/{crd.API_GROUP}/{crd.VERSION}/namespaces/{NAMESPACE}/{crd.PLURAL}"

Permission = tuple[str, str, str]  # (api group, resource[/subresource], verb)


@dataclass
class OwnRequests:
    """The test's own requests: each is one audited request, excluded from the operator's."""

    base_url: str
    audit: list[AuditEntry]
    excluded: set[int] = field(default_factory=set)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def request(
        self, entry: AuditEntry, method: str, path: str, body: Any = None, content_type: str = ""
    ) -> httpx.Response:
        before = len(self.audit)
        headers = {"Content-Type": content_type} if content_type else {}
        response = self.client.request(method, self.base_url + path, json=body, headers=headers)
        mine = [i for i in range(before, len(self.audit)) if self.audit[i] == entry]
        assert mine, f"the sandbox did not audit {entry} for {method} {path}"
        self.excluded.add(mine[0])
        return response

    def get_webhook(self) -> dict[str, Any] | None:
        entry = AuditEntry("get", crd.API_GROUP, crd.PLURAL, "", NAMESPACE)
        response = self.request(entry, "GET", f"{GW_PATH}/{WEBHOOK}")
        return response.json() if response.status_code == 200 else None

    def get(self, entry: AuditEntry, path: str) -> dict[str, Any] | None:
        response = self.request(entry, "GET", path)
        return response.json() if response.status_code == 200 else None

    def wait(self, what: str, probe: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if probe():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _operator_command(values: dict[str, Any], kubeconfig: Path) -> list[str]:
    """The chart's command line for the operator, with its ports moved to loopback."""
    (deployment,) = find(manifests(values), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = []
    for arg in container["args"]:
        if arg.startswith("--liveness="):
            arg = f"--liveness=http://127.0.0.1:{_free_port()}/healthz"
        elif arg.startswith("--metrics-port="):
            args.append("--metrics-address=127.0.0.1")
            arg = "--metrics-port=0"
        args.append(arg)
    return [sys.executable, "-m", "gemini_webhooks", *args, "--kubeconfig", str(kubeconfig)]


@dataclass
class Run:
    operator_calls: list[AuditEntry]
    values: dict[str, Any]
    # What the Roles the operator creates grant: Kubernetes lets it grant only what it holds.
    granted_to_receivers: list[AuditEntry] = field(default_factory=list)

    @property
    def required(self) -> list[AuditEntry]:
        return self.operator_calls + self.granted_to_receivers


def _receiver_grants(resource: dict[str, Any]) -> list[AuditEntry]:
    body = {**resource, "metadata": {**resource["metadata"], "uid": "0"}}
    roles = [o for o in receiver_rendering.render(body, ReceiverSettings()) if o["kind"] == "Role"]
    assert roles, "the receiver has no Role"
    return [
        AuditEntry(verb, group, resource_name, "", NAMESPACE)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource_name in rule["resources"]
        for verb in rule["verbs"]
    ]


def _kubectl(kube: Any, tmp_path: Path, *args: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        [KUBECTL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=kube.kubectl_env(tmp_path / "kubectl-cache"),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def lifecycle(
    kube_sandbox: Any, emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, Any]], Run]]:
    kube = kube_sandbox  # the sandbox's audit log records the calls (skips on a real cluster)
    # The health check's pings go to the exposed host: the emulator sends them to a closed
    # loopback port instead (its endpoint overrides, like curl's --resolve).
    emulator.set_endpoint_overrides({f"{EXPOSED['host']}:443": "127.0.0.1:9"})
    processes: list[subprocess.Popen[bytes]] = []

    def run(values: dict[str, Any]) -> Run:
        # Set-up, before the operator starts: CRDs, namespaces, API key, and the chart's
        # leader Lease in the release namespace.
        leases = find(manifests(values), "Lease")
        api_key = base64.b64encode(emulator.api_key.encode()).decode()
        setup = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "gemini-api-key", "namespace": NAMESPACE},
                "data": {"api-key": api_key},
            },
            *leases,
        ]
        _kubectl(kube, tmp_path, "apply", "-f", str(ROOT / "crds"))
        gateway_api.install(kube)
        _kubectl(kube, tmp_path, "apply", "-f", "-", stdin=yaml.safe_dump_all(setup))

        start = len(kube.audit)
        log_path = tmp_path / "operator.log"
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["POD_NAMESPACE"] = RELEASE_NAMESPACE  # as the chart's Deployment sets it
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                _operator_command(values, kube.kubeconfig),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        processes.append(process)
        side = OwnRequests(kube.base_url, kube.audit)
        gw = (crd.API_GROUP, crd.PLURAL)

        def check_alive() -> None:
            if process.poll() is not None:
                raise AssertionError("operator exited:\n" + log_path.read_text(errors="replace"))

        def ready() -> bool:
            check_alive()
            obj = side.get_webhook()
            conditions = ((obj or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        body = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": WEBHOOK, "namespace": NAMESPACE},
            "spec": {
                "events": ["batch.succeeded"],
                "apiKeySecretRef": {"name": "gemini-api-key"},
                "apiBaseUrl": emulator.base_url,
                "receiver": {
                    "enabled": True,
                    "defaultRoute": {"targets": [{"url": "http://consumer.team-a.svc:8080/"}]},
                    "expose": {"ingress": {**EXPOSED, "tls": {"secretName": "hooks-tls"}}},
                },
            },
        }
        side.request(AuditEntry("create", *gw, "", NAMESPACE), "POST", GW_PATH, body)
        ingresses = f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses"
        receiver_name = receiver_names.receiver_name(WEBHOOK)
        side.wait(
            "the Ingress",
            lambda: (
                side.get(
                    AuditEntry("get", "networking.k8s.io", "ingresses", "", NAMESPACE),
                    f"{ingresses}/{receiver_name}",
                )
                is not None
            ),
        )
        side.request(  # the ingress controller's part
            AuditEntry("patch", "networking.k8s.io", "ingresses", "status", NAMESPACE),
            "PATCH",
            f"{ingresses}/{receiver_name}/status",
            {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}},
            "application/merge-patch+json",
        )
        side.wait("Ready", ready)

        # Rotation requested by annotation; done when the operator removes it and names it
        # as the last rotation's reason (lastRotationTime has whole seconds: a rotation in
        # the second of the creation would not move it).
        side.request(
            AuditEntry("patch", *gw, "", NAMESPACE),
            "PATCH",
            f"{GW_PATH}/{WEBHOOK}",
            {"metadata": {"annotations": {crd.ANNOTATION_ROTATE: "now"}}},
            "application/merge-patch+json",
        )

        def rotated() -> bool:
            check_alive()
            obj = side.get_webhook() or {}
            done = crd.ANNOTATION_ROTATE not in (obj["metadata"].get("annotations") or {})
            reason = obj.get("status", {}).get("lastRotationReason")
            return done and reason == "RequestedByAnnotation"

        side.wait("rotation", rotated)

        # Receiver changes: scale out (PDB created), change again (every object patched),
        # scale in (PDB pruned), switch the receiver off (everything pruned).
        def change(spec: dict[str, Any], what: str, done: Callable[[], bool]) -> None:
            side.request(
                AuditEntry("patch", *gw, "", NAMESPACE),
                "PATCH",
                f"{GW_PATH}/{WEBHOOK}",
                {"spec": spec},
                "application/merge-patch+json",
            )

            def settled() -> bool:
                check_alive()
                obj = side.get_webhook() or {}
                status = obj.get("status") or {}
                return status.get("observedGeneration") == obj["metadata"]["generation"] and done()

            side.wait(what, settled)

        def count(group: str, version: str, plural: str) -> int:
            prefix = f"/apis/{group}/{version}" if group else "/api/v1"
            found = side.get(
                AuditEntry("list", group, plural, "", NAMESPACE),
                f"{prefix}/namespaces/{NAMESPACE}/{plural}",
            )
            return len((found or {}).get("items") or [])

        def pdbs() -> int:
            return count("policy", "v1", "poddisruptionbudgets")

        # The same URL through a Gateway: the Ingress is pruned, the HTTPRoute created.
        receiver = body["spec"]["receiver"]
        gateway = {"parentRefs": [{"name": "public"}], "hostnames": [EXPOSED["host"]]}
        receiver = {**receiver, "expose": {"ingress": None, "httpRoute": {**gateway, "path": "/"}}}
        change(
            {"receiver": receiver},
            "switch to an HTTPRoute",
            lambda: count("networking.k8s.io", "v1", "ingresses") == 0,
        )
        receiver["expose"] = {"httpRoute": receiver["expose"]["httpRoute"]}

        def pods_listed() -> bool:
            """The health check asked for the receiver's pods (several replicas, no Redis)."""
            wanted = AuditEntry("list", "", "pods", "", NAMESPACE)
            return any(e == wanted for e in kube.audit[start:])

        change(
            {"receiver": {**receiver, "replicas": 2}, "healthCheck": {"enabled": True}},
            "scale-out",
            lambda: pdbs() == 1 and pods_listed(),
        )
        change({"events": ["batch.succeeded", "batch.failed"]}, "subscription", lambda: True)
        change(
            {"receiver": {**receiver, "replicas": 1}, "healthCheck": {"enabled": False}},
            "scale-in",
            lambda: pdbs() == 0,
        )
        change(
            {"url": "https://hooks.example.com/orders", "receiver": {**receiver, "enabled": False}},
            "receiver removal",
            lambda: count("apps", "v1", "deployments") == 0,
        )

        # Deletion: the finalizer deletes the remote webhook, then lets go.
        side.request(AuditEntry("delete", *gw, "", NAMESPACE), "DELETE", f"{GW_PATH}/{WEBHOOK}")
        side.wait("deletion", lambda: (check_alive(), side.get_webhook() is None)[1])

        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        calls = [e for i, e in enumerate(kube.audit[start:], start) if i not in side.excluded]
        return Run(operator_calls=calls, values=values, granted_to_receivers=_receiver_grants(body))

    yield run
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# --- comparing calls and rules ---------------------------------------------------------------


@dataclass
class Grants:
    cluster: set[Permission]
    by_namespace: dict[str, set[Permission]]

    def allows(self, call: AuditEntry) -> bool:
        permission = _permission(call)
        if permission in self.cluster:
            return True
        return bool(call.namespace) and permission in self.by_namespace.get(call.namespace, set())


def _permission(call: AuditEntry) -> Permission:
    resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    return (call.api_group, resource, call.verb)


def _rules(role: dict[str, Any]) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def grants(values: dict[str, Any]) -> Grants:
    objects = manifests(values)
    service_account = f"system:serviceaccount:{RELEASE_NAMESPACE}"
    cluster: set[Permission] = set()
    for binding in find(objects, "ClusterRoleBinding"):
        assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE, service_account
        (role,) = find(objects, "ClusterRole", binding["roleRef"]["name"])
        cluster |= _rules(role)
    by_namespace: dict[str, set[Permission]] = {}
    for binding in find(objects, "RoleBinding"):
        namespace = binding["metadata"]["namespace"]
        (role,) = [
            r
            for r in find(objects, "Role", binding["roleRef"]["name"])
            if r["metadata"]["namespace"] == namespace
        ]
        by_namespace.setdefault(namespace, set()).update(_rules(role))
    return Grants(cluster, by_namespace)


def _missing(run: Run) -> list[AuditEntry]:
    allowed = grants(run.values)
    return sorted({c for c in run.required if not allowed.allows(c)})


def _uses(call: AuditEntry) -> set[Permission]:
    """What a call needs: a server-side apply (a patch) that creates its object is also
    authorized as `create` (kube-apiserver's handlers/patch.go), and the operator's
    receiver objects are first made that way."""
    permission = _permission(call)
    group, resource, verb = permission
    return {permission, (group, resource, "create")} if verb == "patch" else {permission}


def _unused(run: Run) -> list[tuple[str, Permission]]:
    allowed = grants(run.values)
    used_anywhere = {p for c in run.required for p in _uses(c)}
    used_in = {(c.namespace, p) for c in run.required if c.namespace for p in _uses(c)}
    unused = [("cluster", p) for p in allowed.cluster if p not in used_anywhere]
    unused += [
        (namespace, p)
        for namespace, permissions in allowed.by_namespace.items()
        for p in permissions
        if (namespace, p) not in used_in
    ]
    return sorted(unused)


# A short drift interval: the operator acts on the rotation annotation at its next check.
FAST = {"operator": {"driftInterval": 2}}
CLUSTER_WIDE_HA = {"replicaCount": 2, **FAST}
NAMESPACED_HA = {"replicaCount": 2, "watchNamespaces": [NAMESPACE], **FAST}


@pytest.mark.parametrize(
    "values", [CLUSTER_WIDE_HA, NAMESPACED_HA], ids=["cluster-wide", "namespaced"]
)
def test_rbac_grants_exactly_the_calls_the_operator_makes(
    lifecycle: Callable[[dict[str, Any]], Run], values: dict[str, Any]
) -> None:
    run = lifecycle(values)
    assert run.operator_calls, "the operator made no API call"
    assert _missing(run) == [], "calls the chart does not allow"
    assert _unused(run) == [], "rules the operator never used"


def test_comparison_reports_a_call_the_rules_do_not_allow() -> None:
    run = Run([AuditEntry("delete", "", "nodes", "", "")], CLUSTER_WIDE_HA)
    assert _missing(run) == [AuditEntry("delete", "", "nodes", "", "")]


def test_comparison_reports_a_rule_no_call_used() -> None:
    run = Run([AuditEntry("get", "", "secrets", "", NAMESPACE)], CLUSTER_WIDE_HA)
    assert ("cluster", ("", "secrets", "get")) not in _unused(run)
    assert ("cluster", ("", "secrets", "delete")) in _unused(run)


def test_a_namespaced_role_does_not_allow_calls_elsewhere() -> None:
    run = Run([AuditEntry("get", "", "secrets", "", "team-b")], NAMESPACED_HA)
    assert _missing(run) == [AuditEntry("get", "", "secrets", "", "team-b")]
