"""`gemini-webhooks webhook-config`: reads the resource and its job key with a kubeconfig,
prints the `webhook_config` as JSON; errors say what to do and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import yaml

from gemini_webhook_operator import job_key
from gemini_webhooks.contracts import crd, dynamic_jobs
from tests.fixtures.kube import KUBECTL
from tests.operator.harness import install_crd

AUDIENCE = "https://hooks.example.com/gemini"


def _kubectl(kube: Any, *args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kube.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 or not check, result.stderr
    return result.stdout


def _cli(kube: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gemini_webhooks", "webhook-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_prints_a_webhook_config_signed_with_the_receivers_key(kube: Any) -> None:
    install_crd(kube)
    namespace = f"gwo-jobs-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "orders", "namespace": namespace},
        "spec": {
            "events": ["batch.succeeded"],
            "apiKeySecretRef": {"name": "gemini-api-key"},
            "receiver": {
                "enabled": True,
                "defaultRoute": {"targets": [{"url": "http://consumer.example/"}]},
                "dynamic": {"enabled": True, "audiences": [AUDIENCE]},
            },
        },
    }
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    _kubectl(kube, "apply", "-f", "-", stdin=yaml.safe_dump_all([ns, body]))

    missing = _cli(kube, "orders", "-n", namespace, "--metadata", "team=finance")
    assert missing.returncode == 1
    assert "orders-dynamic-job-key does not exist yet" in missing.stderr

    stored = json.loads(_kubectl(kube, "get", crd.PLURAL, "orders", "-n", namespace, "-o", "json"))
    key_text = dynamic_jobs.generate_key()
    _kubectl(kube, "create", "-f", "-", stdin=json.dumps(job_key.secret_body(stored, key_text)))

    result = _cli(kube, "orders", "-n", namespace, "-m", "team=finance", "-m", "job=q3=x")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["uris"] == [AUDIENCE]
    assert {k: v for k, v in config["user_metadata"].items() if k != dynamic_jobs.JOB_MAC_KEY} == {
        "team": "finance",
        "job": "q3=x",
    }
    assert dynamic_jobs.verify(config["user_metadata"], dynamic_jobs.decode_key(key_text))
    assert key_text not in result.stdout + result.stderr

    absent = _cli(kube, "nope", "-n", namespace)
    assert (absent.returncode, absent.stderr.strip()) == (
        1,
        f"gemini-webhooks webhook-config: GeminiWebhook {namespace}/nope not found",
    )
    _kubectl(kube, "delete", "namespace", namespace, "--wait=false", check=False)


def test_bad_metadata_is_refused_by_the_parser() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gemini_webhooks", "webhook-config", "x", "-m", "novalue"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "expected KEY=VALUE" in result.stderr


def test_other_subcommands_do_not_import_the_helper() -> None:
    code = (
        "import sys; from gemini_webhooks.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('gemini_webhooks.jobs')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
