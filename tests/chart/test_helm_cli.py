"""The chart and the CRD on the real control plane (GWO_KUBE=real only), and the `helm` CLI.

- Admission: every rendered combination (`rendering.COMBINATIONS`), the CRD and every
  example are accepted by kube-apiserver itself (`kubectl apply --dry-run=server`: the
  API server's defaulting, validation and admission chain, not only a schema), and the
  CRD's `not`/`oneOf` rules are refused there with a 422 that names the field. The
  prometheus-operator CRDs the monitoring combinations need come from the
  `github.com/prometheus-operator/prometheus-operator` Go module at a pinned version
  (never committed).
- The CRD's rules: each allowed form admitted, each refused form refused with a 422 that
  names the field (`dryRun=All`).
- `Helm`: the real helm CLI with homes of its own, for the lifecycle tests on the real node
  (tests/chart/test_real_helm_cli.py, test_real_install.py, test_real_rollout.py), which
  need running Pods.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhook_operator.kube import Kube, KubeError
from gemini_webhooks.contracts import crd
from gemini_webhooks.controlplane.build import binaries_if_built
from gemini_webhooks.kube_access import ClusterAccess
from gemini_webhooks.sandbox.system import EXAMPLES_DIR as SANDBOX_EXAMPLES_DIR
from tests.chart.rendering import CHART_DIR, RELEASE_NAMESPACE, ROOT, manifests
from tests.fixtures.kube import KUBECTL

pytestmark = [pytest.mark.real_cluster_only, pytest.mark.real_component]

CRD_FILE = ROOT / "crds" / f"{crd.CRD_NAME}.yaml"
CHART_CRDS = sorted((CHART_DIR / "crds").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SANDBOX_EXAMPLES = sorted(SANDBOX_EXAMPLES_DIR.glob("*.yaml"))
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
# The version the Go module proxy serves here (the chart's monitors use monitoring.coreos.com/v1).
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_OPERATOR_CRDS = ("podmonitors", "servicemonitors", "prometheusrules")
API_KEY_SECRET = "gemini-api-key"


# -- helpers --------------------------------------------------------------------------------


def _run(
    argv: list[str], *, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = _run([KUBECTL, "--kubeconfig", os.environ["KUBECONFIG"], *args], stdin=stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def ensure_namespace(name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))


def apply_crds(paths: list[Path]) -> None:
    """Apply CRDs for real (server-side: some are too large for client-side apply's
    annotation) and wait until each is Established."""
    for path in paths:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = [d["metadata"]["name"] for p in paths for d in yaml.safe_load_all(p.read_text()) if d]
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))


def server_dry_run(documents: list[dict[str, Any]], namespace: str | None = None) -> None:
    args = ["apply", "--dry-run=server", "-f", "-"]
    if namespace is not None:
        args += ["-n", namespace]
    kubectl(*args, stdin=yaml.safe_dump_all(documents))


def prometheus_operator_crds() -> list[Path]:
    """The prometheus-operator CRDs of the chart's monitors, from the pinned Go module."""
    from tests.fixtures.gateway_api import _go

    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        [_go(), "mod", "download", "-json", f"{PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd="/",
        env=env,
    )
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"go mod download {PROMETHEUS_OPERATOR} failed: {result.stderr}")
    directory = Path(info["Dir"]) / "example" / "prometheus-operator-crd"
    return [
        directory / f"monitoring.coreos.com_{plural}.yaml" for plural in PROMETHEUS_OPERATOR_CRDS
    ]


@pytest.fixture(scope="module")
def admission_ready() -> None:
    """The CRDs every rendered object needs (ours, kopf's peering, prometheus-operator's)
    and the namespaces the combinations name."""
    apply_crds([*CHART_CRDS, *prometheus_operator_crds()])
    for namespace in (RELEASE_NAMESPACE, "team-a", "team-b"):
        ensure_namespace(namespace)


