"""gemini-webhook-operator: reconciles GeminiWebhook resources with kopf."""

import sys


def _import_kopf_without_the_kubernetes_client() -> None:
    """kopf imports the official `kubernetes` client when it is installed, only to recognise
    its model objects in helpers the operator does not use (`kopf.adopt()` of a
    `V1Pod`, ...); its ~700 model modules cost the operator 22 MiB of resident memory
    (bench/operator). Hide the client while kopf is first imported, unless something in
    this process has already paid for it; `import kubernetes` works as ever afterwards."""
    if "kopf" in sys.modules or "kubernetes.client" in sys.modules:
        return
    sys.modules["kubernetes.client"] = None  # type: ignore[assignment]  # ImportError
    try:
        import kopf  # noqa: F401
    finally:
        del sys.modules["kubernetes.client"]


_import_kopf_without_the_kubernetes_client()
