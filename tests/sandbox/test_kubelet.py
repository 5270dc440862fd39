"""The kubelet runs the real receiver exactly as the operator's Deployment says.

No operator here: the test does what the operator would (register the webhook through
the SDK, write the signing-secret Secret, apply the rendered receiver objects), so that a
failure points at the kubelet, not at the reconcile loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types

from gemini_webhook_operator import job_key
from gemini_webhook_operator.receiver_names import receiver_name, signing_secret_name
from gemini_webhook_operator.receiver_resources import ReceiverSettings
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.dynamic_jobs import generate_key
from gemini_webhooks.contracts.signing_secret import SigningSecret, SigningSecrets, encode
from gemini_webhooks.emulator import ControlClient
from gemini_webhooks.sandbox.kubeapi import KubeApi
from gemini_webhooks.sandbox.kubelet import DEPLOYMENTS
from gemini_webhooks.sandbox.system import Sandbox, SandboxOptions
from tests.operator.receiver_rendering import public_url, render

RESOURCES = {
    "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts",
    "Service": "services",
    "Role": "roles.rbac.authorization.k8s.io/v1",
    "RoleBinding": "rolebindings.rbac.authorization.k8s.io/v1",
    "Deployment": DEPLOYMENTS,
    "PodDisruptionBudget": "poddisruptionbudgets.policy/v1",
    "NetworkPolicy": "networkpolicies.networking.k8s.io/v1",
}
GWH = f"{crd.PLURAL}.{crd.API_VERSION}"


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    options = SandboxOptions(state_dir=tmp_path / "sandbox", start_operator=False)
    async with Sandbox(options, progress=lambda line: None) as running:
        yield running


async def _wait(predicate: Any, within: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _deploy_receiver_like_the_operator(sandbox: Sandbox) -> tuple[dict[str, Any], str]:
    api: KubeApi = sandbox.api  # type: ignore[assignment]
    namespace = sandbox.options.namespace
    resource = await api.create(GWH, namespace, sandbox.example())
    client = genai.Client(
        api_key=sandbox.options.api_key,
        http_options=types.HttpOptions(base_url=sandbox.emulator_url),
    )
    hook = await asyncio.to_thread(
        client.webhooks.create,
        name="kubelet test",
        uri=public_url(resource),
        subscribed_events=["batch.succeeded", "video.generated"],
    )
    secrets = SigningSecrets(
        webhook_id=hook.id,
        secrets=(SigningSecret(hook.new_signing_secret, datetime.now(UTC)),),
    )
    await api.create(
        "secrets",
        namespace,
        {"metadata": {"name": signing_secret_name(resource)}, "stringData": encode(secrets)},
    )
    if resource["spec"]["receiver"].get("dynamic", {}).get("enabled"):
        # The job key the operator makes before the Deployment (its Pod mounts it).
        await api.create("secrets", namespace, job_key.secret_body(resource, generate_key()))
    for obj in render(resource, ReceiverSettings()):
        await api.create(RESOURCES[obj["kind"]], namespace, obj)
    return resource, hook.id


async def test_the_receiver_deployment_runs_becomes_ready_and_delivers_to_the_consumer(
    sandbox: Sandbox,
) -> None:
    api: KubeApi = sandbox.api  # type: ignore[assignment]
    resource, _ = await _deploy_receiver_like_the_operator(sandbox)
    name = receiver_name(resource["metadata"]["name"])

    async def ready() -> bool:
        deployment = await api.get(DEPLOYMENTS, "default", name)
        return bool(deployment and (deployment.get("status") or {}).get("readyReplicas") == 1)

    await _wait(ready, 30, "the receiver Deployment to report readyReplicas=1")
    assert sandbox.kubelet is not None
    assert f"default/{name}:80" in sandbox.kubelet.endpoints

    control = ControlClient(sandbox.emulator_url, api_key=sandbox.options.api_key)
    await asyncio.to_thread(control.fire, "batch.succeeded", {"id": "batches/kubelet-1"})
    try:
        arrivals = await sandbox.consumer.wait_for(
            lambda got: any(a.event_type == "batch.succeeded" for a in got), within=30
        )
    except TimeoutError:
        log = await asyncio.to_thread(control.deliveries)
        pod_log = sandbox.supervisor.children[-1].log_tail(30)
        raise AssertionError(f"not delivered; emulator log: {log}\nreceiver: {pod_log}") from None
    batch = next(a for a in arrivals if a.event_type == "batch.succeeded")
    assert batch.path == "/batches"
    assert batch.body["data"]["id"] == "batches/kubelet-1"


async def test_a_pod_template_change_restarts_the_pod_on_the_same_loopback_port(
    sandbox: Sandbox,
) -> None:
    api: KubeApi = sandbox.api  # type: ignore[assignment]
    resource, _ = await _deploy_receiver_like_the_operator(sandbox)
    name = receiver_name(resource["metadata"]["name"])
    kubelet = sandbox.kubelet
    assert kubelet is not None

    async def running_pid() -> int | None:
        pod = kubelet.pods.get(("default", name))
        return pod.child.pid if pod and pod.child and pod.child.running and pod.ready else None

    first = await _wait(running_pid, 30, "the first pod")
    endpoint = kubelet.endpoints[f"default/{name}:80"]
    await api.patch(
        DEPLOYMENTS,
        "default",
        name,
        {"spec": {"template": {"metadata": {"annotations": {"example.com/restart": "1"}}}}},
    )

    async def restarted() -> int | None:
        pid = await running_pid()
        return pid if pid not in (None, first) else None

    await _wait(restarted, 30, "a new pod after the template change")
    assert kubelet.endpoints[f"default/{name}:80"] == endpoint


async def test_deleting_the_deployment_stops_its_pod(sandbox: Sandbox) -> None:
    api: KubeApi = sandbox.api  # type: ignore[assignment]
    resource, _ = await _deploy_receiver_like_the_operator(sandbox)
    name = receiver_name(resource["metadata"]["name"])
    kubelet = sandbox.kubelet
    assert kubelet is not None

    async def pod_pid() -> int | None:
        pod = kubelet.pods.get(("default", name))
        return pod.child.pid if pod and pod.child else None

    pid = await _wait(pod_pid, 30, "the pod")
    await api.delete(DEPLOYMENTS, "default", name)

    async def gone() -> bool:
        return ("default", name) not in kubelet.pods

    await _wait(gone, 30, "the pod to be stopped")
    assert all(child.pid != pid for child in sandbox.supervisor.children)


async def test_the_pod_process_is_the_container_the_deployment_specifies(
    sandbox: Sandbox,
) -> None:
    """The running process, read from /proc: the container's args after the image's
    entrypoint, the Deployment's env, and the ConfigMap's config file as mounted, with
    only the documented liberties (mount path and loopback ports)."""
    import yaml

    api: KubeApi = sandbox.api  # type: ignore[assignment]
    resource, _ = await _deploy_receiver_like_the_operator(sandbox)
    name = receiver_name(resource["metadata"]["name"])
    kubelet = sandbox.kubelet
    assert kubelet is not None

    async def ready_pid() -> int | None:
        pod = kubelet.pods.get(("default", name))
        return pod.child.pid if pod and pod.child and pod.child.running and pod.ready else None

    pid = await _wait(ready_pid, 30, "the pod to be ready")
    deployment = await api.get(DEPLOYMENTS, "default", name)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config_map = await api.get("configmaps", "default", name)
    assert config_map is not None

    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    argv = [a.decode() for a in cmdline]
    entrypoint = argv.index("receiver")  # the image's entrypoint (a venv script) before it
    assert argv[entrypoint:-1] == container["args"][:-1] == ["receiver", "--config"]
    config_path = Path(argv[-1])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert container["args"][-1].startswith(mount["mountPath"] + "/")
    assert config_path.name == Path(container["args"][-1]).name
    assert config_path.is_relative_to(sandbox.state_dir / "pods" / "default" / name / "volumes")

    environ = dict(
        item.decode().split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if b"=" in item
    )
    for variable in container["env"]:
        if "value" in variable:
            assert environ[variable["name"]] == variable["value"]
        else:
            assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            assert environ[variable["name"]].startswith(name + "-")  # a pod name
    assert environ["KUBECONFIG"] == str(sandbox.kubeconfig)  # its Secret, through the API

    mounted = yaml.safe_load(config_path.read_text())
    specified = yaml.safe_load(config_map["data"][config_path.name])
    # Each port is the loopback port its Service (80 -> http, 9090 -> internal) points at.
    services = {"listen": f"default/{name}:80", "internal": f"default/{name}-internal:9090"}
    for section, service in services.items():
        assert (
            f"{mounted[section]['host']}:{mounted[section]['port']}" == (kubelet.endpoints[service])
        )
        assert specified[section]["port"] in (8080, 9090)
        del mounted[section], specified[section]
    # The job key's file is where the pod's volume is (a mount path is a documented liberty).
    key_file = Path(mounted["dynamic"].pop("job_key_file"))
    assert key_file.name == Path(specified["dynamic"].pop("job_key_file")).name
    assert key_file.is_relative_to(sandbox.state_dir / "pods" / "default" / name / "volumes")
    assert key_file.is_file()
    assert mounted == specified  # everything else exactly as the ConfigMap says
