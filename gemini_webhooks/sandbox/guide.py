"""What the sandbox tells a person: the shell environment it writes (`.sandbox/env`) and
the next steps it prints once everything is up."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gemini_webhooks.sandbox.system import Sandbox


def env_lines(sandbox: Sandbox) -> list[str]:
    """`source .sandbox/env`: kubectl, the kubeconfig and the emulator, for a shell."""
    return [
        "# Written by `gemini-webhooks sandbox` for this run; `source` it in a shell.",
        f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"',
        f"export KUBECONFIG={shlex.quote(str(sandbox.kubeconfig))}",
        f"export EMULATOR_URL={shlex.quote(sandbox.emulator_url)}",
        f"export GEMINI_API_KEY={shlex.quote(sandbox.options.api_key)}",
        f"export OPERATOR_METRICS_URL={shlex.quote(sandbox.operator_metrics_url)}",
        f"export CONSUMER_URL=http://{sandbox.host}:{sandbox.consumer.port}",
        # `curl -x "$SANDBOX_PROXY" http://NAME.NAMESPACE.svc.cluster.local:PORT/...`
        f"export SANDBOX_PROXY={shlex.quote(sandbox.proxy.url)}",
    ]


def next_steps(sandbox: Sandbox) -> str:
    from gemini_webhooks.sandbox.system import DEMO_NAME

    state = sandbox.state_dir
    if sandbox.real_node is not None:
        receivers = "kubectl get svc (each receiver's -internal Service: its ClusterIP, port 9090)"
        logs = f"{state / 'logs'}; the receivers': kubectl logs deployment/NAME-receiver"
    else:
        receivers, logs = "printed here when each receiver starts", str(state / "logs")
    return "\n".join(
        [
            "",
            "The sandbox is up. In another terminal, from the same directory:",
            "",
            f"  source {sandbox.env_file}   # kubectl, KUBECONFIG, EMULATOR_URL, GEMINI_API_KEY",
            f"  kubectl apply -f {sandbox.example_path()}",
            f"  kubectl wait --for=condition=Ready geminiwebhook/{DEMO_NAME} --timeout=90s",
            f"  kubectl wait --for=condition=Available deployment/{DEMO_NAME}-receiver"
            " --timeout=60s",
            "  kubectl get geminiwebhooks",
            "",
            "Make Gemini (the emulator) send an event; the receiver verifies it, and the",
            "sample consumer prints it here:",
            "",
            '  curl -s -X POST "$EMULATOR_URL/emulator/v1/events" \\',
            '       -H "x-goog-api-key: $GEMINI_API_KEY" \\',
            '       -H "content-type: application/json" \\',
            '       -d \'{"type": "batch.succeeded"}\'',
            "",
            "Where things are:",
            f"  Gemini API emulator   {sandbox.emulator_url}"
            f"   (API key: {sandbox.options.api_key})",
            f"  Kubernetes API        {sandbox.kube_url}   (kubeconfig: {sandbox.kubeconfig})",
            f"  operator /metrics     {sandbox.operator_metrics_url or '(not started)'}",
            f"  receiver /metrics     {receivers}",
            f"  sample consumer       http://{sandbox.host}:{sandbox.consumer.port}"
            "/_consumer/received",
            f"  logs                  {logs}",
            "",
            "Ctrl-C stops everything.",
        ]
    )
