"""An in-memory Kubernetes API server that kubectl and kopf accept, built on kmock.

See docs/kube-sandbox.md. The public surface:

- `KubeSandbox`: the kmock handler (state in `.cluster`, `.faults`, `.audit`).
- `KubeSandboxServer`: serve it on the running loop (`async with`, port 0 by default).
- `ThreadedKubeSandbox`: serve it from a background thread (sync `with`).
"""

from gemini_webhooks.kubesandbox.faults import AuditEntry, Fault, Faults
from gemini_webhooks.kubesandbox.runner import (
    KubeSandboxServer,
    ThreadedKubeSandbox,
    kubeconfig_text,
    write_kubeconfig,
)
from gemini_webhooks.kubesandbox.server import KubeSandbox

__all__ = [
    "AuditEntry",
    "Fault",
    "Faults",
    "KubeSandbox",
    "KubeSandboxServer",
    "ThreadedKubeSandbox",
    "kubeconfig_text",
    "write_kubeconfig",
]
