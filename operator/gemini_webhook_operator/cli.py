"""`gemini-webhooks operator`: reconcile GeminiWebhook resources (kopf, with our settings)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os

from opentelemetry import trace

from gemini_webhook_operator import metrics, runtime
from gemini_webhook_operator.leader import DEFAULT_LEASE_NAME, LeaseTiming
from gemini_webhook_operator.receiver_exposure import NetworkPolicySettings
from gemini_webhook_operator.receiver_resources import ReceiverSettings
from gemini_webhook_operator.reconcile_context import DEFAULT_MAX_CONCURRENT_RECONCILES, StepHook
from gemini_webhook_operator.runtime import LeaderElection, RunConfig
from gemini_webhook_operator.webhookservice import ServiceSettings, warm_up_sdk
from gemini_webhooks import tracing
from gemini_webhooks.contracts.egress_proxy import ProxySettings, ProxySettingsError
from gemini_webhooks.kube_access import (
    ClusterAccess,
    KubeConfigError,
    bound_tls_read_buffer,
)
from gemini_webhooks.tracing import TracingConfigError

# The cluster's HTTP proxy for the receivers, one flag per standard variable (a proxy URL
# may hold credentials: messages name the flag, never the value).
RECEIVER_PROXY_FLAGS = (
    ("--receiver-http-proxy", "HTTP_PROXY", "proxy URL for the receivers' http:// requests"),
    ("--receiver-https-proxy", "HTTPS_PROXY", "proxy URL for their https:// requests"),
    ("--receiver-no-proxy", "NO_PROXY", "hosts, domains and address blocks they reach directly"),
)


def receiver_proxy(args: argparse.Namespace) -> ProxySettings:
    """The receivers' proxy from the flags; SystemExit naming the malformed flag."""
    (http, _, _), (https, _, _), (no_proxy, _, _) = RECEIVER_PROXY_FLAGS
    try:
        return ProxySettings.parse(
            args.receiver_http_proxy,
            args.receiver_https_proxy,
            args.receiver_no_proxy,
            settings=(http, https, no_proxy),
        )
    except ProxySettingsError as error:
        raise SystemExit(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeat for more; default: every namespace)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument(
        "--drift-interval",
        type=float,
        default=300.0,
        help="seconds between drift checks of each resource (default 300)",
    )
    parser.add_argument(
        "--drift-jitter",
        type=float,
        default=0.1,
        help="spread of the drift checks, as a fraction of the interval (default 0.1)",
    )
    parser.add_argument(
        "--heal-interval",
        type=float,
        default=3600.0,
        help="seconds: at most one healing rotation per resource this often (default 3600)",
    )
    parser.add_argument(
        "--api-base-url",
        help="default Gemini API base URL (resources may override it with spec.apiBaseUrl)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="elect one active replica by a coordination.k8s.io Lease; the others stand by "
        "(needed with more than one replica)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="the Lease's namespace (default: $POD_NAMESPACE)",
    )
    parser.add_argument(
        "--leader-election-id",
        metavar="NAME",
        default=DEFAULT_LEASE_NAME,
        help="the Lease's name (default: %(default)s)",
    )
    default_timing = LeaseTiming()
    parser.add_argument(
        "--lease-duration",
        type=float,
        default=default_timing.lease_duration,
        help="seconds a follower waits after the leader's last renewal (default: %(default)s)",
    )
    parser.add_argument(
        "--renew-deadline",
        type=float,
        default=default_timing.renew_deadline,
        help="seconds the leader keeps acting without a successful renewal (default: %(default)s)",
    )
    parser.add_argument(
        "--retry-period",
        type=float,
        default=default_timing.retry_period,
        help="seconds between tries to acquire or renew the Lease (default: %(default)s)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (0: any)"
    )
    parser.add_argument(
        "--metrics-address", default="0.0.0.0", help="address of the metrics endpoint"
    )
    parser.add_argument(
        "--api-rate", type=float, default=20.0, help="WebhookService calls/s per API key"
    )
    parser.add_argument("--api-timeout", type=float, default=10.0, help="seconds per API call")
    parser.add_argument(
        "--max-concurrent-reconciles",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_RECONCILES,
        help="reconciliations running at once; more wait for a slot (bounds peak memory)",
    )
    parser.add_argument("--receiver-image", help="image of the receivers the operator deploys")
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument(
        "--receiver-network-policy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give each receiver a NetworkPolicy (default: on)",
    )
    parser.add_argument(
        "--receiver-public-namespace",
        default=NetworkPolicySettings.ingress_controller_namespace,
        help="namespace of the ingress controller, allowed on the receivers' public port "
        "unless a resource names its own peers (default: %(default)s)",
    )
    parser.add_argument(
        "--receiver-prometheus-namespace",
        default=NetworkPolicySettings.prometheus_namespace,
        help="namespace of the Prometheus scraping the receivers (default: %(default)s)",
    )
    parser.add_argument(
        "--api-server-port",
        type=int,
        action="append",
        help="a port the Kubernetes API servers listen on (the `kubernetes` Service's "
        "endpoint port), allowed in the receivers' NetworkPolicy egress; repeatable "
        f"(default: {', '.join(map(str, NetworkPolicySettings.api_server_ports))})",
    )
    parser.add_argument(
        "--operator-namespace",
        help="the operator's namespace, allowed on the receivers' internal port "
        "(default: $POD_NAMESPACE; unset: operator pods in any namespace)",
    )
    for flag, variable, what in RECEIVER_PROXY_FLAGS:
        parser.add_argument(
            flag,
            metavar=variable,
            default="",
            help=f"{what}, set as {variable} in every receiver the operator deploys "
            "(default: none)",
        )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    network_policy = NetworkPolicySettings(
        enabled=args.receiver_network_policy,
        ingress_controller_namespace=args.receiver_public_namespace,
        operator_namespace=args.operator_namespace or os.environ.get("POD_NAMESPACE") or None,
        prometheus_namespace=args.receiver_prometheus_namespace,
        api_server_ports=tuple(args.api_server_port or NetworkPolicySettings.api_server_ports),
    )
    receiver = ReceiverSettings(
        cluster_domain=args.cluster_domain,
        network_policy=network_policy,
        proxy=receiver_proxy(args),
    )
    if args.receiver_image:
        receiver = dataclasses.replace(receiver, image=args.receiver_image)
    if not all(0 < port < 65536 for port in network_policy.api_server_ports):
        raise SystemExit("--api-server-port must be a TCP port (1-65535)")
    if args.drift_interval <= 0:
        raise SystemExit("--drift-interval must be positive")
    if not 0 <= args.drift_jitter < 1:
        raise SystemExit("--drift-jitter must be in [0, 1)")
    if not args.heal_interval >= 0:  # also refuses NaN
        raise SystemExit("--heal-interval must be zero or more seconds")
    if args.max_concurrent_reconciles < 1:
        raise SystemExit("--max-concurrent-reconciles must be at least 1")
    try:
        proxies = ProxySettings.from_environ(os.environ)
    except ProxySettingsError as error:
        raise SystemExit(str(error)) from None
    election = None
    if args.leader_elect:
        namespace = args.leader_election_namespace or os.environ.get("POD_NAMESPACE")
        if not namespace:
            raise SystemExit("--leader-elect needs --leader-election-namespace or $POD_NAMESPACE")
        timing = LeaseTiming(args.lease_duration, args.renew_deadline, args.retry_period)
        if timing.problems():
            raise SystemExit("leader election: " + "; ".join(timing.problems()))
        election = LeaderElection(namespace, args.leader_election_id, timing)
    return RunConfig(
        namespaces=tuple(args.namespace),
        drift_interval=args.drift_interval,
        drift_jitter=args.drift_jitter,
        heal_interval=args.heal_interval,
        max_concurrent_reconciles=args.max_concurrent_reconciles,
        default_api_base_url=args.api_base_url,
        leader_election=election,
        liveness_endpoint=args.liveness,
        service=ServiceSettings(timeout_seconds=args.api_timeout, rate=args.api_rate),
        receiver=receiver,
        proxies=proxies,
    )


def freeze_imported_objects() -> None:
    """Moves everything alive now — some 130,000 objects the collector tracks, nearly all of
    imported modules, which live as long as the process — out of the cyclic garbage
    collector's sight (`gc.freeze`, made for this). A full collection then runs once the
    operator's own objects grow by a quarter, not the imports too, so a burst's cyclic
    garbage is freed sooner and each collection is shorter. bench/operator --kube real,
    1,000 resources: peak RSS 195-196 -> 187-194 MiB (4 runs), Ready in 22-26 s instead of
    27-29 s."""
    gc.collect()
    gc.freeze()


def prepare_process() -> None:
    """What the operator's process does once, before it elects or serves (a standby too):
    TLS read buffers bounded, the SDK's WebhookService loaded ahead (so a new leader does
    not pay it), then everything imported frozen out of the collector's sight."""
    bound_tls_read_buffer()
    warm_up_sdk()
    freeze_imported_objects()


def start_tracing() -> None:
    """Spans of every reconciliation and WebhookService call exported as the process's
    `OTEL_*` environment says, when it turns tracing on (`gemini_webhooks.tracing`); the
    global tracer provider stays OpenTelemetry's no-op one otherwise."""
    if tracing.configured(os.environ):
        trace.set_tracer_provider(tracing.tracer_provider(os.environ, "gemini-webhook-operator"))


def run(args: argparse.Namespace, *, step: StepHook | None = None) -> int:
    """The operator, until it stops; `step` is awaited at each of `reconciler.STEPS`."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = config_from_args(args)
    try:
        start_tracing()
    except TracingConfigError as error:
        raise SystemExit(str(error)) from None
    prepare_process()
    try:
        access = ClusterAccess.load(args.kubeconfig, args.context)
    except (KubeConfigError, OSError, KeyError, ValueError) as error:
        raise SystemExit(f"cannot load the cluster's credentials: {error}") from None
    if args.metrics_port is not None:
        port = metrics.serve(args.metrics_port, addr=args.metrics_address)
        logging.getLogger("gemini_webhook_operator").info("metrics on port %d", port)
    try:
        asyncio.run(_serve(access, config, step))
    except KeyboardInterrupt:
        return 130
    except runtime.LeadershipLost as lost:
        # As controller-runtime's manager: stop, and let the kubelet restart a follower.
        logging.getLogger("gemini_webhook_operator").error("%s; exiting", lost)
        return 1
    return 0


async def _serve(access: ClusterAccess, config: RunConfig, step: StepHook | None) -> None:
    operator = None if step is None else runtime.build_operator(access, config, step=step)
    await runtime.run(access, config, operator=operator)