def fresh_namespace(prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    ensure_namespace(name)
    return name


# -- admission ------------------------------------------------------------------------------


def test_every_rendered_combination_is_admitted_by_the_api_server(
    admission_ready: None, combination: tuple[str, dict[str, Any]]
) -> None:
    name, values = combination
    objects = manifests(values)
    kinds = {o["kind"] for o in objects}
    assert "Deployment" in kinds and "Pod" in kinds  # the operator and the `helm test` hook
    if name in ("monitoring", "everything"):
        assert {"PodMonitor", "ServiceMonitor", "PrometheusRule"} <= kinds
    server_dry_run(objects)


def test_a_rendered_object_the_api_server_refuses_fails_the_dry_run(admission_ready: None) -> None:
    """The dry run is a real check: a Deployment whose selector misses its pod labels (no
    schema forbids it; kube-apiserver's validation does) is refused."""
    (deployment,) = [o for o in manifests({}) if o["kind"] == "Deployment"]
    deployment["spec"]["template"]["metadata"]["labels"] = {"other": "labels"}
    with pytest.raises(AssertionError, match=r"selector.*does not match template"):
        server_dry_run([deployment])


def test_the_crd_is_accepted_by_the_api_server_and_serves_geminiwebhooks() -> None:
    server_dry_run([yaml.safe_load(CRD_FILE.read_text())])
    apply_crds([CRD_FILE])
    assert "geminiwebhooks" in kubectl(
        "api-resources", f"--api-group={crd.API_GROUP}", "-o", "name"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_accepted(example: Path) -> None:
    apply_crds([CRD_FILE])
    namespace = fresh_namespace("examples")
    documents = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert any(d["kind"] == crd.KIND for d in documents)
    server_dry_run(documents, namespace)


@pytest.mark.parametrize("example", SANDBOX_EXAMPLES, ids=[p.name for p in SANDBOX_EXAMPLES])
def test_every_sandbox_example_is_accepted_filled_as_the_sandbox_fills_it(example: Path) -> None:
    apply_crds([CRD_FILE])
    namespace = fresh_namespace("sandbox-examples")
    values = {"EMULATOR_URL": "http://127.0.0.1:4000", "NAMESPACE": namespace, "NAME": "demo"}
    filled = string.Template(example.read_text()).substitute(values)
    documents = [d for d in yaml.safe_load_all(filled) if d]
    assert any(d["kind"] == crd.KIND for d in documents)
    server_dry_run(documents, namespace)


_RECEIVER = {
    "enabled": True,
    "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
}
_SERVICE = {"name": "consumer", "port": 8080}
_INGRESS = {"host": "hooks.example.com", "tls": {"secretName": "hooks-tls"}}
_HTTP_ROUTE = {"parentRefs": [{"name": "public"}], "hostnames": ["hooks.example.com"]}
_ISSUER = {"name": "letsencrypt"}
_SENTINEL = {"addresses": ["sentinel.team-a.svc:26379"], "masterName": "primary"}


def _receiver(**changes: Any) -> dict[str, Any]:
    return {"receiver": {**json.loads(json.dumps(_RECEIVER)), **changes}}


def _target(target: dict[str, Any]) -> dict[str, Any]:
    return _receiver(defaultRoute={"targets": [target]})


def _tls(tls: dict[str, Any]) -> dict[str, Any]:
    return _receiver(expose={"ingress": {**_INGRESS, "tls": tls}})


# (spec changes, the field the refusal names); each rule's accepted forms come first.
ACCEPTED = {
    "rotation interval": {"rotation": {"interval": "720h"}},
    "rotation schedule": {"rotation": {"schedule": "0 3 1 * *"}},
    "target url": _target({"url": "https://consumer.example.com/"}),
    "target service": _target({"service": _SERVICE}),
    "tls secretName": _tls({"secretName": "hooks-tls"}),
    "tls issuer": _tls({"issuer": _ISSUER}),
    "expose ingress": _receiver(expose={"ingress": _INGRESS}),
    "expose httpRoute": _receiver(expose={"httpRoute": _HTTP_ROUTE}),
    "redis url": _receiver(redis={"url": "redis://redis.team-a.svc:6379/0"}),
    "redis sentinel": _receiver(redis={"sentinel": _SENTINEL}),
}
REFUSED = {
    "rotation interval and schedule": (
        {"rotation": {"interval": "720h", "schedule": "0 3 1 * *"}},
        "spec.rotation",
    ),
    "target url and service": (
        _target({"url": "https://consumer.example.com/", "service": _SERVICE}),
        "spec.receiver.defaultRoute.targets[0]",
    ),
    "target neither": (_target({"format": "envelope"}), "spec.receiver.defaultRoute.targets[0]"),
    "tls secretName and issuer": (
        _tls({"secretName": "hooks-tls", "issuer": _ISSUER}),
        "spec.receiver.expose.ingress.tls",
    ),
    "tls neither": (_tls({}), "spec.receiver.expose.ingress.tls"),
    "expose ingress and httpRoute": (
        _receiver(expose={"ingress": _INGRESS, "httpRoute": _HTTP_ROUTE}),
        "spec.receiver.expose",
    ),
    "expose neither": (_receiver(expose={}), "spec.receiver.expose"),
    "redis url and sentinel": (
        _receiver(redis={"url": "redis://redis.team-a.svc:6379/0", "sentinel": _SENTINEL}),
        "spec.receiver.redis",
    ),
    "redis neither": (_receiver(redis={"waitReplicas": 1}), "spec.receiver.redis"),
}


def _resource(namespace: str, **spec: Any) -> dict[str, Any]:
    body = {
        "url": "https://hooks.example.com/gemini",
        "events": ["batch.succeeded"],
        "apiKeySecretRef": {"name": API_KEY_SECRET},
    }
    body.update(spec)
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "rules", "namespace": namespace},
        "spec": body,
    }


