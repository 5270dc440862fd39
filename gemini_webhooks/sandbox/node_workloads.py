"""What runs on the real node besides the receivers (`Sandbox(kube="real")`, and the chart
tests on the real node): the Gemini API emulator as a Pod of the tools image, the operator
installed by our chart with helm, and the NetworkPolicy that lets the sandbox's host in.

Every Pod here has the chart's security contexts (what the `restricted` Pod Security
Standard admits); the images are the ones imported into the node's containerd, never
pulled. The objects are pure functions of their inputs; `Helm` runs the helm CLI.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import yaml

from gemini_webhooks import __version__
from gemini_webhooks.controlplane import nodeconfig

JSON = dict[str, Any]

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "gemini-webhook-operator"
CHART_VALUES: JSON = (
    yaml.safe_load((CHART_DIR / "values.yaml").read_text()) if CHART_DIR.is_dir() else {}
)
PRODUCT_IMAGE = f"{nodeconfig.IMAGE_REPOSITORIES['product']}:{__version__}"
TOOLS_IMAGE = f"{nodeconfig.IMAGE_REPOSITORIES['tools']}:{__version__}"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

EMULATOR, EMULATOR_PORT = "gemini-emulator", 8765
EMULATOR_LABELS = {"app": EMULATOR}
# The release the sandbox installs; its operator's Pods are labelled by the chart.
RELEASE = "gemini-webhooks"
OPERATOR_SELECTOR = {
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "operator",
    "app.kubernetes.io/name": "gemini-webhook-operator",
}
# Every receiver Pod the operator renders (receiver_names.APP_NAME).
RECEIVER_LABELS = {"app.kubernetes.io/name": "gemini-webhook-receiver"}
RECEIVER_INTERNAL_PORT = 9090  # receiver_names.INTERNAL_PORT
HOST_ACCESS_POLICY = "gemini-webhooks-sandbox-host"


class HelmError(RuntimeError):
    """A helm command failed; its message is helm's own output."""


def restricted_pod(
    name: str,
    namespace: str,
    image: str,
    labels: dict[str, str],
    port: int,
    **container: Any,
) -> JSON:
    """A Pod with the chart's security contexts (what `restricted` admits), its one
    container `main` listening on `port`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "securityContext": CHART_VALUES["podSecurityContext"],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "ports": [{"name": "http", "containerPort": port}],
                    "securityContext": CHART_VALUES["securityContext"],
                    "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                    **container,
                }
            ],
        },
    }


def service(name: str, namespace: str, labels: dict[str, str], port: int) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": port}]},
    }


def emulator_objects(
    namespace: str, *, api_key: str, image: str = TOOLS_IMAGE, args: tuple[str, ...] = ()
) -> list[JSON]:
    """The emulator (the Gemini API, accepting `api_key`; `args`: more of its flags) as a
    Pod of the tools image in `namespace`, ready by its health endpoint, and its Service."""
    argv = [
        "emulator",
        "--host",
        "0.0.0.0",
        "--port",
        str(EMULATOR_PORT),
        "--api-key",
        api_key,
        *args,
    ]
    probe = {"httpGet": {"path": "/emulator/v1/healthz", "port": EMULATOR_PORT}}
    return [
        restricted_pod(
            EMULATOR,
            namespace,
            image,
            EMULATOR_LABELS,
            EMULATOR_PORT,
            args=argv,
            readinessProbe={**probe, "periodSeconds": 1},
        ),
        service(EMULATOR, namespace, EMULATOR_LABELS, EMULATOR_PORT),
    ]


def operator_values(
    namespace: str,
    *,
    api_base_url: str,
    host_ip: str,
    drift_interval: float,
    extra_args: list[str],
) -> JSON:
    """The chart's values for the sandbox's operator in `namespace`: our image as imported,
    the emulator (in the same namespace) as the Gemini API and the peer allowed on the
    receivers' public port (as an ingress controller would be), the host allowed to scrape
    its metrics; its receivers' NetworkPolicy on, as the chart's default."""
    emulator_peer = {"podSelector": {"matchLabels": EMULATOR_LABELS}}
    return {
        "image": {
            "repository": nodeconfig.IMAGE_REPOSITORIES["product"],
            "tag": __version__,
            "pullPolicy": "Never",
        },
        "operator": {
            "apiBaseUrl": api_base_url,
            "driftInterval": drift_interval,
            "extraArgs": extra_args,
        },
        # Ready as soon as it answers: a restart or an upgrade waits a second, not ten.
        "readinessProbe": {"periodSeconds": 1},
        "networkPolicy": {
            "metricsFrom": [{"ipBlock": {"cidr": f"{host_ip}/32"}}],
            "extraEgress": [
                {"to": [emulator_peer], "ports": [{"protocol": "TCP", "port": EMULATOR_PORT}]}
            ],
        },
        "receivers": {"networkPolicy": {"ingressControllerNamespace": namespace}},
        "tests": {"enabled": False},
    }


def host_access_policy(namespace: str, host_ip: str, consumer_port: int) -> JSON:
    """The sandbox's own NetworkPolicy, added to each receiver's (policies add up): the
    host's end of the node's veth may scrape the receivers' internal port (as a Prometheus
    would), and the receivers may reach the sample consumer there (the selector-less
    Service's endpoint). Nothing else of the receivers' policies is loosened."""
    host = [{"ipBlock": {"cidr": f"{host_ip}/32"}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": HOST_ACCESS_POLICY, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": RECEIVER_LABELS},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": host, "ports": [{"protocol": "TCP", "port": RECEIVER_INTERNAL_PORT}]}
            ],
            "egress": [{"to": host, "ports": [{"protocol": "TCP", "port": consumer_port}]}],
        },
    }


def pod_ready(pod: JSON | None) -> bool:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class Helm:
    """The helm CLI on a kubeconfig, with config, cache and data of its own under `home`."""

    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self.home = home

    async def __call__(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(self.binary),
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        if process.returncode != 0:
            raise HelmError(f"helm {args[0]} failed ({process.returncode}): {text.strip()}")
        return text

    async def install(self, release: str, namespace: str, values: JSON, within: int) -> None:
        """`helm upgrade --install --wait` of our chart with `values` (a file under home)."""
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / f"{release}-values.yaml"
        path.write_text(yaml.safe_dump(values))
        await self(
            "upgrade",
            "--install",
            release,
            str(CHART_DIR),
            "--namespace",
            namespace,
            "-f",
            str(path),
            "--wait",
            "--timeout",
            f"{within}s",
        )

    async def uninstall(self, release: str, namespace: str, within: int) -> None:
        await self(
            "uninstall", release, "--namespace", namespace, "--wait", "--timeout", f"{within}s"
        )
