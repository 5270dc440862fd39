"""The real kubectl against the sandbox (fidelity points 4, 5, 7, 8 as users see them)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.kubesandbox.conftest import WIDGET_CRD, Api, KubectlRun, unique

pytestmark = pytest.mark.real_component


def _widget_yaml(name: str, **spec: object) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "test.kubesandbox.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": 3, **spec},
        }
    )


@pytest.fixture()
def kubectl_widgets(kubectl: KubectlRun) -> Iterator[KubectlRun]:
    kubectl("apply", "-f", "-", input=yaml.safe_dump(WIDGET_CRD))
    kubectl(
        "wait", "--for=condition=Established", "crd/widgets.test.kubesandbox.dev", "--timeout=30s"
    )
    yield kubectl
    # A real API server deletes the CRD's objects first: wait, so the next test starts clean.
    kubectl("delete", "crd/widgets.test.kubesandbox.dev", "--wait=true", "--timeout=60s")


def test_kubectl_talks_to_the_server(kubectl: KubectlRun) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["major"] == "1"
    namespaces = kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in namespaces


def test_kubectl_applies_a_crd_and_custom_resources(kubectl_widgets: KubectlRun) -> None:
    name = unique("w")
    out = kubectl_widgets("apply", "-f", "-", input=_widget_yaml(name)).stdout
    assert f"widget.test.kubesandbox.dev/{name} created" in out
    again = kubectl_widgets("apply", "-f", "-", input=_widget_yaml(name, size=4)).stdout
    assert "configured" in again
    assert kubectl_widgets("get", "widget", name, "-o", "jsonpath={.spec.size}").stdout == "4"


def test_kubectl_get_shows_printer_columns_and_works_by_short_name(
    kubectl_widgets: KubectlRun,
) -> None:
    name = unique("w")
    kubectl_widgets("apply", "-f", "-", input=_widget_yaml(name, size=7))
    out = kubectl_widgets("get", "wg", name).stdout.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "READY", "AGE"]
    assert out[1].split()[:2] == [name, "7"]
    assert name in kubectl_widgets("get", "gadgets").stdout  # by category


def test_kubectl_reports_an_invalid_resource_with_the_field_named(
    kubectl_widgets: KubectlRun,
) -> None:
    result = kubectl_widgets(
        "apply", "-f", "-", input=_widget_yaml(unique("w"), size=99), check=False
    )
    assert result.returncode != 0
    assert "spec.size" in result.stderr and "is invalid" in result.stderr


def test_kubectl_strict_validation_rejects_an_unknown_field(kubectl_widgets: KubectlRun) -> None:
    result = kubectl_widgets(
        "apply",
        "--validate=strict",
        "-f",
        "-",
        input=_widget_yaml(unique("w"), bogus=1),
        check=False,
    )
    assert result.returncode != 0
    assert 'unknown field "spec.bogus"' in result.stderr


def test_kubectl_status_subresource_semantics(kubectl_widgets: KubectlRun) -> None:
    name = unique("w")
    kubectl_widgets("apply", "-f", "-", input=_widget_yaml(name))
    kubectl_widgets(
        "patch", "widget", name, "--type=merge", "-p", '{"status": {"phase": "ignored"}}'
    )
    assert kubectl_widgets("get", "widget", name, "-o", "jsonpath={.status}").stdout == ""
    kubectl_widgets(
        "patch",
        "widget",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "set"}, "spec": {"size": 9}}',
    )
    obj = json.loads(kubectl_widgets("get", "widget", name, "-o", "json").stdout)
    assert obj["status"] == {"phase": "set"} and obj["spec"]["size"] == 3


def test_kubectl_replace_with_a_stale_resource_version_is_refused(
    kubectl_widgets: KubectlRun,
) -> None:
    name = unique("w")
    kubectl_widgets("apply", "-f", "-", input=_widget_yaml(name))
    stale = kubectl_widgets("get", "widget", name, "-o", "json").stdout
    kubectl_widgets("patch", "widget", name, "--type=merge", "-p", '{"spec": {"size": 5}}')
    result = kubectl_widgets("replace", "-f", "-", input=stale, check=False)
    assert result.returncode != 0 and "the object has been modified" in result.stderr


def test_kubectl_deletion_is_held_by_a_finalizer_until_it_is_removed(kubectl: KubectlRun) -> None:
    name = unique("cm")
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "finalizers": ["example.com/hold"]},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    kubectl("delete", "configmap", name, "--wait=false")
    held = json.loads(kubectl("get", "configmap", name, "-o", "json").stdout)
    assert held["metadata"]["deletionTimestamp"]
    kubectl(
        "patch",
        "configmap",
        name,
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/metadata/finalizers"}]',
    )
    kubectl("wait", "--for=delete", f"configmap/{name}", "--timeout=30s")


def test_kubectl_delete_collects_owned_objects(kubectl: KubectlRun) -> None:
    owner, child = unique("owner"), unique("child")
    kubectl("create", "configmap", owner)
    uid = kubectl("get", "configmap", owner, "-o", "jsonpath={.metadata.uid}").stdout
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": child,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid}
            ],
        },
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    kubectl("delete", "configmap", owner)
    kubectl("wait", "--for=delete", f"configmap/{child}", "--timeout=60s")


def test_kubectl_delete_with_foreground_cascade(kubectl: KubectlRun) -> None:
    owner, child = unique("owner"), unique("child")
    kubectl("create", "configmap", owner)
    uid = kubectl("get", "configmap", owner, "-o", "jsonpath={.metadata.uid}").stdout
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": child,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner,
                    "uid": uid,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    kubectl("delete", "configmap", owner, "--cascade=foreground", "--timeout=60s")
    assert kubectl("get", "configmap", child, check=False).returncode != 0


def test_kubectl_waits_for_a_condition(kubectl_widgets: KubectlRun) -> None:
    name = unique("w")
    kubectl_widgets("apply", "-f", "-", input=_widget_yaml(name))

    def make_ready() -> None:
        time.sleep(0.5)
        kubectl_widgets(
            "patch",
            "widget",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"conditions": [{"type": "Ready", "status": "True"}]}}',
        )

    thread = threading.Thread(target=make_ready)
    thread.start()
    result = kubectl_widgets("wait", "--for=condition=Ready", f"widget/{name}", "--timeout=30s")
    thread.join()
    assert "condition met" in result.stdout


def test_kubectl_waits_for_deletion(kubectl: KubectlRun) -> None:
    name = unique("cm")
    kubectl("create", "configmap", name)
    thread = threading.Thread(
        target=lambda: (time.sleep(0.5), kubectl("delete", "configmap", name))
    )
    thread.start()
    kubectl("wait", "--for=delete", f"configmap/{name}", "--timeout=30s")
    thread.join()


def test_kubectl_creates_secrets_configmaps_and_deployments(kubectl: KubectlRun) -> None:
    secret, config, deploy = unique("s"), unique("cm"), unique("d")
    kubectl("create", "secret", "generic", secret, "--from-literal=token=hunter2")
    kubectl("create", "configmap", config, "--from-literal=a=1", "--from-literal=b=2")
    kubectl("create", "deployment", deploy, "--image=example.com/app:1", "--replicas=2")
    assert kubectl("get", "secret", secret, "-o", "jsonpath={.data.token}").stdout == "aHVudGVyMg=="
    rows = kubectl("get", "configmap", config).stdout.splitlines()
    assert rows[0].split() == ["NAME", "DATA", "AGE"] and rows[1].split()[:2] == [config, "2"]
    rows = kubectl("get", "deployment", deploy).stdout.splitlines()
    assert rows[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    kubectl(
        "set",
        "image",
        f"deployment/{deploy}",
        f"{deploy.split('-')[0]}=example.com/app:2",
        check=False,
    )
    kubectl("scale", f"deployment/{deploy}", "--replicas=3")
    assert kubectl("get", "deployment", deploy, "-o", "jsonpath={.spec.replicas}").stdout == "3"


def test_kubectl_applies_a_deployment_twice_with_strategic_merge(kubectl: KubectlRun) -> None:
    name = unique("d")
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example.com/app:1",
                            "env": [{"name": "A", "value": "1"}],
                        }
                    ]
                },
            },
        },
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/app:2"
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "B", "value": "2"}]
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    container = json.loads(kubectl("get", "deployment", name, "-o", "json").stdout)["spec"][
        "template"
    ]["spec"]["containers"][0]
    assert container["image"] == "example.com/app:2"
    assert container["env"] == [{"name": "B", "value": "2"}]


def test_kubectl_lists_events_of_both_apis(kubectl: KubectlRun) -> None:
    name = unique("ev")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": "default"},
        "reason": "Tested",
        "message": "hello from a test",
        "type": "Normal",
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(event))
    assert "hello from a test" in kubectl("get", "events").stdout
    # Another name: on kube-apiserver both APIs serve the same objects (converted), so the
    # same name would update the first Event; the sandbox keeps them apart (docs).
    new_name = unique("ev")
    new_event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": new_name},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "t",
        "reportingInstance": "t",
        "action": "Test",
        "reason": "Tested",
        "type": "Normal",
        "regarding": {"kind": "ConfigMap", "name": "x", "namespace": "default"},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(new_event))
    assert new_name in kubectl("get", "events.events.k8s.io", "-o", "name").stdout


def test_kubectl_explains_a_custom_resource(kubectl_widgets: KubectlRun) -> None:
    # kube-apiserver publishes a new CRD's OpenAPI a moment after it is Established.
    deadline = time.monotonic() + 30
    while (result := kubectl_widgets("explain", "widget.spec", check=False)).returncode != 0:
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.5)
    out = result.stdout
    assert "KIND:       Widget" in out and "size" in out and "color" in out


def test_kubectl_lists_api_resources(kubectl_widgets: KubectlRun, api: Api) -> None:
    api.install_kopf_peering()
    out = kubectl_widgets("api-resources").stdout
    for expected in (
        "widgets",
        "deployments",
        "leases",
        "clusterkopfpeerings",
        "poddisruptionbudgets",
    ):
        assert expected in out


def test_kubectl_server_side_apply_creates_and_updates(kubectl_widgets: KubectlRun) -> None:
    name = unique("w")
    kubectl_widgets("apply", "--server-side", "-f", "-", input=_widget_yaml(name))
    kubectl_widgets("apply", "--server-side", "-f", "-", input=_widget_yaml(name, size=6))
    assert kubectl_widgets("get", "widget", name, "-o", "jsonpath={.spec.size}").stdout == "6"


def test_kubectl_get_watch_streams_rows(kubectl: KubectlRun, kube) -> None:  # type: ignore[no-untyped-def]
    name = unique("cm")
    kubectl("create", "configmap", name)
    env = kube.kubectl_env(kube.kubeconfig.parent / "watch-cache")
    from tests.fixtures.kube import KUBECTL

    proc = subprocess.run(
        [KUBECTL, "get", "configmap", name, "--watch", "--request-timeout=2s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert name in proc.stdout


REPO = Path(__file__).resolve().parents[2]


def test_kubectl_applies_the_project_crds_and_examples(kubectl: KubectlRun) -> None:
    kubectl("apply", "-f", str(REPO / "crds"))
    for crd in yaml.safe_load_all(
        (REPO / "crds" / "geminiwebhooks.gemini.webhooks.dev.yaml").read_text()
    ):
        if crd and crd.get("kind") == "CustomResourceDefinition":
            kubectl(
                "wait",
                "--for=condition=Established",
                f"crd/{crd['metadata']['name']}",
                "--timeout=30s",
            )
    webhooks = {
        f"geminiwebhook.gemini.webhooks.dev/{doc['metadata']['name']}"
        for path in sorted((REPO / "examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "GeminiWebhook"
    }
    assert webhooks
    kubectl("apply", "-f", str(REPO / "examples"))
    listed = set(kubectl("get", "geminiwebhooks", "-A", "-o", "name").stdout.split())
    assert webhooks <= listed
    # What users of the local sandbox type: the CRD's printer columns, as a real server shows.
    columns = [
        c["name"].upper()
        for crd in yaml.safe_load_all(
            (REPO / "crds" / "geminiwebhooks.gemini.webhooks.dev.yaml").read_text()
        )
        if crd and crd.get("kind") == "CustomResourceDefinition"
        for version in crd["spec"]["versions"]
        if version.get("storage")
        for c in version.get("additionalPrinterColumns", [])
        if not c.get("priority")
    ]
    header = kubectl("get", "geminiwebhooks", "-A").stdout.splitlines()[0]
    assert header.split() == " ".join(["NAMESPACE", "NAME", *columns]).split()


def test_kubectl_create_generators_post_protobuf_the_sandbox_reads(kubectl: KubectlRun) -> None:
    ns, sa, role = unique("ns"), unique("sa"), unique("role")
    kubectl("create", "namespace", ns)
    kubectl("create", "serviceaccount", sa, "-n", ns)
    kubectl("create", "role", role, "-n", ns, "--verb=get,watch", "--resource=secrets")
    kubectl(
        "create", "rolebinding", role, "-n", ns, f"--role={role}", f"--serviceaccount={ns}:{sa}"
    )
    kubectl("create", "service", "clusterip", sa, "-n", ns, "--tcp=80:8080")
    rules = json.loads(kubectl("get", "role", role, "-n", ns, "-o", "jsonpath={.rules}").stdout)
    assert rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch"]}]
    binding = json.loads(kubectl("get", "rolebinding", role, "-n", ns, "-o", "json").stdout)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role,
    }
    port = json.loads(
        kubectl("get", "service", sa, "-n", ns, "-o", "jsonpath={.spec.ports[0]}").stdout
    )
    assert (port["port"], port["targetPort"], port["protocol"]) == (80, 8080, "TCP")


def test_kubectl_strict_validation_rejects_an_unknown_field_of_a_built_in(
    kubectl: KubectlRun,
) -> None:
    name = unique("d")
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "example.com/app:1", "imagePullPolicyy": "Always"}
                    ]
                },
            },
        },
    }
    result = kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.template.spec.containers[0].imagePullPolicyy"' in result.stderr


@pytest.mark.sandbox_only
def test_kubectl_auth_can_i_says_yes_because_rbac_is_not_enforced(
    kube_sandbox, kubectl: KubectlRun
) -> None:  # type: ignore[no-untyped-def]
    assert kubectl("auth", "can-i", "create", "secrets", "-n", "default").stdout.strip() == "yes"


@pytest.mark.sandbox_only
def test_applying_kopf_peering_crds_over_the_preinstalled_ones_is_quiet(
    kube_sandbox, kubectl: KubectlRun
) -> None:  # type: ignore[no-untyped-def]
    peering = REPO / "gemini_webhooks" / "kubesandbox" / "kopf-peering.yaml"
    result = kubectl("apply", "-f", str(peering))
    assert "Warning" not in result.stderr


def test_kubectl_explains_a_built_in_type(kubectl: KubectlRun) -> None:
    out = kubectl("explain", "deployment.spec.template.spec.containers.image").stdout
    assert "KIND:       Deployment" in out and "Container image name" in out


def test_kubectl_edit_label_and_annotate_a_custom_resource(
    kubectl_widgets: KubectlRun, kube, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    name = unique("w")
    kubectl_widgets("apply", "-f", "-", input=_widget_yaml(name))
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/size: 3/size: 8/' \"$1\"\n")
    editor.chmod(0o755)
    env = {**kube.kubectl_env(tmp_path / "cache"), "KUBE_EDITOR": str(editor)}
    from tests.fixtures.kube import KUBECTL

    subprocess.run(
        [KUBECTL, "edit", "widget", name], env=env, check=True, capture_output=True, timeout=60
    )
    kubectl_widgets("label", "widget", name, "tier=gold")
    kubectl_widgets("annotate", "widget", name, "note=edited")
    obj = json.loads(kubectl_widgets("get", "widget", "-l", "tier=gold", "-o", "json").stdout)[
        "items"
    ]
    assert [
        (o["metadata"]["name"], o["spec"]["size"], o["metadata"]["annotations"]["note"])
        for o in obj
    ] == [(name, 8, "edited")]


def _list_of(*items: dict[str, object]) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(items)})


def test_kubectl_applies_a_list_document(kubectl_widgets: KubectlRun) -> None:
    config, widget = unique("cm"), unique("w")
    document = _list_of(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": config}, "data": {"a": "1"}},
        yaml.safe_load(_widget_yaml(widget)),
    )
    out = kubectl_widgets("apply", "-f", "-", input=document).stdout
    assert f"configmap/{config} created" in out
    assert f"widget.test.kubesandbox.dev/{widget} created" in out
    again = kubectl_widgets("apply", "-f", "-", input=document).stdout
    assert f"configmap/{config} unchanged" in again
    assert f"widget.test.kubesandbox.dev/{widget} unchanged" in again


def test_kubectl_validates_the_items_of_a_list_against_the_openapi_v2_schema(
    kubectl: KubectlRun,
) -> None:
    # kubectl checks List items itself, with /openapi/v2; the message is kubectl's own.
    name = unique("cm")
    document = _list_of(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "bogus": 1}
    )
    result = kubectl("apply", "-f", "-", input=document, check=False)
    assert result.returncode != 0
    assert 'unknown field "bogus" in io.k8s.api.core.v1.ConfigMap' in result.stderr
    assert kubectl("get", "configmap", name, check=False).returncode != 0


def _applied_twice(kubectl: KubectlRun, manifest: dict[str, object]) -> tuple[str, dict, dict]:  # type: ignore[type-arg]
    kind, name = str(manifest["kind"]).lower(), manifest["metadata"]["name"]  # type: ignore[index]
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    before = json.loads(kubectl("get", kind, name, "-o", "json").stdout)["metadata"]
    out = kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest)).stdout
    after = json.loads(kubectl("get", kind, name, "-o", "json").stdout)["metadata"]
    return out, before, after


def test_kubectl_reapplying_unchanged_built_ins_reports_unchanged(kubectl: KubectlRun) -> None:
    name = unique("r")
    manifests = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {"a": "MQ=="},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "example.com/app:1",
                                "env": [{"name": "A", "value": "1"}],
                                "ports": [{"containerPort": 8080}],
                            }
                        ]
                    },
                },
            },
        },
    ]
    for manifest in manifests:
        out, before, after = _applied_twice(kubectl, manifest)
        assert "unchanged" in out, out
        if manifest["kind"] == "Deployment":
            # On a real cluster the Deployment controller writes its status meanwhile (a new
            # resourceVersion, not a new generation): what apply would change is the spec.
            assert after["generation"] == before["generation"]
            assert after["annotations"] == before["annotations"]
        else:
            assert after["resourceVersion"] == before["resourceVersion"]


def test_kubectl_reapplying_an_unchanged_pod_disruption_budget_changes_nothing(
    kubectl: KubectlRun,
) -> None:
    # PodDisruptionBudgetSpec.selector has patchStrategy=replace, so kubectl always puts it
    # in its patch and prints "configured" (as against a real cluster: the wording is
    # kubectl's); the server must see a no-op: same resourceVersion and generation.
    name = unique("pdb")
    manifest = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": name}}},
    }
    out, before, after = _applied_twice(kubectl, manifest)
    assert f"poddisruptionbudget.policy/{name}" in out
    assert (after["resourceVersion"], after["generation"]) == (
        before["resourceVersion"],
        before["generation"],
    )
    manifest["spec"]["minAvailable"] = 2  # type: ignore[index]
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    changed = json.loads(kubectl("get", "pdb", name, "-o", "json").stdout)
    assert changed["spec"]["minAvailable"] == 2
    assert changed["metadata"]["generation"] == before["generation"] + 1


def test_kubectl_uses_the_openapi_v3_schema_for_strategic_merge(kubectl: KubectlRun) -> None:
    # As on a real server, built-in PATCH operations accept strategic merge patches, so
    # kubectl computes its patch from the served schema (and asks for no OpenAPI v2).
    name = unique("pdb")
    manifest = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": name}}},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    result = kubectl("apply", "-v=6", "-f", "-", input=yaml.safe_dump(manifest))
    assert "does not support strategic merge patch" not in result.stderr
    assert "/openapi/v2" not in result.stderr


def test_kubectl_creates_namespaces_and_pod_disruption_budgets_from_protobuf(
    kubectl: KubectlRun,
) -> None:
    ns, budget = unique("ns"), unique("pdb")
    assert f"namespace/{ns} created" in kubectl("create", "namespace", ns).stdout
    kubectl("create", "pdb", budget, "-n", ns, "--selector=app=x", "--min-available=50%")
    spec = json.loads(kubectl("get", "pdb", budget, "-n", ns, "-o", "jsonpath={.spec}").stdout)
    assert spec == {"minAvailable": "50%", "selector": {"matchLabels": {"app": "x"}}}
    header = kubectl("get", "pdb", "-n", ns).stdout.splitlines()[0].split()
    assert header == [
        "NAME",
        "MIN",
        "AVAILABLE",
        "MAX",
        "UNAVAILABLE",
        "ALLOWED",
        "DISRUPTIONS",
        "AGE",
    ]
    kubectl("delete", "namespace", ns, "--wait=false")
    refused = kubectl("create", "namespace", "Not_A_Label", check=False)
    assert refused.returncode != 0
    assert (
        'metadata.name: Invalid value: "Not_A_Label": a lowercase RFC 1123 label must consist '
        "of lower case alphanumeric characters or '-'"
    ) in refused.stderr
