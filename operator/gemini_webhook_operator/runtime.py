"""Run the operator: build its parts, hand them to `kopf.operator`, close them afterwards.

Used by the CLI and by the tests (in-process, on the test's event loop) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
from aiohttp import web
from opentelemetry.trace import Tracer

from gemini_webhook_operator import handlers, health_checker
from gemini_webhook_operator.cluster_access import kopf_session
from gemini_webhook_operator.kube import JSON, Kube, KubeError, label_selector
from gemini_webhook_operator.leader import DEFAULT_LEASE_NAME, LeaderElector, LeaseTiming
from gemini_webhook_operator.metrics import METRICS, OperatorMetrics
from gemini_webhook_operator.receiver_names import selector_labels
from gemini_webhook_operator.receiver_resources import ReceiverSettings
from gemini_webhook_operator.reconcile_context import (
    DEFAULT_MAX_CONCURRENT_RECONCILES,
    Clock,
    Operator,
    Settings,
    StepHook,
    SystemClock,
)
from gemini_webhook_operator.signing_store import current_fingerprint
from gemini_webhook_operator.webhookservice import ServiceSettings, WebhookServices
from gemini_webhooks.contracts.egress_proxy import ProxySettings
from gemini_webhooks.kube_access import ClusterAccess


@dataclass(frozen=True)
class LeaderElection:
    """Which Lease the replicas elect their leader by (`leader.py`), and its timing."""

    namespace: str
    name: str = DEFAULT_LEASE_NAME
    timing: LeaseTiming = field(default_factory=LeaseTiming)


class LeadershipLost(RuntimeError):
    """This replica stopped leading while it ran; it must stop (and be restarted)."""


@dataclass
class RunConfig:
    namespaces: Collection[str] = ()  # empty: every namespace
    drift_interval: float = 300.0
    drift_jitter: float = 0.1
    health_tick: float = 30.0
    health_retry: float = 60.0  # an unverified health check is re-checked this soon
    default_api_base_url: str | None = None
    leader_election: LeaderElection | None = None  # None: a single replica, no election
    liveness_endpoint: str | None = None
    service: ServiceSettings = field(default_factory=ServiceSettings)
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings)
    # HTTP(S)_PROXY/NO_PROXY for the receivers' ping status: the process's, unless told.
    proxies: ProxySettings = field(default_factory=lambda: ProxySettings.from_environ(os.environ))
    api_key_retry: float = 60.0
    auth_retry: float = 300.0
    error_backoff: float = 10.0  # seconds before retrying a transient failure
    heal_interval: float = 3600.0  # at most one healing rotation per resource this often
    max_concurrent_reconciles: int = DEFAULT_MAX_CONCURRENT_RECONCILES
    watch_timeout: float = 300.0  # server-side timeout of kopf's watch requests
    exit_timeout: float = 2.0  # how long workers may finish their queue at shutdown


def build_operator(
    access: ClusterAccess,
    config: RunConfig,
    *,
    metrics: OperatorMetrics = METRICS,
    clock: Clock | None = None,
    step: StepHook | None = None,
    write_guard: Callable[[str], None] | None = None,
    tracer: Tracer | None = None,
) -> Operator:
    """The operator's parts; `write_guard` refuses its writes (Kubernetes and WebhookService
    calls alike) by raising, as the leader fence does when this replica is not the leader."""
    op = Operator(
        kube=Kube(access, write_guard=write_guard),
        services=WebhookServices(
            metrics,
            config.service,
            default_base_url=config.default_api_base_url,
            guard=write_guard,
            tracer=tracer,
        ),
        metrics=metrics,
        clock=clock or SystemClock(),
        settings=Settings(
            drift_interval=config.drift_interval,
            api_key_retry=config.api_key_retry,
            auth_retry=config.auth_retry,
            error_backoff=config.error_backoff,
            heal_interval=config.heal_interval,
            max_concurrent_reconciles=config.max_concurrent_reconciles,
        ),
        receiver_settings=config.receiver,
    )
    if tracer is not None:
        op.tracer = tracer
    if step is not None:
        op.step = step
    return op


def receiver_pods(kube: Kube) -> health_checker.ReceiverPods:
    """The health check's view of a receiver's pods: listed by the Deployment's selector."""
    logger = logging.getLogger("gemini_webhook_operator.health")

    async def pods(resource: Mapping[str, Any]) -> list[JSON]:
        metadata = resource["metadata"]
        selector = label_selector(selector_labels(metadata["name"]))
        try:
            return await kube.list("v1", "Pod", metadata["namespace"], selector)
        except KubeError as error:
            # Without them the check asks the Service (DeliveryVerified may be Unknown).
            logger.warning("receiver pods not listed for the health check: %s", error)
            return []

    return pods


