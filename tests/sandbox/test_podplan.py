"""A receiver Deployment's pod template becomes one local process, faithfully."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhooks.sandbox.kubelet import PodPorts, pod_endpoints, service_endpoints
from gemini_webhooks.sandbox.pod_inputs import PodPlanError, decode_secret_data
from gemini_webhooks.sandbox.podplan import plan_pod, template_hash

CONFIG = {
    "listen": {"host": "0.0.0.0", "port": 8080},
    "internal": {"port": 9090},
    "static_webhooks": [
        {"name": "orders", "secrets": {"file": {"path": "/var/run/secrets/gemini"}}}
    ],
    "default_route": {"targets": [{"url": "http://consumer.default.svc:8080/"}]},
}

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "orders-receiver", "namespace": "team-a", "generation": 1},
    "spec": {
        "replicas": 1,
        "template": {
            "metadata": {"labels": {"app": "orders-receiver"}},
            "spec": {
                "containers": [
                    {
                        "name": "receiver",
                        "args": ["receiver", "--config", "/etc/gemini-webhooks/config.yaml"],
                        "env": [
                            {"name": "LOG_DIR", "value": "/tmp/logs"},
                            {
                                "name": "POD_NAMESPACE",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                            },
                            {"name": "GREETING", "value": "in $(POD_NAMESPACE) at $$HOME"},
                            {
                                "name": "REDIS_PASSWORD",
                                "valueFrom": {
                                    "secretKeyRef": {
                                        "name": "redis",
                                        "key": "password",
                                        "optional": True,
                                    }
                                },
                            },
                        ],
                        "ports": [
                            {"name": "http", "containerPort": 8080},
                            {"name": "internal", "containerPort": 9090},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "internal"}},
                        "volumeMounts": [
                            {
                                "name": "config",
                                "mountPath": "/etc/gemini-webhooks",
                                "readOnly": True,
                            },
                            {"name": "secrets", "mountPath": "/var/run/secrets/gemini"},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "config", "configMap": {"name": "orders-receiver"}},
                    {"name": "secrets", "secret": {"secretName": "orders-signing-secret"}},
                    {"name": "tmp", "emptyDir": {}},
                ],
            },
        },
    },
}

OBJECTS = {
    ("ConfigMap", "team-a", "orders-receiver"): {"config.yaml": yaml.safe_dump(CONFIG)},
    ("Secret", "team-a", "orders-signing-secret"): {
        "signing-secrets.json": "{}",
        "current": "whsec_x",
    },
}
HOST_PORTS = {8080: 41001, 9090: 41002}


def _plan(tmp_path: Path, deployment: dict[str, Any] = DEPLOYMENT, objects: Any = OBJECTS) -> Any:
    return plan_pod(
        deployment,
        lookup=lambda kind, ns, name: objects.get((kind, ns, name)),
        pod_dir=tmp_path,
        host_ports=HOST_PORTS,
        executables=lambda name: f"/venv/bin/{name}",
        base_env={"KUBECONFIG": "/sandbox/kubeconfig"},
    )


def test_the_command_is_the_image_entrypoint_with_the_args_and_mount_paths_rewritten(
    tmp_path: Path,
) -> None:
    plan = _plan(tmp_path)
    config = tmp_path / "volumes" / "0-config" / "config.yaml"
    assert plan.argv == ["/venv/bin/gemini-webhooks", "receiver", "--config", str(config)]
    assert config in plan.files


def test_configmap_and_secret_volumes_are_written_with_every_key(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    secret_dir = tmp_path / "volumes" / "1-secrets"
    assert plan.files[secret_dir / "current"] == b"whsec_x"
    assert (secret_dir / "signing-secrets.json") in plan.files
    assert tmp_path / "volumes" / "2-tmp" in plan.dirs


def test_the_receiver_config_binds_its_container_ports_to_their_loopback_ports(
    tmp_path: Path,
) -> None:
    plan = _plan(tmp_path)
    config = yaml.safe_load(plan.files[tmp_path / "volumes" / "0-config" / "config.yaml"])
    assert config["listen"] == {"host": "127.0.0.1", "port": 41001}
    assert config["internal"] == {"host": "127.0.0.1", "port": 41002}
    assert config["static_webhooks"][0]["secrets"]["file"]["path"] == str(
        tmp_path / "volumes" / "1-secrets"
    )


def test_env_takes_values_field_refs_and_expansions_and_rewrites_mount_paths(
    tmp_path: Path,
) -> None:
    env = _plan(tmp_path).env
    assert env["KUBECONFIG"] == "/sandbox/kubeconfig"
    assert env["POD_NAMESPACE"] == "team-a"
    assert env["GREETING"] == "in team-a at $HOME"
    assert env["LOG_DIR"] == str(tmp_path / "volumes" / "2-tmp" / "logs")
    assert "REDIS_PASSWORD" not in env  # optional and absent


def test_the_readiness_probe_targets_the_loopback_port_of_the_named_container_port(
    tmp_path: Path,
) -> None:
    readiness = _plan(tmp_path).readiness
    assert (readiness.kind, readiness.port, readiness.path) == ("http", 41002, "/readyz")


def test_a_missing_secret_volume_stops_the_pod_from_starting_and_names_the_secret(
    tmp_path: Path,
) -> None:
    objects = {k: v for k, v in OBJECTS.items() if k[0] != "Secret"}
    with pytest.raises(PodPlanError, match="Secret team-a/orders-signing-secret not found"):
        _plan(tmp_path, objects=objects)


def test_a_restart_follows_pod_template_changes_only() -> None:
    scaled = copy.deepcopy(DEPLOYMENT)
    scaled["spec"]["replicas"] = 3
    assert template_hash(scaled) == template_hash(DEPLOYMENT)
    changed = copy.deepcopy(DEPLOYMENT)
    changed["spec"]["template"]["metadata"]["annotations"] = {"checksum/config": "abc"}
    assert template_hash(changed) != template_hash(DEPLOYMENT)


def test_secret_data_is_decoded_with_string_data_folded_in() -> None:
    secret = {"data": {"a": base64.b64encode(b"one").decode()}, "stringData": {"b": "two"}}
    assert decode_secret_data(secret) == {"a": "one", "b": "two"}


def test_a_service_selecting_the_pod_gets_the_loopback_port_of_its_target_port() -> None:
    ports = PodPorts()
    ports.allocate(DEPLOYMENT["spec"]["template"]["spec"]["containers"][0])
    services = [
        {
            "metadata": {"name": "orders-receiver", "namespace": "team-a"},
            "spec": {
                "selector": {"app": "orders-receiver"},
                "ports": [{"port": 80, "targetPort": "http"}, {"port": 9090}],
            },
        },
        {
            "metadata": {"name": "other", "namespace": "team-a"},
            "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]},
        },
    ]
    pods = {("team-a", "orders-receiver"): ({"app": "orders-receiver"}, ports)}
    assert service_endpoints(services, pods) == {
        "team-a/orders-receiver:80": f"127.0.0.1:{ports.by_number[8080]}",
        "team-a/orders-receiver:9090": f"127.0.0.1:{ports.by_number[9090]}",
    }


def test_each_pods_container_ports_are_published_as_its_own_address() -> None:
    first, second = (
        PodPorts(by_number={8080: 41001, 9090: 41002}),
        PodPorts(by_number={9090: 41003}),
    )
    pods = {"10.244.0.2": first, "10.244.0.3": second}
    assert pod_endpoints(pods) == {
        "10.244.0.2:8080": "127.0.0.1:41001",
        "10.244.0.2:9090": "127.0.0.1:41002",
        "10.244.0.3:9090": "127.0.0.1:41003",
    }


def _operator_argv(args: list[str]) -> list[str]:
    deployment = copy.deepcopy(DEPLOYMENT)
    deployment["spec"]["template"]["spec"]["containers"][0]["args"] = args
    return list(_plan(Path("/pod"), deployment).argv)


def test_the_charts_operator_binds_the_loopback_ports_of_its_metrics_and_health_ports(
    tmp_path: Path,
) -> None:
    from tests.chart.rendering import find, manifests

    for values in ({}, {"replicaCount": 2}):
        deployment = find(manifests(values), "Deployment")[0]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        by_number = {p["containerPort"]: 42000 + i for i, p in enumerate(container["ports"])}
        plan = plan_pod(
            deployment,
            lookup=lambda kind, ns, name: None,
            pod_dir=tmp_path,
            host_ports=by_number,
            executables=lambda name: f"/venv/bin/{name}",
            base_env={},
        )
        health = plan.host_port("health")
        assert f"--metrics-port={plan.host_port('metrics')}" in plan.argv
        assert f"--liveness=http://0.0.0.0:{health}/healthz" in plan.argv
        assert plan.readiness is not None and plan.readiness.port == health


def test_port_flags_as_two_arguments_are_rewritten_too() -> None:
    argv = _operator_argv(
        ["operator", "--metrics-port", "9090", "--liveness", "http://[::]:8080/h"]
    )
    assert argv[1:] == ["operator", "--metrics-port", "41002", "--liveness", "http://[::]:41001/h"]


@pytest.mark.parametrize(
    "flag",
    [
        "--metrics-port=7000",  # not a containerPort
        "--metrics-port=0",  # any port: left to the process
        "--metrics-port=nine",  # not a number: the operator refuses it itself
        "--liveness=http://0.0.0.0:7000/healthz",
        "--liveness=http://0.0.0.0:99999/healthz",  # an invalid port
        "--liveness=http://0.0.0.0/healthz",  # no port
        "--liveness=not a url",
        "--metrics-portal=9090",  # another flag
        "--metrics-port",  # a flag without its value, last
    ],
)
def test_other_values_of_port_flags_are_left_as_written(flag: str) -> None:
    assert _operator_argv(["operator", flag])[1:] == ["operator", flag]


def test_the_image_binaries_come_first_on_the_pods_path(tmp_path: Path) -> None:
    """The chart's HA command is `/bin/sh -c 'exec gemini-webhooks ...'`: the shell finds
    the image's binaries by name."""
    plan = plan_pod(
        DEPLOYMENT,
        lookup=lambda kind, ns, name: OBJECTS.get((kind, ns, name)),
        pod_dir=tmp_path,
        host_ports=HOST_PORTS,
        executables=lambda name: f"/venv/bin/{name}",
        base_env={"PATH": "/usr/bin:/venv/bin:/bin"},
    )
    assert plan.env["PATH"] == "/venv/bin:/usr/bin:/bin"


