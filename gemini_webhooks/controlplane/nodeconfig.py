"""What the real node runs, decided without touching the machine: its network plan, the
configuration files of containerd, the kubelet, the CNI bridge, kube-proxy and CoreDNS,
each process's argv (and kube-router's, which enforces NetworkPolicy), and the RBAC the
node's helpers need.

The node lives in its own network namespace, joined to the host by a veth pair
(`NETWORK.host_ip` on the host, `NETWORK.node_ip` in the node). Pods sit on a CNI bridge
inside that namespace; the host routes the Pod and Service ranges to the node's veth
address, so tests on the host reach Pod IPs and ClusterIPs, and the API server listens on
the host's veth address, which Pods reach through the node. Forwarding is switched on in
the node's namespace only, never on the host.

Everything the node writes goes under its directory (`NodeLayout`), except what the
components hard-code, which `FIXED_HOST_PATHS` names so that `down` can remove it.

`realnode` is the edge that acts on these decisions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from gemini_webhooks.controlplane.cluster import NODE_NAME, SERVICE_CIDR

POD_CIDR = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
BRIDGE = "gwo-cni0"
CNI_NETWORK = "gwo-pods"
KUBELET_HEALTHZ_PORT = 10248
KUBELET_PORT = 10250
KUBE_PROXY_HEALTHZ_PORT = 10256
COREDNS_READY_PORT = 8181
COREDNS_USER = "system:coredns"
KUBE_ROUTER_USER = "system:kube-router"
KUBE_ROUTER_HEALTH_PORT = 20244  # kube-router's default; it listens on every address
KUBE_PROXY_USER = "system:kube-proxy"  # bound to `system:node-proxier` by the API server

# Our images as the node's containerd knows them (`ctr images import --base-name`); the
# archives' own reference is the version tag.
IMAGE_REPOSITORIES = {"product": "localhost/gwo-product", "tools": "localhost/gwo-tools"}

# Machine-wide sysctls the kubelet sets to what it wants (pkg/kubelet/cm, `setupKernelTunables`);
# `up` records them first and `down` puts them back.
KUBELET_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)

# Paths the components use whatever their configuration says: the kubelet's device-plugin
# and pod-log links, containerd's shim sockets and runc state, libcni's result cache.
FIXED_HOST_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/run/containerd"),
    Path("/var/lib/cni"),
)

# One real node per machine (`hostlock`), and what the machine was like before it changed
# anything (sysctls, fixed paths) with the node's directory: machine-wide, so that any next
# `up` puts back what a killed node changed, whatever its directory. In /run, which a reboot
# empties, as it resets what the record puts back.
HOST_LOCK = Path("/run/gemini-webhooks-real-node.lock")
HOST_STATE = Path("/run/gemini-webhooks-real-node.json")

# The cgroup the kubelet puts every Pod under (cgroupfs driver, one per hierarchy).
KUBEPODS_CGROUP = "kubepods"


@dataclass(frozen=True)
class NodeNetwork:
    """The addresses of the node's network namespace and the routes that lead to it."""

    host_veth: str
    node_veth: str
    host_ip: str
    node_ip: str
    prefix: int
    pod_cidr: str
    service_cidr: str

    @property
    def dns_ip(self) -> str:
        """CoreDNS runs in the node's namespace and answers on the node's address."""
        return self.node_ip

    def setup_commands(self, namespace_file: Path) -> list[list[str]]:
        """`ip` commands that build the namespace's links, addresses and routes, in order
        (the namespace itself exists: `namespace_file` is its bind mount)."""
        ns = ["nsenter", f"--net={namespace_file}", "--"]
        return [
            ["ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", self.node_veth],
            ["ip", "link", "set", self.node_veth, "netns", str(namespace_file)],
            ["ip", "address", "add", f"{self.host_ip}/{self.prefix}", "dev", self.host_veth],
            ["ip", "link", "set", self.host_veth, "up"],
            [*ns, "ip", "link", "set", "lo", "up"],
            [*ns, "ip", "address", "add", f"{self.node_ip}/{self.prefix}", "dev", self.node_veth],
            [*ns, "ip", "link", "set", self.node_veth, "up"],
            # Both per network namespace: the host's own values are never touched.
            [*ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            # Bridged Pod-to-Pod traffic must pass the node's netfilter hooks, where
            # kube-proxy un-DNATs a Service's replies.
            [*ns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"],
            ["ip", "route", "add", self.pod_cidr, "via", self.node_ip],
            ["ip", "route", "add", self.service_cidr, "via", self.node_ip],
        ]


# One real node per machine: these names and addresses are fixed.
NODE_NETWORK = NodeNetwork(
    host_veth="gwo-host0",
    node_veth="gwo-node0",
    host_ip="10.201.0.1",
    node_ip="10.201.0.2",
    prefix=30,
    pod_cidr=POD_CIDR,
    service_cidr=SERVICE_CIDR,
)


@dataclass(frozen=True)
class NodeLayout:
    """Where the node keeps everything it can be told where to keep."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.root / "containerd" / "runc"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_certs(self) -> Path:
        return self.root / "kubelet-pki"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni" / "networks"

    @property
    def resolv_conf(self) -> Path:
        return self.config / "resolv.conf"


def containerd_config(layout: NodeLayout, *, runc: Path, cni_bin: Path, sandbox_image: str) -> str:
    """containerd 2.x (config version 3): all state under the node's directory, CRI with
    our CNI and runc, the optional plugins that write elsewhere switched off."""
    return f"""\
version = 3
root = {json.dumps(str(layout.containerd_root))}
state = {json.dumps(str(layout.containerd_state))}
# NRI listens under /var/run/nri and `opt` installs into /opt/containerd: neither is needed.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"]

[grpc]
  address = {json.dumps(str(layout.containerd_socket))}

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = {json.dumps(sandbox_image)}

[plugins.'io.containerd.cri.v1.runtime']
  # Without CAP_SYS_RESOURCE runc cannot lower a process's oom_score_adj below ours.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = {json.dumps(str(runc))}
        Root = {json.dumps(str(layout.runc_root))}
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [{json.dumps(str(cni_bin))}]
    conf_dir = {json.dumps(str(layout.cni_conf))}
"""


def cni_config(network: NodeNetwork, layout: NodeLayout) -> str:
    """A bridge with host-local IPAM: one Pod IP per Pod from the node's Pod range."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "hairpinMode": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": network.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(layout.cni_ipam),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(network: NodeNetwork, layout: NodeLayout, ca: Path) -> str:
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        # Our machines mount cgroup v1; 1.35+ refuses it unless told not to (KEP-5573).
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": network.node_ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": network.node_ip,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [network.dns_ip],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs),
        "failSwapOn": False,
        # A shared CI machine's disk and memory are not the node's to guard: no evictions.
        "evictionHard": {
            "nodefs.inodesFree": "0%",
            "memory.available": "0%",
            "nodefs.available": "0%",
            "imagefs.available": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "maxPods": 110,
    }
    return yaml.safe_dump(document, sort_keys=False)


def kubelet_argv(
    binary: Path, layout: NodeLayout, network: NodeNetwork, kubeconfig: Path
) -> list[str]:
    return [
        str(binary),
        f"--config={layout.config / 'kubelet.yaml'}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_certs}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={network.node_ip}",
        "--v=0",
    ]


def kube_proxy_config(network: NodeNetwork, kubeconfig: Path) -> str:
    document = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": network.node_ip,
        "healthzBindAddress": f"{network.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": network.pod_cidr,
        # 0: leave nf_conntrack_max alone (the sysctl is the machine's, not the node's).
        "conntrack": {"maxPerCore": 0},
    }
    return yaml.safe_dump(document, sort_keys=False)


