"""The receiver part of the spec is parsed once per reconciliation and once per health tick
(issue 25): the `WebhookSpec` parsed at the start carries the typed `spec.receiver` to the
receiver's render, its public URL, the dynamic job key, the report and the health checker,
none of which parse it again. Counted by wrapping `crd_receiver.receiver_spec` wherever
the operator imported it, around one real reconciliation (the remote webhook created in
the emulator, the signing Secret, the job key and the receiver applied) and one health
tick."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gemini_webhook_operator import handlers, health_checker, reconciler, runtime
from gemini_webhook_operator.health import HealthMemo
from gemini_webhooks.contracts import crd_receiver
from gemini_webhooks.kube_access import ClusterAccess
from tests.operator.harness import Cluster, is_ready, operator_kubeconfig, resource

RECEIVER = {
    "enabled": True,
    "defaultRoute": {"targets": [{"url": "http://consumer.default.svc:8080/events"}]},
    "dynamic": {"enabled": True, "audiences": ["https://hooks.example.com/"]},
}


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many times `spec.receiver` is parsed (one entry per call)."""
    original = crd_receiver.receiver_spec
    calls: list[int] = []

    def counted(spec: dict[str, Any]) -> crd_receiver.ReceiverSpec:
        calls.append(1)
        return original(spec)

    for module in list(sys.modules.values()):
        if getattr(module, "receiver_spec", None) is original and module.__name__.startswith(
            ("gemini_webhook_operator", "gemini_webhooks")
        ):
            monkeypatch.setattr(module, "receiver_spec", counted)
    yield calls


async def test_one_reconcile_and_one_health_tick_parse_the_receiver_once_each(
    gemini: Cluster, emulator: Any, kube: Any, parses: list[int]
) -> None:
    wanted = resource(
        "parsed-once",
        "",
        emulator.base_url,
        receiver=RECEIVER,
        healthCheck={"enabled": True, "interval": "10m"},
    )
    del wanted["spec"]["url"]  # the receiver's public Service is the URL
    body = await gemini.apply(wanted)
    access = ClusterAccess.load(operator_kubeconfig(kube))
    op = runtime.build_operator(access, runtime.RunConfig())
    checker = health_checker.HealthChecker()
    try:
        outcome = await reconciler.reconcile(op, body)
        assert is_ready({"status": outcome.status}), outcome.status.get("conditions")
        assert len(parses) <= 1, f"spec.receiver parsed {len(parses)} times in one reconcile"

        parses.clear()
        # Before any status is written the tick stops at "no webhook yet", after reading
        # everything it needs: the spec, the API key and the signing Secret.
        verdict = await handlers._health_tick(op, checker, HealthMemo(), body)
        assert verdict is not None
        assert len(parses) <= 1, f"spec.receiver parsed {len(parses)} times in one health tick"
    finally:
        await checker.close()
        await op.kube.close()