async def _create_dry_run(body: dict[str, Any]) -> KubeError | None:
    """POST the resource with `dryRun=All`: None when admitted, the API's error if not."""
    client = Kube(ClusterAccess.load(os.environ["KUBECONFIG"]))
    namespace = body["metadata"]["namespace"]
    path = f"/apis/{crd.API_GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}"
    try:
        await client.request("POST", path, body, params={"dryRun": "All"})
    except KubeError as error:
        return error
    finally:
        await client.close()
    return None


@pytest.fixture(scope="module")
def rules_namespace() -> str:
    apply_crds([CRD_FILE])
    return fresh_namespace("crd-rules")


@pytest.mark.parametrize("case", sorted(ACCEPTED))
async def test_the_crds_rules_admit_each_allowed_form(rules_namespace: str, case: str) -> None:
    assert await _create_dry_run(_resource(rules_namespace, **ACCEPTED[case])) is None


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_the_crds_rules_refuse_with_a_422_naming_the_field(
    rules_namespace: str, case: str
) -> None:
    spec, field = REFUSED[case]
    error = await _create_dry_run(_resource(rules_namespace, **spec))
    assert error is not None, f"{case}: admitted"
    assert error.status == 422, error
    # kube-apiserver names the field in the message: `<nil>: Invalid value: "": "<field>"
    # must not validate the schema (not)` / `... must validate one and only one schema
    # (oneOf)`.
    rule = "(not)" if field == "spec.rotation" else "(oneOf)"
    message = str(error)
    assert f'"{field}" must' in message and rule in message, message


# -- the helm CLI --------------------------------------------------------------------------


def helm_binary() -> str:
    binaries = binaries_if_built()
    assert binaries is not None and "helm" in binaries, "run scripts/control-plane build"
    return str(binaries["helm"])


class Helm:
    """The real helm CLI, with its own config/cache/data dirs, on the admin's kubeconfig."""

    def __init__(self, home: Path, namespace: str) -> None:
        self.namespace = namespace
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, timeout: float = 300) -> str:
        argv = [helm_binary(), *args, "--namespace", self.namespace]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=self.env
        )
        if result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout
