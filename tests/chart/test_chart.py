"""The Helm chart, rendered and linted by the real Helm library and validated against the
Kubernetes OpenAPI schemas (`kubernetes-validate`, strict) of every minor from 1.30 on."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, latest_version

from tests.chart.rendering import (
    CHART_DIR,
    COMBINATIONS,
    RELEASE_NAMESPACE,
    ROOT,
    chart,
    find,
    manifests,
    notes,
    render,
)
from tests.fixtures.cluster_proxy import ClusterProxy

KUBE_MINORS = sorted(
    {
        ".".join(v.split(".")[:2])
        for v in all_versions()
        if tuple(map(int, v.split(".")[:2])) >= (1, 30)
    },
    key=lambda m: tuple(map(int, m.split("."))),
)
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
KOPF_KINDS = {"ClusterKopfPeering", "KopfPeering"}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]


def _operator_args(values: dict[str, Any]) -> list[str]:
    (deployment,) = find(manifests(values), "Deployment")
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


# --- Helm: render and lint ----------------------------------------------------------------


def test_kubernetes_minors_cover_1_30_to_the_newest_schema_shipped() -> None:
    assert KUBE_MINORS[0] == "1.30"
    assert KUBE_MINORS[-1] == ".".join(latest_version().split(".")[:2])


def test_chart_renders_for_every_combination(combination: tuple[str, dict[str, Any]]) -> None:
    _, values = combination
    kinds = {o["kind"] for o in manifests(values)}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"} <= kinds


@pytest.mark.parametrize("kube_minor", ["1.30", "latest"])
def test_chart_lints_clean_in_strict_mode(
    combination: tuple[str, dict[str, Any]], kube_minor: str
) -> None:
    _, values = combination
    version = latest_version() if kube_minor == "latest" else f"{kube_minor}.0"
    report = helm.lint(
        CHART_DIR, values, strict=True, namespace=RELEASE_NAMESPACE, kube_version=f"v{version}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == []


# --- Kubernetes schemas --------------------------------------------------------------------


@pytest.mark.parametrize("kube_minor", KUBE_MINORS)
def test_every_manifest_validates_strictly_against_kubernetes(
    combination: tuple[str, dict[str, Any]], kube_minor: str
) -> None:
    _, values = combination
    for obj in manifests(values):
        if obj["kind"] in PROMETHEUS_OPERATOR_KINDS | KOPF_KINDS:
            continue  # not Kubernetes types: see test_monitoring.py and the peering tests
        kubernetes_validate.validate(obj, f"{kube_minor}.0", strict=True)


@pytest.mark.parametrize("kube_minor", KUBE_MINORS)
def test_chart_crds_validate_strictly_against_kubernetes(kube_minor: str) -> None:
    for crd in chart().crds:
        for obj in yaml.safe_load_all(crd["data"]):
            kubernetes_validate.validate(obj, f"{kube_minor}.0", strict=True)


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    (deployment,) = find(manifests(), "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


# --- CRDs ------------------------------------------------------------------------------------


def test_chart_crds_are_byte_for_byte_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART_DIR / "crds").glob("*.yaml")}
    assert top, "crds/ is empty"
    assert shipped == top


def test_helm_loads_the_crds_from_the_chart() -> None:
    names = {d["metadata"]["name"] for c in chart().crds for d in yaml.safe_load_all(c["data"])}
    assert names == {"geminiwebhooks.gemini.webhooks.dev"}


# --- values and schema ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCoutn": 2}, "replicaCoutn"),
        ({"image": {"tga": "1.0"}}, "tga"),
        ({"replicaCount": "2"}, "replicaCount"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"watchNamespaces": "team-a"}, "watchNamespaces"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        ({"metricsPort": 70000}, "metricsPort"),
        ({"operator": {"logLevel": "verbose"}}, "logLevel"),
        ({"operator": {"healInterval": -1}}, "healInterval"),
        ({"operator": {"healInterval": "1h"}}, "healInterval"),
        ({"operator": {"maxConcurrentReconciles": 0}}, "maxConcurrentReconciles"),
        ({"operator": {"maxConcurrentReconciles": 2.5}}, "maxConcurrentReconciles"),
        ({"image": {"pullPolicy": "always"}}, "pullPolicy"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"monitoring": {"serviceMonitor": {"enabled": "true"}}}, "enabled"),
        ({"monitoring": {"serviceMonitor": {"interval": "30"}}}, "interval"),
        ({"monitoring": {"grafana": {}}}, "grafana"),
        ({"monitoring": {"dashboard": {"labels": {"grafana_dashboard": 1}}}}, "grafana_dashboard"),
        ({"apiKeySecret": {"createFromInsecureValue": True}}, "insecureValue"),
        ({"apiKey": "AIza-not-a-real-key"}, "apiKey"),
        ({"resources": {"limit": {"memory": "1Gi"}}}, "limit"),
        ({"receivers": {"proxy": {"https_proxy": "http://p:3128"}}}, "https_proxy"),
        ({"receivers": {"proxy": {"noProxy": [".svc"]}}}, "noProxy"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        chart().render(values, name="gwo", namespace=RELEASE_NAMESPACE)


def test_schema_accepts_the_defaults_and_every_combination() -> None:
    for values in COMBINATIONS.values():
        chart().validate_schema(chart().merge_values(values))


def _leaf_lines(node: yaml.Node, path: str = "") -> list[tuple[str, int]]:
    """(dotted path, line) of every value a user sets; free-form maps count as one value."""
    leaves: list[tuple[str, int]] = []
    assert isinstance(node, yaml.MappingNode)
    for key, value in node.value:
        child = f"{path}.{key.value}" if path else key.value
        if isinstance(value, yaml.MappingNode) and value.value and not _free_form(child):
            leaves.extend(_leaf_lines(value, child))
        else:
            leaves.append((child, key.start_mark.line))
    return leaves


def _free_form(path: str) -> bool:
    """Values passed through to Kubernetes as they are (documented as a whole)."""
    return path in {"resources", "podSecurityContext", "securityContext", "affinity"} or (
        path.endswith((".labels", ".annotations"))
    )


def test_every_value_is_documented_where_it_is_defined() -> None:
    text = (CHART_DIR / "values.yaml").read_text()
    lines = text.splitlines()
    root = yaml.compose(text)
    undocumented = []
    for path, line in _leaf_lines(root):
        above = lines[line - 1].strip() if line > 0 else ""
        if not above.startswith("#"):
            undocumented.append(path)
    assert undocumented == []


def test_schema_describes_every_default_value() -> None:
    schema = chart().schema
    assert schema is not None
    defaults = chart().values

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
        if isinstance(value, dict) and "properties" in node:
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(child, node["properties"][key], f"{path}.{key}")

    walk(defaults, schema, "")


# --- the operator Deployment -------------------------------------------------------------


def test_operator_has_liveness_and_readiness_probes_and_resources() -> None:
    (deployment,) = find(manifests(), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


def test_every_pod_meets_the_restricted_pod_security_standard(
    combination: tuple[str, dict[str, Any]],
) -> None:
    _, values = combination
    pods = [o for o in manifests(values) if o["kind"] in {"Deployment", "Pod"}]
    assert pods
    for obj in pods:
        spec = _pod_spec(obj)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, obj["metadata"]["name"]
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert not sc["capabilities"].get("add")
            assert sc.get("readOnlyRootFilesystem") is True
            assert sc.get("privileged") is not True


def _lease_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        rule
        for role in find(objects, "Role")
        if role["metadata"]["name"].endswith("-leader-election")
        for rule in role["rules"]
    ]


def test_one_replica_elects_itself_by_a_lease_so_a_rolling_update_never_overlaps() -> None:
    objects = manifests()
    (deployment,) = find(objects, "Deployment")
    assert "strategy" not in deployment["spec"]  # a RollingUpdate: the Lease keeps one acting
    args = _operator_args({})
    assert "--leader-elect" in args
    assert "--leader-election-id=gwo-gemini-webhook-operator" in args
    assert {"--lease-duration=15", "--renew-deadline=10", "--retry-period=2"} <= set(args)
    assert "command" not in deployment["spec"]["template"]["spec"]["containers"][0]
    assert find(objects, "PodDisruptionBudget") == []


def test_without_leader_election_one_replica_never_overlaps() -> None:
    values = {"leaderElection": {"enabled": False}}
    objects = manifests(values)
    (deployment,) = find(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(a.startswith("--leader-elect") for a in _operator_args(values))
    assert _lease_rules(objects) == [] and find(objects, "Lease") == []


def test_several_replicas_without_leader_election_are_refused() -> None:
    with pytest.raises(Exception, match=r"leaderElection\.enabled"):
        manifests({"replicaCount": 2, "leaderElection": {"enabled": False}})


def test_several_replicas_elect_a_leader_and_keep_one_through_disruptions() -> None:
    values = COMBINATIONS["ha"]
    objects = manifests(values)
    (deployment,) = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert "strategy" not in deployment["spec"]
    assert "--leader-elect" in _operator_args(values)
    (pdb,) = find(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert find(objects, "ClusterKopfPeering") == find(objects, "KopfPeering") == []


def test_the_lease_rules_name_the_one_lease_in_the_release_namespace() -> None:
    objects = manifests(COMBINATIONS["namespaced"])
    (role,) = [r for r in find(objects, "Role") if r["metadata"]["name"].endswith("-election")]
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert _lease_rules(objects) == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["gwo-gemini-webhook-operator"],
            "verbs": ["get", "patch"],
        },
    ]
    # The chart makes the Lease (helm uninstall removes it): the operator never creates one.
    (lease,) = find(objects, "Lease")
    assert lease["metadata"] == {
        **lease["metadata"],
        "name": "gwo-gemini-webhook-operator",
        "namespace": RELEASE_NAMESPACE,
    }
    assert lease["spec"] == {}


def test_default_image_follows_the_chart_app_version() -> None:
    (deployment,) = find(manifests(), "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{chart().values['image']['repository']}:{chart().metadata['appVersion']}"


def test_a_digest_pins_the_image() -> None:
    values = {"image": {"digest": "sha256:" + "a" * 64}}
    (deployment,) = find(manifests(values), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        "@sha256:" + "a" * 64
    )


# --- scope and RBAC --------------------------------------------------------------------------


def test_cluster_wide_by_default() -> None:
    objects = manifests()
    assert not [a for a in _operator_args({}) if a.startswith("--namespace")]
    (cluster_role,) = find(objects, "ClusterRole")
    resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert {"geminiwebhooks", "secrets"} <= resources
    # The one Role is the leader Lease's, in the operator's own namespace.
    assert [r["metadata"]["name"] for r in find(objects, "Role")] == [
        "gwo-gemini-webhook-operator-leader-election"
    ]


def test_watch_namespaces_limits_the_operator_and_its_access_to_them() -> None:
    values = COMBINATIONS["namespaced"]
    objects = manifests(values)
    args = _operator_args(values)
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    (cluster_role,) = find(objects, "ClusterRole")
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert "secrets" not in cluster_resources and "geminiwebhooks" not in cluster_resources
    roles = {r["metadata"]["namespace"]: r for r in find(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in find(objects, "RoleBinding")}
    # One in each watched namespace, and the leader Lease's in the operator's own.
    assert set(roles) == set(bindings) == {"team-a", "team-b", RELEASE_NAMESPACE}
    for binding in bindings.values():
        assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE


def test_no_rule_grants_wildcards() -> None:
    for values in COMBINATIONS.values():
        for role in find(manifests(values), "ClusterRole") + find(manifests(values), "Role"):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], (role["metadata"]["name"], rule)


def test_rbac_can_be_left_to_the_user() -> None:
    objects = manifests({"rbac": {"create": False}})
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & {
        o["kind"] for o in objects
    }


def test_existing_service_account_must_be_named() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"serviceAccount\.name is required"):
        chart().render({"serviceAccount": {"create": False}}, name="gwo", namespace="x")


# --- the API key -----------------------------------------------------------------------------


def test_api_key_secret_is_not_created_by_default() -> None:
    assert find(manifests(), "Secret") == []


def test_api_key_secret_from_a_plain_value_only_with_the_insecure_flag() -> None:
    values = {"apiKeySecret": {"createFromInsecureValue": True, "insecureValue": "test-key-1"}}
    (secret,) = find(manifests(values), "Secret")
    assert secret["metadata"]["name"] == "gemini-api-key"
    assert base64.b64decode(secret["data"]["api-key"]) == b"test-key-1"
    plain_only = {"apiKeySecret": {"insecureValue": "test-key-2"}}
    assert find(manifests(plain_only), "Secret") == []
    assert "test-key-2" not in "".join(render(plain_only).values())


# --- NOTES and helm test ----------------------------------------------------------------------


def test_notes_tell_the_user_how_to_create_the_api_key_secret_and_a_webhook() -> None:
    text = notes()
    assert "kubectl -n <namespace> create secret generic gemini-api-key" in text
    assert "kind: GeminiWebhook" in text
    assert "helm test gwo" in text


def test_notes_follow_the_values() -> None:
    text = notes(COMBINATIONS["everything"])
    assert "watching namespaces: team-a" in text
    assert "created from a plain value" in text
    assert "PrometheusRule" in text and "ConfigMap" in text


def test_helm_test_hook_checks_the_operator_health_and_metrics() -> None:
    (pod,) = find(manifests(), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "gwo-gemini-webhook-operator-metrics" in script and RELEASE_NAMESPACE in script
    assert "service_url(" in script and 'cluster_domain="cluster.local"' in script
    compile(script, "helm-test", "exec")


@pytest.mark.parametrize(
    ("metrics", "passes"),
    [(b"gemini_webhook_operator_reconciles_total 0\n", True), (b"other_metric 1\n", False)],
)
def test_helm_test_hook_reaches_the_service_by_its_cluster_name(
    cluster_proxy: ClusterProxy, metrics: bytes, passes: bool
) -> None:
    """The hook's script, run as the node runs it: the Service's cluster name is served,
    through the cluster proxy, by a test double of the operator's health and metrics."""
    import http.server
    import subprocess
    import sys
    import threading

    seen: list[str] = []

    class OperatorDouble(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = metrics if self.path == "/metrics" else b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OperatorDouble)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (pod,) = find(manifests(), "Pod")
        script = pod["spec"]["containers"][0]["args"][0]
        address = f"127.0.0.1:{server.server_address[1]}"
        name = "gwo-gemini-webhook-operator-metrics"
        for port in (8080, 9090):
            cluster_proxy.serve_service(name, RELEASE_NAMESPACE, port, address)
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={"PATH": "/usr/bin:/bin", **cluster_proxy.environment()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["/healthz", "/metrics"]
    assert (result.returncode == 0) is passes, result.stderr
    if not passes:
        assert "lack gemini_webhook_operator_reconciles_total" in result.stderr


def test_helm_test_hook_tries_a_refused_connection_again(cluster_proxy: ClusterProxy) -> None:
    """A new Pod can be refused until the NetworkPolicy implementation admits its address
    (kube-router rejects it meanwhile): the hook connects again rather than fail at once."""
    import http.server
    import socket
    import subprocess
    import sys
    import threading

    class OperatorDouble(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"gemini_webhook_operator_reconciles_total 0\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    with socket.socket() as probe:  # a port nothing listens on yet: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (pod,) = find(manifests(), "Pod")
    script = pod["spec"]["containers"][0]["args"][0]
    name = "gwo-gemini-webhook-operator-metrics"
    for service_port in (8080, 9090):
        cluster_proxy.serve_service(name, RELEASE_NAMESPACE, service_port, f"127.0.0.1:{port}")
    hook = subprocess.Popen(
        [sys.executable, "-c", script],
        env={"PATH": "/usr/bin:/bin", **cluster_proxy.environment()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)  # the hook meets a refusal first
        assert hook.poll() is None, hook.communicate()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), OperatorDouble)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            out, err = hook.communicate(timeout=60)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        hook.kill()
    assert hook.returncode == 0, err
    assert "operator healthy" in out


def test_helm_test_hook_can_be_switched_off() -> None:
    assert find(manifests({"tests": {"enabled": False}}), "Pod") == []


def test_chart_package_contains_the_rules_and_the_dashboard(tmp_path: Path) -> None:
    archive = chart().save(tmp_path)
    with helm.Chart.load(archive) as packaged:
        names = {f["name"] for f in packaged.files}
    assert {"files/prometheus-rules.yaml", "files/dashboard.json"} <= names


def test_operator_deploys_receivers_with_the_charts_image() -> None:
    values = {"image": {"repository": "registry.example.com/gwo", "tag": "1.2.3"}}
    assert "--receiver-image=registry.example.com/gwo:1.2.3" in _operator_args(values)


def test_operator_serves_the_probes_and_metrics_ports_the_pod_declares() -> None:
    args = _operator_args({"metricsPort": 9100, "healthPort": 8081})
    assert "--liveness=http://0.0.0.0:8081/healthz" in args
    assert "--metrics-port=9100" in args


def test_operator_arguments_parse_with_the_real_cli(
    combination: tuple[str, dict[str, Any]],
) -> None:
    from gemini_webhook_operator import cli
    from gemini_webhooks.cli import build_parser

    _, values = combination
    parsed = build_parser().parse_args(_operator_args(values))
    assert parsed.command == "operator"
    with patch.dict(os.environ, {"POD_NAMESPACE": RELEASE_NAMESPACE}):
        config = cli.config_from_args(parsed)  # the CLI's own checks pass
    election = config.leader_election
    assert election is not None and election.namespace == RELEASE_NAMESPACE


def test_extra_arguments_reach_the_operator_verbatim() -> None:
    values = {"operator": {"extraArgs": ["--api-rate=5", "--context=a: b"]}}
    assert _operator_args(values)[-2:] == ["--api-rate=5", "--context=a: b"]


def test_the_heal_rate_limit_is_passed_to_the_operator() -> None:
    assert "--heal-interval=3600" in _operator_args({})
    assert "--heal-interval=600" in _operator_args({"operator": {"healInterval": 600}})


def test_the_reconcile_concurrency_bound_is_passed_to_the_operator() -> None:
    from gemini_webhook_operator.reconcile_context import DEFAULT_MAX_CONCURRENT_RECONCILES

    default = f"--max-concurrent-reconciles={DEFAULT_MAX_CONCURRENT_RECONCILES}"
    assert default in _operator_args({})
    limited = _operator_args({"operator": {"maxConcurrentReconciles": 32}})
    assert "--max-concurrent-reconciles=32" in limited


def test_without_a_receiver_proxy_the_operator_gets_no_proxy_flag() -> None:
    assert not [arg for arg in _operator_args({}) if "proxy" in arg]


def test_the_receivers_proxy_reaches_the_operator_as_its_flags() -> None:
    from gemini_webhook_operator import cli
    from gemini_webhooks.cli import build_parser

    proxy = {
        "httpProxy": "http://proxy.corp.example:3128",
        "httpsProxy": "http://proxy.corp.example:3129",
        "noProxy": ".svc,.cluster.local,10.244.0.0/16",
    }
    args = _operator_args({"receivers": {"proxy": proxy}})
    assert "--receiver-http-proxy=http://proxy.corp.example:3128" in args
    assert "--receiver-https-proxy=http://proxy.corp.example:3129" in args
    assert "--receiver-no-proxy=.svc,.cluster.local,10.244.0.0/16" in args
    with patch.dict(os.environ, {"POD_NAMESPACE": RELEASE_NAMESPACE}):
        config = cli.config_from_args(build_parser().parse_args(args))
    assert config.receiver.proxy.environment() == {
        "HTTP_PROXY": proxy["httpProxy"],
        "HTTPS_PROXY": proxy["httpsProxy"],
        "NO_PROXY": proxy["noProxy"],
    }