def kopf_watch_streams(config: RunConfig) -> int:
    """How many watches kopf keeps open: GeminiWebhooks in each namespace (or one
    cluster-wide), and its observers of CustomResourceDefinitions and Namespaces (the
    latter for namespace patterns)."""
    return (len(config.namespaces) or 1) + 2


def operator_identity(
    environ: Mapping[str, str], uid: int, host: str, started: datetime, suffix: str
) -> str:
    """This replica's name: the leader Lease's holderIdentity while it leads, and kopf's.

    The Pod's name where the Deployment passes it (`POD_NAME`, as the chart does; kopf's
    own convention, `POD_ID`, first), else `uid-<uid>@<host>/<start>/<suffix>`. kopf's own
    fallback asks `getpass.getuser()`, which raises for a user without a passwd entry —
    the image's UID 65532 has none — so the operator crashed at start in every Pod
    without `POD_ID`.
    """
    for variable in ("POD_ID", "POD_NAME"):
        if environ.get(variable):
            return environ[variable]
    return f"uid-{uid}@{host}/{started.strftime('%Y%m%d%H%M%S')}/{suffix}"


def kopf_settings(config: RunConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    # kube-apiserver parses timeoutSeconds as an integer: "300.0" is a 400 Bad Request,
    # and kopf sends the value as it is given.
    settings.watching.server_timeout = max(1, round(config.watch_timeout))
    settings.watching.client_timeout = config.watch_timeout + 30
    settings.queueing.exit_timeout = config.exit_timeout
    settings.background.instant_exit_timeout = min(0.1, config.exit_timeout)
    return settings


def own_identity() -> str:
    return operator_identity(
        os.environ, os.getuid(), socket.gethostname(), datetime.now(UTC), secrets.token_hex(2)
    )


async def _until_set(flag: asyncio.Event | threading.Event) -> None:
    if isinstance(flag, asyncio.Event):
        await flag.wait()
        return
    # A threading.Event set from another thread: polled, as kopf itself does with one.
    while not flag.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def standby_health(endpoint: str | None) -> AsyncIterator[None]:
    """While this replica waits for the Lease, answer its liveness/readiness probes at the
    endpoint kopf serves once it leads: a standby is alive and ready (a rolling update
    waits for the new Pod to be Ready while the old one still holds the Lease). Closed
    before kopf binds the same address."""
    if endpoint is None:
        yield
        return
    parts = urllib.parse.urlsplit(endpoint)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"leader": False, "standby": True})

    app = web.Application()
    app.router.add_get(parts.path or "/", health)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "127.0.0.1", parts.port or 80).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def run(
    access: ClusterAccess,
    config: RunConfig,
    *,
    operator: Operator | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    identity: str | None = None,
) -> None:
    """Run until `stop_flag` is set (or a signal stops kopf). With leader election, wait to
    hold the Lease first, and raise LeadershipLost once it is lost."""
    me = identity or own_identity()
    election = config.leader_election
    elector: LeaderElector | None = None
    if election is not None:
        metrics = operator.metrics if operator is not None else METRICS
        elector = LeaderElector(
            Kube(access),  # its own connection pool: renewals never queue behind reconciles
            election.namespace,
            election.name,
            me,
            election.timing,
            on_change=lambda leading: metrics.set_leader(me, leading),
        )
        metrics.set_leader(me, False)
    op = operator or build_operator(
        access, config, write_guard=elector.fence.check if elector is not None else None
    )
    if elector is None:
        await _run_kopf(access, config, op, me, stop_flag, ready_flag, None)
        return
    if operator is not None:  # built by the caller: fence it here
        op.kube.write_guard = elector.fence.check
        op.services.guard = elector.fence.check
    stopping = asyncio.Event()
    helpers: list[asyncio.Task[None]] = []
    if stop_flag is not None:

        async def forward_stop(flag: asyncio.Event | threading.Event = stop_flag) -> None:
            await _until_set(flag)
            stopping.set()

        helpers.append(asyncio.create_task(forward_stop()))
    lost = False
    try:
        # A process of its own (no stop flag): a signal while standing by stops it cleanly;
        # kopf installs its own handlers once it runs.
        signals = _stop_on_signals(stopping) if stop_flag is None else contextlib.nullcontext()
        with signals:
            async with standby_health(config.liveness_endpoint):
                acquiring = asyncio.create_task(elector.acquire())
                stopped = asyncio.create_task(stopping.wait())
                await asyncio.wait({acquiring, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
        if not acquiring.done():
            acquiring.cancel()
            await _close(op)
            return

        async def hold() -> None:
            nonlocal lost
            await elector.hold()
            lost = True
            stopping.set()

        helpers.append(asyncio.create_task(hold()))
        await _run_kopf(access, config, op, me, stopping, ready_flag, elector.fence.check)
    finally:
        for task in helpers:
            task.cancel()
        if not lost:
            await elector.release()
        await elector.kube.close()
    if lost:
        raise LeadershipLost(f"{me} lost the leader Lease {elector.namespace}/{elector.name}")


@contextlib.contextmanager
def _stop_on_signals(stopping: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stopping` (a standby told to stop by a rolling update exits
    0 at once, as kopf's leader does, rather than dying of the signal)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stopping.set)  # main thread, Unix only
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _close(op: Operator) -> None:
    await op.services.close()
    await op.kube.close()


async def _run_kopf(
    access: ClusterAccess,
    config: RunConfig,
    op: Operator,
    identity: str,
    stop_flag: asyncio.Event | threading.Event | None,
    ready_flag: asyncio.Event | threading.Event | None,
    write_guard: Callable[[str], None] | None,
) -> None:
    registry = handlers.build_registry(
        handlers.HandlerConfig(
            drift_interval=config.drift_interval,
            drift_jitter=config.drift_jitter,
            health_tick=config.health_tick,
        )
    )

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.AiohttpSession:
        return kopf_session(
            access, watch_streams=kopf_watch_streams(config), write_guard=write_guard
        )

    settings = kopf_settings(config)
    settings.posting.reporting_instance = identity[:128]  # which replica (the API caps it)
    checker = health_checker.HealthChecker(
        metrics=op.metrics,
        clock=op.clock.now,
        cluster_domain=config.receiver.cluster_domain,
        proxies=config.proxies,
        retry_after=timedelta(seconds=config.health_retry),
        receiver_pods=receiver_pods(op.kube),
        held_fingerprint=lambda spec: current_fingerprint(
            op.kube, spec.namespace, spec.signing_secret_name, spec.uid
        ),
    )
    memo = kopf.Memo(operator=op, health=checker, health_memos=handlers._HealthMemos())
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            memo=memo,
            namespaces=list(config.namespaces),
            clusterwide=not config.namespaces,
            # One replica acts: the leader Lease decides which, not kopf's peering.
            standalone=True,
            # kopf types it as a NewType of str that it does not export.
            identity=cast(Any, identity),
            liveness_endpoint=config.liveness_endpoint,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        await checker.close()
        await _close(op)
