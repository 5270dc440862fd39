"""The system the end-to-end tests run against: the sandbox by default, a real one on demand.

By default the session starts the whole sandbox once (`gemini_webhooks.sandbox.system`):
emulator, Kubernetes API sandbox, operator, kubelet-run receivers, sample consumer; the
modules share it (each names its resources apart and deletes them; the loop is the
session's).

With `GWO_KUBE=real-node` (scripts/test's late-build step) the sandbox is
`Sandbox(kube="real")`, what `scripts/sandbox --kube real` runs: its own control plane and a
real node (containerd, the kubelet, runc, CNI, kube-proxy, CoreDNS, kube-router), the
operator installed by our chart and the receivers containers of our image, the emulator a
Pod of the tools image, the receivers' NetworkPolicy on; only the sample consumer stays on
the host (gemini_webhooks/sandbox/real_node.py). An operator "crash" there is a SIGKILL of
its container's main process from the host, and the kubelet restarts the container in the
same Pod (`_kill_operator_container`). It needs root, and only one real node can exist on
a machine: run it in one process (no `-n`), under `flock /tmp/gwo-real-node.lock` where
others may run one, e.g.
`flock /tmp/gwo-real-node.lock env GWO_KUBE=real-node pytest tests/e2e`. There the only
skips are the tests that need the Kubernetes API sandbox's fault injection
(`kube_sandbox_of`); `GWO_KUBE=real` (the real control plane, no node) does
not run tests/e2e (tests/conftest.py refuses it at collection).

Against a real cluster and the real Gemini API (README, "End-to-end tests on a real
cluster"), set:

- `KUBECONFIG`: a cluster with `crds/` applied and the operator installed (Helm chart);
- `GWO_E2E_GEMINI_API_KEY`: a Gemini API key (written to the `gemini-api-key` Secret);
- `GWO_E2E_RECEIVER_URL_TEMPLATE`: the public URL Gemini reaches a receiver at, with
  `{name}` for the GeminiWebhook's name, e.g. `https://{name}.hooks.example.com/`;
- optionally `GWO_E2E_NAMESPACE` (default `gwo-e2e`, must exist) and
  `GWO_E2E_OPERATOR_SELECTOR` (`namespace/label-selector` of the operator's pods, default
  `gemini-webhook-operator/app.kubernetes.io/name=gemini-webhook-operator`).

There, the tests that need the emulator's control API (to make Gemini send events) or the
sample consumer are skipped (`sandbox_only`); everything else runs unchanged.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from gemini_webhooks.sandbox.demo import scenario_for
from gemini_webhooks.sandbox.kubeapi import KubectlApi, ReadApi
from gemini_webhooks.sandbox.node_workloads import pod_ready
from gemini_webhooks.sandbox.real_node import operator_pods, wait_until
from gemini_webhooks.sandbox.scenario import Scenario, real_cluster_example
from gemini_webhooks.sandbox.steps import Kubectl
from gemini_webhooks.sandbox.system import Sandbox, SandboxOptions
from tests.fixtures.control_plane import real_node_mode
from tests.fixtures.real_node import main_process

# GWO_KUBE=real-node: the sandbox system on its own control plane and real node (the
# receivers containers), with the emulator; KUBECONFIG alone: a real cluster and the real
# Gemini API.
ON_REAL_NODE = real_node_mode()
REAL = bool(os.environ.get("KUBECONFIG")) and not ON_REAL_NODE
REAL_ENV = ("GWO_E2E_GEMINI_API_KEY", "GWO_E2E_RECEIVER_URL_TEMPLATE")
GEMINI_API = "https://generativelanguage.googleapis.com"


@dataclass
class System:
    """One running system and what the tests may do to it."""

    namespace: str
    kubectl: Kubectl
    api: ReadApi
    scenario: Callable[[str], Awaitable[Scenario]]  # a scenario for a new resource `name`
    restart_operator: Callable[[], Awaitable[None]]  # a crash (SIGKILL) and a restart
    sandbox: Sandbox | None = None

    @property
    def real(self) -> bool:
        return self.sandbox is None


def _lines(sink: list[str]) -> Callable[[str], None]:
    return sink.append


async def _sandbox_system(state_dir: Path) -> AsyncIterator[System]:
    log: list[str] = []
    sandbox = Sandbox(
        SandboxOptions(
            state_dir=state_dir,
            echo_consumer=False,
            batch_seconds=2.0,
            kube="real" if ON_REAL_NODE else "sandbox",
        ),
        progress=_lines(log),
    )
    async with sandbox:
        examples = state_dir / "e2e-examples"
        examples.mkdir()

        async def scenario(name: str) -> Scenario:
            path = examples / f"{name}.yaml"
            path.write_text(sandbox.render_example(name))
            made = scenario_for(sandbox, _lines(log))
            made.example_path = path
            made.name = name
            return made

        async def restart_operator() -> None:
            if sandbox.real_node is not None:
                await _kill_operator_container(sandbox)
                return
            await sandbox.stop_operator(kill=True)
            await sandbox.start_operator()

        assert sandbox.api is not None
        yield System(
            namespace=sandbox.options.namespace,
            kubectl=Kubectl(sandbox.kubeconfig),
            api=sandbox.api,
            scenario=scenario,
            restart_operator=restart_operator,
            sandbox=sandbox,
        )


def _restarts(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])


async def _kill_operator_container(sandbox: Sandbox) -> None:
    """SIGKILL of the operator container's main process (a crash, as an OOM kill ends it),
    then its restart in the same Pod, Ready again (the same Pod name: it renews the Lease it
    held at once)."""
    assert sandbox.api is not None
    namespace = sandbox.options.namespace
    (pod,) = await operator_pods(sandbox.api, namespace)
    before = _restarts(pod)
    os.kill(main_process(pod), signal.SIGKILL)

    async def restarted() -> bool:
        assert sandbox.api is not None
        found = await sandbox.api.get("pods", namespace, pod["metadata"]["name"])
        assert found is not None, "the killed operator's Pod was replaced, not restarted"
        return _restarts(found) > before and pod_ready(found)

    await wait_until(restarted, 120, "the operator's container restarted and Ready")


async def _real_system() -> AsyncIterator[System]:
    missing = [name for name in REAL_ENV if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"KUBECONFIG is set, so tests/e2e runs against that cluster and the real Gemini "
            f"API; also set {', '.join(missing)} (or unset KUBECONFIG for the sandbox)"
        )
    kubeconfig = os.environ["KUBECONFIG"]
    namespace = os.environ.get("GWO_E2E_NAMESPACE", "gwo-e2e")
    api_key = os.environ["GWO_E2E_GEMINI_API_KEY"]
    url_template = os.environ["GWO_E2E_RECEIVER_URL_TEMPLATE"]
    operator_ns, _, operator_selector = os.environ.get(
        "GWO_E2E_OPERATOR_SELECTOR",
        "gemini-webhook-operator/app.kubernetes.io/name=gemini-webhook-operator",
    ).partition("/")
    kubectl = Kubectl(Path(kubeconfig))
    api = KubectlApi(kubeconfig)
    secret = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gemini-api-key", "namespace": namespace},
            "stringData": {"api-key": api_key},
        }
    )
    await kubectl("apply", "-f", "-", stdin=secret)
    examples = Path(tempfile.mkdtemp(prefix="gwo-e2e-"))

    async def scenario(name: str) -> Scenario:
        path = examples / f"{name}.yaml"
        path.write_text(real_cluster_example(name, namespace, url_template.format(name=name)))
        return Scenario(
            api=api,
            kubectl=kubectl,
            namespace=namespace,
            gemini_base_url=GEMINI_API,
            api_key=api_key,
            example_path=path,
            name=name,
        )

    async def restart_operator() -> None:
        await kubectl(
            "delete",
            "pod",
            "-n",
            operator_ns,
            "-l",
            operator_selector,
            "--grace-period=0",
            "--force",
        )
        await kubectl(
            "wait",
            "pod",
            "-n",
            operator_ns,
            "-l",
            operator_selector,
            "--for=condition=Ready",
            "--timeout=120s",
        )

    yield System(
        namespace=namespace,
        kubectl=kubectl,
        api=api,
        scenario=scenario,
        restart_operator=restart_operator,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """One system for the session's e2e modules (each names its resources apart and deletes
    them): a real node's start and stop cost half a minute, so it is started once."""
    if REAL:
        async for real in _real_system():
            yield real
        return
    # Short: the real node's containerd socket paths are bound.
    async for sandbox in _sandbox_system(tmp_path_factory.mktemp("e2e") / "s"):
        yield sandbox


def sandbox_of(system: System) -> Sandbox:
    """The sandbox behind `system`; the calling test must be marked `sandbox_only`."""
    if system.sandbox is None:
        pytest.skip("needs the emulator's control API (sandbox only)")
    return system.sandbox


def kube_sandbox_of(system: System) -> Sandbox:
    """The sandbox behind `system` when its Kubernetes API is the API sandbox (for its
    fault injection); on the real control plane the test is skipped. Mark it `sandbox_only`."""
    sandbox = sandbox_of(system)
    if sandbox.options.kube != "sandbox":
        pytest.skip("needs the Kubernetes API sandbox's fault injection")
    return sandbox


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not REAL:
        return
    for item in items:
        if item.get_closest_marker("sandbox_only") is not None and "e2e" in item.nodeid:
            item.add_marker(pytest.mark.skip(reason="sandbox only: needs the control API"))