def kube_proxy_argv(binary: Path, layout: NodeLayout) -> list[str]:
    return [str(binary), f"--config={layout.config / 'kube-proxy.yaml'}", "--v=0"]


def corefile(kubeconfig: Path) -> str:
    """kubeadm's default Corefile without `forward`: nothing here resolves outside names."""
    return f"""\
.:53 {{
    errors
    ready :{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
}}
"""


def coredns_argv(binary: Path, layout: NodeLayout) -> list[str]:
    return [str(binary), "-conf", str(layout.config / "Corefile")]


def kube_router_argv(binary: Path, network: NodeNetwork, kubeconfig: Path) -> list[str]:
    """kube-router with its network policy controller only (iptables filter rules and
    ipsets in the node's namespace): kube-proxy serves Services, the CNI bridge routes."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--run-loadbalancer=false",
        "--enable-ipv4=true",
        "--enable-ipv6=false",
        f"--service-cluster-ip-range={network.service_cidr}",
        f"--health-port={KUBE_ROUTER_HEALTH_PORT}",
        "--metrics-port=0",
        "--v=1",
    ]


def in_node(namespace_file: Path, argv: list[str]) -> list[str]:
    """`argv` run in the node's network namespace (`nsenter`, not `ip netns exec`, which
    remounts /sys and hides the cgroup hierarchies from the kubelet)."""
    return ["nsenter", f"--net={namespace_file}", "--", *argv]


def helper_rbac() -> list[tuple[str, dict[str, object]]]:
    """(resource, object) for the helpers' read-only access: CoreDNS's as kubeadm's
    `system:coredns`; kube-router's what its informers watch (it starts them all, whichever
    controllers run) and `get` of its Node, and nothing it could write."""

    def role(name: str, rules: list[dict[str, object]]) -> dict[str, object]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        }

    def binding(name: str, subject: dict[str, str]) -> dict[str, object]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [subject],
        }

    read = ["list", "watch"]
    kube_router_rules: list[dict[str, object]] = [
        {
            "apiGroups": [""],
            "resources": ["pods", "namespaces", "services", "endpoints"],
            "verbs": read,
        },
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", *read]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
    ]
    return [
        (
            "clusterroles.rbac.authorization.k8s.io/v1",
            role(
                "gwo:coredns",
                [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": read,
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": read,
                    },
                ],
            ),
        ),
        (
            "clusterrolebindings.rbac.authorization.k8s.io/v1",
            binding(
                "gwo:coredns",
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER},
            ),
        ),
        (
            "clusterroles.rbac.authorization.k8s.io/v1",
            role("gwo:kube-router", kube_router_rules),
        ),
        (
            "clusterrolebindings.rbac.authorization.k8s.io/v1",
            binding(
                "gwo:kube-router",
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": KUBE_ROUTER_USER,
                },
            ),
        ),
    ]