def test_a_path_the_container_sets_is_kept(tmp_path: Path) -> None:
    deployment = copy.deepcopy(DEPLOYMENT)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [*container["env"], {"name": "PATH", "value": "/opt/bin"}]
    assert _plan(tmp_path, deployment).env["PATH"] == "/opt/bin"


def test_a_proxy_the_container_names_replaces_the_sandboxs_in_both_cases(
    tmp_path: Path,
) -> None:
    deployment = copy.deepcopy(DEPLOYMENT)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [*container["env"], {"name": "HTTP_PROXY", "value": "http://corp:3128"}]
    sandbox = {"HTTP_PROXY": "http://127.0.0.1:1", "http_proxy": "http://127.0.0.1:1"}
    sandbox |= {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    plan = plan_pod(
        deployment,
        lookup=lambda kind, ns, name: OBJECTS.get((kind, ns, name)),
        pod_dir=tmp_path,
        host_ports=HOST_PORTS,
        executables=lambda name: f"/venv/bin/{name}",
        base_env=sandbox,
    )
    assert "http_proxy" not in plan.env
    assert plan.env["HTTP_PROXY"] == "http://corp:3128"
    # What the container does not name stays the sandbox's.
    assert plan.env["no_proxy"] == plan.env["NO_PROXY"] == "127.0.0.1"


def test_a_dynamic_receivers_job_key_is_written_where_its_config_reads_it(
    tmp_path: Path,
) -> None:
    from gemini_webhook_operator.receiver_resources import ReceiverSettings
    from gemini_webhooks.contracts import dynamic_jobs
    from tests.operator.receiver_rendering import render

    resource = {
        "metadata": {"name": "orders", "namespace": "team-a", "uid": "u1"},
        "spec": {
            "receiver": {
                "enabled": True,
                "defaultRoute": {"targets": [{"url": "http://consumer.team-a.svc:8080/"}]},
                "dynamic": {"enabled": True, "audiences": ["https://hooks.example/"]},
            }
        },
    }
    rendered = {o["kind"]: o for o in render(resource, ReceiverSettings())}
    key = dynamic_jobs.generate_key()
    objects = {
        ("ConfigMap", "team-a", "orders-receiver"): rendered["ConfigMap"]["data"],
        ("Secret", "team-a", "orders-dynamic-job-key"): {dynamic_jobs.SECRET_KEY: key},
    }
    plan = _plan(tmp_path, rendered["Deployment"], objects)
    config_path = Path(plan.argv[-1])
    config = yaml.safe_load(plan.files[config_path])
    assert plan.files[Path(config["dynamic"]["job_key_file"])] == key.encode()


def test_a_sandbox_pod_reads_its_own_name_node_address_and_labels_from_the_downward_api(
    tmp_path: Path,
) -> None:
    deployment = copy.deepcopy(DEPLOYMENT)
    fields = ["metadata.name", "metadata.uid", "spec.nodeName", "status.podIP"]
    fields += ["spec.serviceAccountName", "metadata.labels['app']"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": f"F{i}", "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for i, path in enumerate(fields)
    ]
    plan = _plan(tmp_path, deployment)
    pod_name = f"orders-receiver-{template_hash(deployment)[:10]}"
    assert [plan.env[f"F{i}"] for i in range(len(fields))] == [
        pod_name,
        pod_name,
        "sandbox",
        "127.0.0.1",
        "default",
        "orders-receiver",
    ]
