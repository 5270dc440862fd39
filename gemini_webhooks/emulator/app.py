"""The `Emulator`: an aiohttp application serving the Gemini API's WebhookService and
batches, the JWKS of dynamic-webhook tokens, and the emulator's own control API.

Embeddable: `async with Emulator(EmulatorConfig()) as emulator:` starts it on an ephemeral
loopback port (`emulator.base_url`); `gemini-webhooks emulator` runs the same class.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web

from gemini_webhooks.contracts.delivery import (
    ENVELOPE_VERSION,
    GOOGLE_ISSUER,
    JWKS_PATH,
)
from gemini_webhooks.contracts.times import rfc3339

from . import batches as batch_model
from . import decisions
from .batch_service import BatchService
from .calls import CallLog
from .clock import Clock, SystemClock, TimeScale, WallClock
from .control_api import CONTROL_PREFIX, ControlApi
from .delivery import DeliveryEngine, DeliverySettings
from .http_plumbing import auth_middleware, calls_middleware, errors_middleware, json_response
from .keys import KeyRing
from .webhook_service import WebhookService
from .webhooks import SecretReporting, WebhookStore

log = logging.getLogger("gemini_webhooks.emulator")

API_VERSIONS = ("v1", "v1beta", "v1alpha")
_PUBLIC_PATHS = (JWKS_PATH, f"{CONTROL_PREFIX}/healthz")


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    api_keys: tuple[str, ...] = ()
    batch_seconds: float = 10.0  # nominal; divided by time_scale
    time_scale: float = 1.0
    issuer: str = GOOGLE_ISSUER
    delivery_timeout: float = 5.0
    per_target_concurrency: int = 4
    retry: decisions.RetryPolicy = field(default_factory=decisions.RetryPolicy)
    disable_after: timedelta = timedelta(hours=24)
    secret_grace: timedelta = timedelta(hours=24)
    key_overlap: timedelta = timedelta(hours=24)
    max_body_bytes: int = 1024 * 1024
    secret_reporting: SecretReporting = field(default_factory=SecretReporting)

    def __repr__(self) -> str:  # API keys stay out of logs and tracebacks
        return (
            f"EmulatorConfig(host={self.host!r}, port={self.port}, "
            f"api_keys=<{len(self.api_keys)}>, batch_seconds={self.batch_seconds}, "
            f"time_scale={self.time_scale})"
        )


class Emulator:
    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.clock: Clock = clock or SystemClock()
        # The WebhookService's own time (create/update times, secret grace); the clock by
        # default. Tests that simulate weeks of operator time set it to the operator's fake
        # clock, while deliveries keep real timestamps that receivers accept.
        self.service_clock: WallClock = self.clock
        self.scale = TimeScale(self.config.time_scale)
        # Endpoint overrides, like curl's --resolve (`host:port` or `namespace/name:port` ->
        # `addr:port`), read at every delivery attempt; set through the control API.
        self.endpoint_overrides: dict[str, str] = {}
        self.webhooks = WebhookStore(self.config.secret_reporting)
        self.calls = CallLog()
        self.batches = batch_model.BatchStore()
        self.keys = KeyRing(self.clock.now())
        self.engine = DeliveryEngine(
            clock=self.clock,
            scale=self.scale,
            settings=DeliverySettings(
                timeout=self.config.delivery_timeout,
                per_target_concurrency=self.config.per_target_concurrency,
                retry=self.config.retry,
                disable_after=self.config.disable_after,
                issuer=self.config.issuer,
            ),
            webhooks=self.webhooks,
            keys=self.keys,
            overrides=lambda: self.endpoint_overrides,
            rng=rng,
        )
        self.default_outcome: dict[str, Any] = {"outcome": "succeeded"}
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.app = self._build_app()

    # --- lifecycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("emulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        await self.engine.start()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1] if sockets else self.config.port
        log.info(json.dumps({"msg": "emulator started", "url": self.base_url}))

    async def stop(self) -> None:
        await self._cancel_batches()
        await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info(json.dumps({"msg": "emulator stopped"}))

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def idle(self) -> None:
        """Wait until every delivery has settled (delivered, failed or abandoned)."""
        await self.engine.idle()

    async def reset(self) -> None:
        """Forget every webhook, batch and delivery (API keys and signing keys stay)."""
        await self._cancel_batches()
        await self.engine.reset()
        self.webhooks.clear()
        self.batches.clear()
        self.calls.clear()
        self.default_outcome = {"outcome": "succeeded"}

    async def _cancel_batches(self) -> None:
        tasks = list(self._batch_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._batch_tasks.clear()

    # --- events -----------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        data: dict[str, Any],
        webhook_config: batch_model.WebhookConfig | None = None,
    ) -> dict[str, Any]:
        """Deliver one event: to a job's own URIs when it has a webhook_config, else to the
        registered webhooks subscribed to its type."""
        now = self.clock.now()
        event_id = f"evt_{secrets.token_hex(10)}"
        envelope: dict[str, Any] = {
            "type": event_type,
            "version": ENVELOPE_VERSION,
            "timestamp": rfc3339(now),
            "data": data,
        }
        if webhook_config is not None:
            if webhook_config.user_metadata is not None:
                envelope["user_metadata"] = webhook_config.user_metadata
            deliveries = self.engine.submit_dynamic(event_id, envelope, list(webhook_config.uris))
        else:
            targets = decisions.static_targets((w.view() for w in self.webhooks), event_type)
            deliveries = self.engine.submit_static(event_id, envelope, targets)
        log.info(
            json.dumps(
                {
                    "msg": "event emitted",
                    "event_id": event_id,
                    "type": event_type,
                    "dynamic": webhook_config is not None,
                    "deliveries": len(deliveries),
                }
            )
        )
        return {
            "event_id": event_id,
            "envelope": envelope,
            "deliveries": [d.id for d in deliveries],
        }

    def finish_batch(
        self,
        batch: batch_model.Batch,
        outcome: batch_model.Outcome,
        error_code: int | str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        data = batch_model.BatchStore.finish(
            batch, outcome, self.clock.now(), error_code=error_code, error_message=error_message
        )
        return self.emit(f"batch.{outcome}", data, batch.webhook_config)

    def run_batch(self, batch: batch_model.Batch) -> None:
        """Run a new batch in the background: pending, running, then its planned outcome."""
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run_batch(self, batch: batch_model.Batch) -> None:
        total = self.scale.seconds(self.config.batch_seconds)
        await self.clock.sleep(total / 2)
        if batch.done:
            return
        batch.state = "running"
        batch.update_time = self.clock.now()
        await self.clock.sleep(total / 2)
        if batch.done:
            return
        plan = batch.planned or self.default_outcome
        self.finish_batch(batch, plan["outcome"], plan.get("error_code"), plan.get("error_message"))

    # --- HTTP plumbing ----------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_body_bytes,
            middlewares=[
                calls_middleware(self.calls, self.clock),
                errors_middleware(self.config.max_body_bytes),
                auth_middleware(self.config.api_keys, _PUBLIC_PATHS),
            ],
        )
        webhooks, batches = WebhookService(self), BatchService(self)
        for version in API_VERSIONS:
            webhooks.add_routes(app.router, f"/{version}")
            batches.add_routes(app.router, f"/{version}")
        app.router.add_get(JWKS_PATH, self._jwks)
        ControlApi(self).add_routes(app.router)
        return app

    # --- JWKS -------------------------------------------------------------------------

    async def _jwks(self, request: web.Request) -> web.Response:
        response = json_response(self.keys.jwks(self.clock.now()))
        response.headers["cache-control"] = "public, max-age=60"
        return response
