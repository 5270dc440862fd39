"""`kubectl gemini`, the installed executable, against the running operator and the
emulator — on the Kubernetes API sandbox and (GWO_KUBE=real) the real control plane.
No subcommand ever prints a signing secret."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import MANAGED_BY, SigningSecrets, truncate_secret
from tests.fixtures.kube import KUBECTL
from tests.kubectl.plugin import Result, executable, run
from tests.operator.harness import Cluster, is_ready, operator_running, resource, synced_reason

pytestmark = pytest.mark.real_component


def _no_secret(result: Result, held: SigningSecrets | None) -> None:
    assert held is not None
    for s in held.secrets:
        assert s.secret not in result.all
        assert s.secret.removeprefix("whsec_") not in result.all
    assert "Traceback" not in result.all


async def _ready(gemini: Cluster, emulator: Any, name: str, **spec: Any) -> dict[str, Any]:
    await gemini.apply(resource(name, emulator.endpoint().url, emulator.base_url, **spec))
    return await gemini.wait_for(name, is_ready, timeout=60)


async def test_status_shows_conditions_remote_secrets_and_events_never_a_secret(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    async with operator_running(kube):
        ready = await _ready(gemini, emulator, "plugin-status")
        await gemini.wait_event("plugin-status", {"Created"})
        held = await gemini.signing_secrets("plugin-status")
        assert held is not None and held.current is not None

        result = await run(kube, "status", "plugin-status", "-o", "json")
        assert result.code == 0, result.err
        report = json.loads(result.out)
        text = await run(kube, "status", "plugin-status")
        yaml_out = await run(kube, "-o", "yaml", "status", "plugin-status")

    assert {c["type"]: c["status"] for c in report["conditions"]}["Ready"] == "True"
    assert report["remote"] == {
        "webhookId": ready["status"]["webhookId"],
        "state": "enabled",
        "url": ready["status"]["url"],
    }
    assert [s["fingerprint"] for s in report["signingSecret"]["secrets"]] == [
        truncate_secret(held.current.secret)
    ]
    assert report["signingSecret"]["secrets"][0]["role"] == "current"
    assert "Created" in [e["reason"] for e in report["events"]["items"]]
    assert yaml.safe_load(yaml_out.out) == report | {
        "events": yaml.safe_load(yaml_out.out)["events"]
    }
    assert text.code == 0
    assert text.out.startswith(f"{crd.KIND} default/plugin-status")
    assert "Ready: True" in text.out and truncate_secret(held.current.secret) in text.out
    assert "├─ Signing Secret plugin-status-signing-secret" in text.out
    for output in (result, text, yaml_out):
        _no_secret(output, held)


async def test_status_says_what_to_do_next_for_an_unhealthy_condition(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    body = resource("plugin-keyless", emulator.endpoint().url, emulator.base_url)
    body["spec"]["apiKeySecretRef"] = {"name": "no-such-secret"}
    async with operator_running(kube):
        await gemini.apply(body)
        await gemini.wait_for(
            "plugin-keyless",
            lambda o: any(
                c.get("reason") == "APIKeySecretMissing"
                for c in (o.get("status") or {}).get("conditions") or []
            ),
            timeout=60,
        )
        result = await run(kube, "status", "plugin-keyless", "-o", "json")
    assert result.code == 0, result.err
    steps = json.loads(result.out)["nextSteps"]
    (step,) = [s for s in steps if s["condition"] == "Synced=False"]
    assert step["reason"] == "APIKeySecretMissing"
    assert "create the API-key Secret" in step["do"]


async def test_rotate_waits_for_the_rotation_and_prints_the_new_fingerprint(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    async with operator_running(kube):
        await _ready(gemini, emulator, "plugin-rotate")
        before = await gemini.signing_secrets("plugin-rotate")
        result = await run(kube, "rotate", "plugin-rotate", "--timeout", "90s", "-o", "json")
        after = await gemini.signing_secrets("plugin-rotate")
        stored = await gemini.get("plugin-rotate")
    assert result.code == 0, result.err
    assert before is not None and after is not None and after.current is not None
    assert after.current.secret != before.secrets[0].secret
    report = json.loads(result.out)
    assert report["reason"] == "RequestedByAnnotation"
    assert report["rotationTime"] == stored["status"]["lastRotationTime"]
    assert report["secrets"][0]["fingerprint"] == truncate_secret(after.current.secret)
    assert report["revocation"] == "Grace" and len(report["secrets"]) == 2
    assert crd.ANNOTATION_ROTATE not in (stored["metadata"].get("annotations") or {})
    _no_secret(result, SigningSecrets(after.webhook_id, before.secrets + after.secrets))


async def test_rotate_times_out_with_the_reason_when_the_operator_cannot_rotate(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    # No operator runs: the request stays, and the plugin says so within its timeout.
    await gemini.apply(resource("plugin-idle", emulator.endpoint().url, emulator.base_url))
    result = await run(kube, "rotate", "plugin-idle", "--timeout", "2")
    assert result.code == 1
    assert "did not rotate plugin-idle within 2 s" in result.err
    assert "Traceback" not in result.all


async def test_pause_and_resume_set_the_field_and_wait_for_the_operator(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    async with operator_running(kube):
        await _ready(gemini, emulator, "plugin-pause", rotation={"interval": "720h"})
        paused = await run(kube, "pause", "plugin-pause", "-o", "json")
        stored = await gemini.get("plugin-pause")
        resumed = await run(kube, "resume", "plugin-pause", "-o", "json")
        again = await gemini.get("plugin-pause")
    assert paused.code == 0, paused.err
    assert json.loads(paused.out)["paused"] is True
    assert json.loads(paused.out)["nextRotationTime"] is None
    assert stored["spec"]["rotation"]["paused"] is True
    assert resumed.code == 0, resumed.err
    assert json.loads(resumed.out)["nextRotationTime"] == again["status"]["nextRotationTime"]
    assert again["status"]["nextRotationTime"] and again["spec"]["rotation"]["paused"] is False


async def test_verify_names_the_secret_of_a_captured_delivery_and_refuses_a_tampered_one(
    gemini: Cluster, emulator: Any, kube: Any, tmp_path: Path
) -> None:
    endpoint = emulator.endpoint()
    async with operator_running(kube):
        await gemini.apply(resource("plugin-verify", endpoint.url, emulator.base_url))
        await gemini.wait_for("plugin-verify", is_ready, timeout=60)
        held = await gemini.signing_secrets("plugin-verify")
        emulator.fire("batch.succeeded")
        (request,) = endpoint.wait_for(1, timeout=30)
        headers = tmp_path / "headers.txt"
        headers.write_text(
            "POST /hook HTTP/1.1\n" + "".join(f"{k}: {v}\n" for k, v in request.headers.items())
        )
        body = tmp_path / "body.json"
        body.write_bytes(request.body)
        good = await run(
            kube, "verify", "plugin-verify", "--headers", str(headers), "--body", str(body)
        )
        as_json = tmp_path / "headers.json"
        as_json.write_text(json.dumps(dict(request.headers)))
        good_json = await run(
            kube,
            "verify",
            "plugin-verify",
            "--headers",
            str(as_json),
            "--body",
            str(body),
            "-o",
            "json",
        )
        tampered = tmp_path / "tampered.json"
        tampered.write_bytes(request.body.replace(b"batch.succeeded", b"batch.failed"))
        bad = await run(
            kube,
            "verify",
            "plugin-verify",
            "--headers",
            str(headers),
            "--body",
            str(tampered),
            "-o",
            "json",
        )
    assert held is not None and held.current is not None
    fingerprint = truncate_secret(held.current.secret)
    assert good.code == 0, good.all
    assert good.out.startswith(f"verified: signed with the current secret {fingerprint}")
    assert json.loads(good_json.out)["fingerprint"] == fingerprint
    assert bad.code == 1
    verdict = json.loads(bad.out)
    assert verdict["verified"] is False and verdict["reason"] == "bad_signature"
    assert verdict["triedFingerprints"] == [fingerprint]
    for result in (good, good_json, bad):
        _no_secret(result, held)


async def test_unknown_resource_and_bad_input_are_one_clear_line_and_exit_1(
    cluster: Cluster, kube: Any, tmp_path: Path
) -> None:
    for args in (
        ("status", "nope"),
        ("rotate", "nope", "--timeout", "1"),
        ("pause", "nope"),
        ("-n", "elsewhere", "resume", "nope"),
    ):
        result = await run(kube, *args)
        namespace = "elsewhere" if "elsewhere" in args else "default"
        assert result.code == 1, (args, result.all)
        assert result.err.strip() == (
            f'kubectl gemini: error: geminiwebhook "nope" not found in namespace "{namespace}"'
        )
        assert result.out == ""
    missing = await run(
        kube,
        "verify",
        "nope",
        "--headers",
        str(tmp_path / "absent"),
        "--body",
        str(tmp_path / "absent"),
    )
    assert missing.code == 1 and "cannot read" in missing.err and "Traceback" not in missing.all
    (tmp_path / "h").write_text("this is not a header line\n")
    (tmp_path / "b").write_text("{}")
    garbled = await run(
        kube, "verify", "nope", "--headers", str(tmp_path / "h"), "--body", str(tmp_path / "b")
    )
    assert garbled.code == 1 and "line 1: expected `Name: value`" in garbled.err
    usage = await run(kube, "status", "x", "-o", "xml")
    assert usage.code == 2 and "invalid choice: 'xml'" in usage.err
    no_config = await run(kube, "--kubeconfig", str(tmp_path / "none"), "status", "x")
    assert no_config.code == 1 and "no kubeconfig at" in no_config.err
    assert "Traceback" not in usage.all + no_config.all


def _operator_account() -> tuple[str, str]:
    from tests.fixtures.control_plane import chart_rbac

    account = next(o for o in chart_rbac() if o["kind"] == "ServiceAccount")["metadata"]
    return account["namespace"], account["name"]


async def test_check_reports_the_crd_served_and_the_operators_rbac(
    cluster: Cluster, kube: Any
) -> None:
    namespace, name = _operator_account()
    args = ("check", "--operator-namespace", "plugin-none", "--service-account")
    result = await run(kube, *args, f"{namespace}:{name}", "-o", "json")
    text = await run(kube, *args, f"{namespace}:{name}")
    report = json.loads(result.out)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks[f"CRD {crd.CRD_NAME} established"]["ok"] is True
    assert checks[f"{crd.API_VERSION} {crd.PLURAL} served"]["ok"] is True
    assert checks[f"RBAC of ServiceAccount {namespace}/{name}"]["ok"] is True, checks
    # No operator Deployment runs there (the tests run the operator in-process): missing.
    assert checks["operator Deployment"]["ok"] is False
    assert (
        "in namespace plugin-none, and no live leader Lease gemini-webhook-operator: install the "
        "chart" in checks["operator Deployment"]["detail"]
    )
    assert result.code == 1 and report["ok"] is False
    assert "✗ operator Deployment" in text.out and text.code == 1


@pytest.mark.sandbox_only  # a real controller-manager owns a Deployment's status
async def test_check_passes_with_a_running_operator_deployment(
    cluster: Cluster, kube_sandbox: Any
) -> None:
    kube = kube_sandbox
    namespace, account = _operator_account()
    labels = {
        "app.kubernetes.io/component": "operator",
        "app.kubernetes.io/part-of": MANAGED_BY,
        "app.kubernetes.io/name": MANAGED_BY,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gwo", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": account,
                    "containers": [{"name": "operator", "image": "gwo:test"}],
                },
            },
        },
    }
    subprocess.run(
        [KUBECTL, "--kubeconfig", str(kube.kubeconfig), "create", "namespace", namespace],
        check=False,
        capture_output=True,
        timeout=60,
    )
    await cluster.client.create(deployment)
    await cluster.client.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/gwo/status",
        {"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}},
        content_type="application/merge-patch+json",
    )
    result = await run(kube, "check")
    assert result.code == 0, result.all
    assert f"✓ operator Deployment {namespace}/gwo: 1/1 replicas available" in result.out
    assert f"✓ RBAC of ServiceAccount {namespace}/{account}: all" in result.out
    assert result.out.rstrip().endswith("everything is in place")


@pytest.mark.real_cluster_only
async def test_check_lists_each_permission_a_service_account_lacks(
    cluster: Cluster, kube: Any
) -> None:
    subprocess.run(
        [
            KUBECTL,
            "--kubeconfig",
            str(kube.kubeconfig),
            "create",
            "serviceaccount",
            "plugin-nobody",
            "-n",
            "default",
        ],
        check=False,
        capture_output=True,
        timeout=60,
    )
    result = await run(kube, "check", "--service-account", "default:plugin-nobody", "-o", "json")
    rbac = next(c for c in json.loads(result.out)["checks"] if c["check"].startswith("RBAC"))
    assert result.code == 1 and rbac["ok"] is False
    assert (
        "patch geminiwebhooks/status (gemini.webhooks.dev) in namespace default" in rbac["missing"]
    )
    assert "create events (core) in namespace default" in rbac["missing"]


def test_the_plugins_rbac_list_is_exactly_the_charts() -> None:
    """`check` asks for the rules the chart grants, no more and no fewer."""
    from gemini_webhooks.kubectl.check import OPERATOR_RULES
    from tests.fixtures.control_plane import chart_rbac

    granted = set()
    for obj in chart_rbac():
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in obj["rules"]:
            if rule.get("resourceNames"):
                continue  # the leader-election Lease
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    granted |= {(group, res, verb) for verb in rule["verbs"]}
    asked = {
        (r.group, r.resource + (f"/{r.subresource}" if r.subresource else ""), verb)
        for r in OPERATOR_RULES
        for verb in r.verbs
    }
    assert asked == granted


async def test_kubectl_finds_the_plugin_on_path(kube: Any) -> None:
    env = dict(os.environ, PATH=f"{Path(executable()).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [KUBECTL, "gemini", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "kubectl gemini status batch-results -n team-a" in result.stdout


def test_bash_completion_is_valid_bash_and_offers_the_subcommands(tmp_path: Path) -> None:
    script = subprocess.run(
        [executable(), "completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (tmp_path / "c.sh").write_text(script)
    probe = (
        f"source {tmp_path / 'c.sh'}; COMP_WORDS=(kubectl-gemini ro); COMP_CWORD=1; "
        "_kubectl_gemini; echo ${COMPREPLY[@]}; "
        "COMP_WORDS=(kubectl-gemini status -); COMP_CWORD=2; _kubectl_gemini; "
        "echo ${COMPREPLY[@]}"
    )
    out = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out[0] == "rotate"
    assert {"--namespace", "--output", "--context", "--kubeconfig"} <= set(out[1].split())


def test_every_next_step_is_for_a_reason_the_operator_sets() -> None:
    import gemini_webhook_operator.health as health
    import gemini_webhook_operator.job_key as job_key
    import gemini_webhook_operator.receiver_exposure as exposure
    import gemini_webhook_operator.reconcile_report as reconcile_report
    import gemini_webhook_operator.replica_state as replica_state
    import gemini_webhook_operator.rotation as rotation
    import gemini_webhook_operator.webhookservice_errors as webhookservice_errors
    from gemini_webhooks.kubectl.next_steps import ADVICE

    known = {
        value
        for module in (
            health,
            job_key,
            exposure,
            reconcile_report,
            replica_state,
            webhookservice_errors,
        )
        for key, value in vars(module).items()
        if key.startswith("REASON_") and isinstance(value, str)
    } | {rotation.SECRET_MISSING}
    assert set(ADVICE) <= known, set(ADVICE) - known
    assert MANAGED_BY  # the plugin's Events column shows the operator's name (test_events)


async def test_status_shows_the_receiver_and_whether_its_route_is_admitted(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    from gemini_webhook_operator import receiver_names

    name = "plugin-exposed"
    receiver = receiver_names.receiver_name(name)
    spec = {
        "enabled": True,
        "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
        "expose": {
            "ingress": {
                "ingressClassName": "nginx",
                "host": "hooks.example.com",
                "tls": {"secretName": "hooks-tls"},
            }
        },
    }
    body = resource(name, "unused", emulator.base_url, receiver=spec)
    del body["spec"]["url"]
    async with operator_running(kube):
        await gemini.apply(body)
        await gemini.wait_for(
            name, lambda o: synced_reason(o) == "WaitingForIngressAddress", timeout=60
        )
        waiting = await run(kube, "status", name, "-o", "json")
        waiting_text = await run(kube, "status", name)
        await gemini.client.request(
            "PATCH",
            f"/apis/networking.k8s.io/v1/namespaces/default/ingresses/{receiver}/status",
            {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}},
            content_type="application/merge-patch+json",
        )
        await gemini.wait_for(name, is_ready, timeout=60)
        admitted = await run(kube, "status", name, "-o", "json")
    report = json.loads(waiting.out)
    assert report["receiver"]["deployment"] == receiver
    assert report["receiver"]["replicas"] == 1 and "problem" not in report["receiver"]
    assert report["route"] == {
        "kind": "Ingress",
        "name": receiver,
        "admitted": False,
        "reason": "WaitingForIngressAddress",
        "message": report["route"]["message"],
    }
    (step,) = [s for s in report["nextSteps"] if s["condition"] == "Synced=False"]
    assert step["reason"] == "WaitingForIngressAddress"
    assert "kubectl describe ingress" in step["do"]
    assert f"✗ Route Ingress {receiver}: WaitingForIngressAddress" in waiting_text.out
    assert f"Receiver Deployment {receiver}: ready" in waiting_text.out
    route = json.loads(admitted.out)["route"]
    assert route["admitted"] is True and "203.0.113.7" in route["message"]
