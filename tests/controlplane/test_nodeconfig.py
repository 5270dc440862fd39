"""What the real node is told, checked without running it: every path under its own
directory, the settings this machine needs, forwarding switched on in its namespace only,
and the API server reachable from Pods with its endpoint reconciler back on."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml
from cryptography import x509

from gemini_webhooks.controlplane import nodeconfig, pki
from gemini_webhooks.controlplane.cluster import Layout, Ports, apiserver_argv
from gemini_webhooks.controlplane.nodeconfig import NODE_NETWORK, NodeLayout

ROOT = Path("/srv/state/node")
LAYOUT = NodeLayout(ROOT)
NETWORK = NODE_NETWORK


def _paths(value: object) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def test_containerd_keeps_its_state_under_the_node_and_restricts_oom_score_adj() -> None:
    config = tomllib.loads(
        nodeconfig.containerd_config(
            LAYOUT, runc=Path("/bin/runc"), cni_bin=Path("/cni"), sandbox_image="localhost/pause:1"
        )
    )
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["BinaryName"] == "/bin/runc"
    assert runc["SystemdCgroup"] is False
    assert runtime["cni"] == {"bin_dirs": ["/cni"], "conf_dir": str(LAYOUT.cni_conf)}
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "localhost/pause:1"
    assert "io.containerd.nri.v1.nri" in config["disabled_plugins"]
    written = [p for p in _paths(config) if p not in ("/bin/runc", "/cni")]
    assert written and all(p.startswith(f"{ROOT}/") for p in written)


def test_kubelet_runs_on_cgroup_v1_with_cgroupfs_and_pod_dns_from_the_node() -> None:
    config = yaml.safe_load(nodeconfig.kubelet_config(NETWORK, LAYOUT, Path("/pki/ca.crt")))
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["clusterDNS"] == [NETWORK.dns_ip]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["containerRuntimeEndpoint"] == f"unix://{LAYOUT.containerd_socket}"
    assert "staticPodPath" not in config
    written = [p for p in _paths(config) if p != "/pki/ca.crt"]
    assert all(p.startswith(f"{ROOT}/") for p in written)
    argv = nodeconfig.kubelet_argv(Path("/bin/kubelet"), LAYOUT, NETWORK, Path("/k"))
    assert f"--root-dir={LAYOUT.kubelet_root}" in argv
    assert f"--cert-dir={LAYOUT.kubelet_certs}" in argv  # not /var/lib/kubelet/pki


def test_pods_get_addresses_from_the_pod_range_kept_under_the_node() -> None:
    config = json.loads(nodeconfig.cni_config(NETWORK, LAYOUT))
    bridge = config["plugins"][0]
    assert bridge["type"] == "bridge"
    assert bridge["ipam"]["ranges"] == [[{"subnet": nodeconfig.POD_CIDR}]]
    assert bridge["ipam"]["dataDir"] == str(LAYOUT.cni_ipam)


def test_kube_proxy_leaves_the_machines_conntrack_sysctl_alone() -> None:
    config = yaml.safe_load(nodeconfig.kube_proxy_config(NETWORK, Path("/k")))
    assert config["conntrack"] == {"maxPerCore": 0}
    assert config["mode"] == "nftables"
    assert config["clusterCIDR"] == nodeconfig.POD_CIDR


def test_forwarding_is_switched_on_inside_the_node_namespace_only() -> None:
    commands = NETWORK.setup_commands(Path("/ns"))
    sysctls = [c for c in commands if "sysctl" in c]
    assert sysctls and all(c[:2] == ["nsenter", "--net=/ns"] for c in sysctls)
    host_routes = [c[3:] for c in commands if c[:3] == ["ip", "route", "add"]]
    assert host_routes == [
        [NETWORK.pod_cidr, "via", NETWORK.node_ip],
        [NETWORK.service_cidr, "via", NETWORK.node_ip],
    ]


def test_coredns_serves_the_cluster_domain_and_nothing_outside() -> None:
    text = nodeconfig.corefile(Path("/coredns.kubeconfig"))
    assert f"kubernetes {nodeconfig.CLUSTER_DOMAIN} " in text
    assert "kubeconfig /coredns.kubeconfig" in text
    assert "forward" not in text


def test_api_server_reconciles_its_endpoints_when_pods_can_reach_it() -> None:
    layout, ports = Layout(Path("/cp")), Ports(1, 2, 3, 4, 5)
    on_loopback = apiserver_argv(Path("/a"), layout, ports)
    assert "--endpoint-reconciler-type=none" in on_loopback
    for_pods = apiserver_argv(Path("/a"), layout, ports, NETWORK.host_ip)
    assert not any(a.startswith("--endpoint-reconciler-type") for a in for_pods)
    assert f"--bind-address={NETWORK.host_ip}" in for_pods
    assert f"--advertise-address={NETWORK.host_ip}" in for_pods
    # `kubectl exec` and `logs` reach the kubelet at its InternalIP, not its name.
    assert "--kubelet-preferred-address-types=InternalIP" in for_pods


def test_api_server_writes_an_audit_log_only_with_a_policy() -> None:
    layout, ports = Layout(Path("/cp")), Ports(1, 2, 3, 4, 5)
    assert not any(a.startswith("--audit") for a in apiserver_argv(Path("/a"), layout, ports))
    audited = apiserver_argv(Path("/a"), layout, ports, audit_policy=Path("/p.yaml"))
    assert "--audit-policy-file=/p.yaml" in audited
    assert "--audit-log-path=/cp/audit.log" in audited
    assert "--audit-log-format=json" in audited


def test_serving_certificate_names_the_address_pods_reach(tmp_path: Path) -> None:
    pair = pki.CertificateAuthority(tmp_path).issue(
        "apiserver", common_name="apiserver", server=True, extra_ips=(NETWORK.host_ip,)
    )
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert ips == ["127.0.0.1", pki.SERVICE_IP, NETWORK.host_ip]


def test_kube_router_runs_only_its_firewall_and_may_only_read() -> None:
    argv = nodeconfig.kube_router_argv(
        Path("/kube-router"), nodeconfig.NODE_NETWORK, Path("/kr.kubeconfig")
    )
    assert {"--run-firewall=true", "--run-router=false", "--run-service-proxy=false"} <= set(argv)
    assert f"--service-cluster-ip-range={nodeconfig.NODE_NETWORK.service_cidr}" in argv
    roles = [body for _, body in nodeconfig.helper_rbac() if body["kind"] == "ClusterRole"]
    kube_router = next(r for r in roles if r["metadata"]["name"] == "gwo:kube-router")  # type: ignore[index]
    verbs = {verb for rule in kube_router["rules"] for verb in rule["verbs"]}  # type: ignore[attr-defined]
    assert verbs == {"get", "list", "watch"}
    resources = {r for rule in kube_router["rules"] for r in rule["resources"]}  # type: ignore[attr-defined]
    assert "networkpolicies" in resources and "secrets" not in resources
