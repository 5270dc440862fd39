"""The `Emulator`: an aiohttp application serving the Gemini API's WebhookService and
batches, the JWKS of dynamic-webhook tokens, and the emulator's own control API.

Embeddable: `async with Emulator(EmulatorConfig()) as emulator:` starts it on an ephemeral
loopback port (`emulator.base_url`); `gemini-webhooks emulator` runs the same class.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web

from gemini_webhooks.contracts.delivery import (
    ENVELOPE_VERSION,
    GOOGLE_ISSUER,
    JWKS_PATH,
    PING_EVENT_TYPE,
)
from gemini_webhooks.contracts.times import rfc3339

from . import batches as batch_model
from . import decisions
from .calls import Call, CallLog, operation
from .clock import Clock, SystemClock, TimeScale, WallClock
from .delivery import DeliveryEngine, DeliverySettings
from .errors import ApiError, invalid_argument, not_found, permission_denied, unauthenticated
from .keys import KeyRing
from .webhooks import SecretReporting, WebhookStore

log = logging.getLogger("gemini_webhooks.emulator")

CONTROL_PREFIX = "/emulator/v1"
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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


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
            middlewares=[self._calls_middleware, self._errors_middleware, self._auth_middleware],
        )
        r = app.router
        for version in API_VERSIONS:
            base = f"/{version}"
            r.add_get(f"{base}/webhooks", self._list_webhooks)
            r.add_post(f"{base}/webhooks", self._create_webhook)
            r.add_get(f"{base}/webhooks/{{id}}", self._get_webhook)
            r.add_patch(f"{base}/webhooks/{{id}}", self._update_webhook)
            r.add_delete(f"{base}/webhooks/{{id}}", self._delete_webhook)
            r.add_post(f"{base}/webhooks/{{id}}", self._webhook_method)
            r.add_post(f"{base}/webhooks/{{id}}/rotate_secret", self._rotate_guide_spelling)
            r.add_post(f"{base}/models/{{model}}", self._model_method)
            r.add_get(f"{base}/batches", self._list_batches)
            r.add_get(f"{base}/batches/{{id}}", self._get_batch)
            r.add_delete(f"{base}/batches/{{id}}", self._delete_batch)
            r.add_post(f"{base}/batches/{{id}}", self._batch_method)
        r.add_get(JWKS_PATH, self._jwks)
        c = CONTROL_PREFIX
        r.add_get(f"{c}/healthz", self._healthz)
        r.add_post(f"{c}/reset", self._control_reset)
        r.add_post(f"{c}/events", self._control_event)
        r.add_get(f"{c}/deliveries", self._control_deliveries)
        r.add_get(f"{c}/calls", self._control_calls)
        r.add_get(f"{c}/deliveries/{{id}}", self._control_delivery)
        r.add_post(f"{c}/batches/{{id}}", self._control_batch_method)
        r.add_put(f"{c}/batch-outcome", self._control_batch_outcome)
        r.add_post(f"{c}/signing-keys:rollover", self._control_key_rollover)
        r.add_get(f"{c}/secret-reporting", self._control_get_reporting)
        r.add_put(f"{c}/secret-reporting", self._control_put_reporting)
        r.add_get(f"{c}/endpoint-overrides", self._control_get_overrides)
        r.add_put(f"{c}/endpoint-overrides", self._control_put_overrides)
        return app

    @web.middleware
    async def _calls_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Records each WebhookService call with its caller's address and its answer (after
        the errors middleware made every failure an answer)."""
        named = operation(request.method, request.path)
        response = await handler(request)
        if named is not None:
            what, webhook_id = named
            source = request.remote or ""
            now = self.clock.now()
            self.calls.record(Call(now, source, what, webhook_id, response.status))
        return response

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            log.info(
                json.dumps(
                    {
                        "msg": "request refused",
                        "method": request.method,
                        "path": request.path,
                        "code": error.code,
                        "status": error.status,
                    }
                )
            )
            return _json(error.body(), status=error.code)
        except web.HTTPException as error:
            status = {
                404: "NOT_FOUND",
                405: "UNIMPLEMENTED",
                413: "INVALID_ARGUMENT",
            }.get(error.status, "INVALID_ARGUMENT" if error.status < 500 else "INTERNAL")
            message = {
                404: f"no such method: {request.method} {request.path}",
                405: f"method {request.method} is not allowed on {request.path}",
                413: f"request body larger than {self.config.max_body_bytes} bytes",
            }.get(error.status, error.reason)
            body = {"error": {"code": error.status, "message": message, "status": status}}
            return _json(body, status=error.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error handling %s %s", request.method, request.path)
            body = {"error": {"code": 500, "message": "internal error", "status": "INTERNAL"}}
            return _json(body, status=500)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.config.api_keys and request.path not in _PUBLIC_PATHS:
            given = request.headers.get("x-goog-api-key") or request.query.get("key")
            if not given:
                raise unauthenticated()
            matched = False
            for key in self.config.api_keys:
                matched |= hmac.compare_digest(given.encode(), key.encode())
            if not matched:
                raise permission_denied()
        return await handler(request)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return None
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise invalid_argument("Invalid JSON payload received.") from None

    async def _object_body(self, request: web.Request) -> dict[str, Any]:
        body = await self._body(request)
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise invalid_argument("request body must be a JSON object")
        return body

    # --- WebhookService ---------------------------------------------------------------

    async def _create_webhook(self, request: web.Request) -> web.Response:
        new = decisions.parse_create(await self._body(request))
        now = self.service_clock.now()
        webhook, secret = self.webhooks.create(new, now)
        log.info(json.dumps({"msg": "webhook created", "webhook_id": webhook.id}))
        resource = self.webhooks.show(webhook, now)
        resource["new_signing_secret"] = secret
        return _json(resource)

    async def _get_webhook(self, request: web.Request) -> web.Response:
        webhook = self.webhooks.get(request.match_info["id"])
        return _json(self.webhooks.show(webhook, self.service_clock.now()))

    async def _list_webhooks(self, request: web.Request) -> web.Response:
        size = decisions.parse_page_size(
            request.query.get("page_size", request.query.get("pageSize"))
        )
        token = request.query.get("page_token", request.query.get("pageToken")) or None
        items, next_token = self.webhooks.page(size, token)
        now = self.service_clock.now()
        body: dict[str, Any] = {"webhooks": [self.webhooks.show(w, now) for w in items]}
        if next_token:
            body["next_page_token"] = next_token
        return _json(body)

    async def _update_webhook(self, request: web.Request) -> web.Response:
        webhook_id = request.match_info["id"]
        mask = decisions.parse_update_mask(
            request.query.get("update_mask", request.query.get("updateMask"))
        )
        body = await self._body(request)
        changes = decisions.parse_update({} if body is None else body, mask)
        self.webhooks.get(webhook_id)  # 404 before anything changes
        webhook = self.webhooks.update(webhook_id, changes, self.service_clock.now())
        log.info(
            json.dumps(
                {"msg": "webhook updated", "webhook_id": webhook.id, "fields": sorted(changes)}
            )
        )
        return _json(self.webhooks.show(webhook, self.service_clock.now()))

    async def _delete_webhook(self, request: web.Request) -> web.Response:
        self.webhooks.delete(request.match_info["id"])
        log.info(json.dumps({"msg": "webhook deleted", "webhook_id": request.match_info["id"]}))
        return _json({})

    async def _webhook_method(self, request: web.Request) -> web.Response:
        webhook_id, _, method = request.match_info["id"].partition(":")
        if method == "ping":
            await self._object_body(request)
            return self._ping(webhook_id)
        if method == "rotateSigningSecret":
            return self._rotate(webhook_id, await self._body(request))
        raise not_found(f"no such method: {request.method} {request.path}")

    async def _rotate_guide_spelling(self, request: web.Request) -> web.Response:
        return self._rotate(request.match_info["id"], await self._body(request))

    def _rotate(self, webhook_id: str, body: Any) -> web.Response:
        behavior = decisions.parse_revocation(body)
        secret = self.webhooks.rotate(
            webhook_id,
            behavior,
            self.service_clock.now(),
            self.scale.delta(self.config.secret_grace),
        )
        log.info(
            json.dumps({"msg": "secret rotated", "webhook_id": webhook_id, "behavior": behavior})
        )
        return _json({"secret": secret})

    def _ping(self, webhook_id: str) -> web.Response:
        webhook = self.webhooks.get(webhook_id)
        now = self.clock.now()
        data = {"id": webhook.id, "message": "test event"}
        envelope = {
            "type": PING_EVENT_TYPE,
            "version": ENVELOPE_VERSION,
            "timestamp": rfc3339(now),
            "data": data,
        }
        event_id = f"evt_{secrets.token_hex(10)}"
        self.engine.submit_static(event_id, envelope, [webhook.id], counts_for_health=False)
        return _json({})

    # --- batches ----------------------------------------------------------------------

    async def _model_method(self, request: web.Request) -> web.Response:
        model, _, method = request.match_info["model"].partition(":")
        if method != "batchGenerateContent":
            raise not_found(f"no such method: {request.method} {request.path}")
        new = batch_model.parse_create(model, await self._body(request))
        batch = self.batches.create(new, self.clock.now())
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)
        log.info(
            json.dumps(
                {
                    "msg": "batch created",
                    "batch": batch.name,
                    "dynamic": batch.webhook_config is not None,
                }
            )
        )
        return _json(batch.operation())

    async def _get_batch(self, request: web.Request) -> web.Response:
        return _json(self.batches.get(request.match_info["id"]).operation())

    async def _delete_batch(self, request: web.Request) -> web.Response:
        self.batches.delete(request.match_info["id"])
        return _json({})

    async def _list_batches(self, request: web.Request) -> web.Response:
        size = decisions.parse_page_size(
            request.query.get("pageSize", request.query.get("page_size"))
        )
        token = request.query.get("pageToken", request.query.get("page_token")) or None
        after = self.webhooks.tokens.decode(token) if token else 0
        ordered = [b for b in self.batches.all() if b.seq > after]
        items = ordered[:size]
        body: dict[str, Any] = {"operations": [b.operation() for b in items]}
        if len(ordered) > size and items:
            body["nextPageToken"] = self.webhooks.tokens.encode(items[-1].seq)
        return _json(body)

    async def _batch_method(self, request: web.Request) -> web.Response:
        batch_id, _, method = request.match_info["id"].partition(":")
        if method != "cancel":
            raise not_found(f"no such method: {request.method} {request.path}")
        await self._object_body(request)
        batch = self.batches.get(batch_id)
        self.finish_batch(batch, "cancelled")
        return _json({})

    # --- JWKS -------------------------------------------------------------------------

    async def _jwks(self, request: web.Request) -> web.Response:
        response = _json(self.keys.jwks(self.clock.now()))
        response.headers["cache-control"] = "public, max-age=60"
        return response

    # --- control API ------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def _control_reset(self, request: web.Request) -> web.Response:
        await self.reset()
        return _json({})

    async def _control_event(self, request: web.Request) -> web.Response:
        body = await self._object_body(request)
        unknown = set(body) - {"type", "data", "webhook_config"}
        if unknown:
            raise invalid_argument(f"unknown field {sorted(unknown)[0]!r}")
        event_type = body.get("type")
        if not isinstance(event_type, str):
            raise invalid_argument("type is required")
        given = body.get("data") or {}
        if not isinstance(given, dict):
            raise invalid_argument("data must be an object")
        data = decisions.event_data(event_type, given, self._default_data(event_type))
        config = batch_model.parse_webhook_config(body.get("webhook_config"))
        return _json(self.emit(event_type, data, config))

    @staticmethod
    def _default_data(event_type: str) -> dict[str, Any]:
        token = secrets.token_hex(6)
        family = event_type.split(".")[0]
        return {
            "id": f"batches/{token}" if family == "batch" else f"interactions/{token}",
            "output_file_uri": f"files/batch-{token}-results",
            "error_code": 13,
            "error_message": f"{family} failed",
            "file_id": f"files/video-{token}",
            "video_uri": f"https://generativelanguage.googleapis.com/v1/files/video-{token}:download",
        }

    async def _control_deliveries(self, request: web.Request) -> web.Response:
        q = request.query
        found = self.engine.deliveries(
            webhook_id=q.get("webhook_id"),
            event_type=q.get("event_type"),
            event_id=q.get("event_id"),
            state=q.get("state"),
        )
        return _json({"deliveries": [d.to_json() for d in found]})

    async def _control_calls(self, request: web.Request) -> web.Response:
        return _json(self.calls.show(request.query.get("source")))

    async def _control_delivery(self, request: web.Request) -> web.Response:
        delivery = self.engine.get(request.match_info["id"])
        if delivery is None:
            raise not_found(f"delivery {request.match_info['id']!r} not found")
        return _json(delivery.to_json())

    @staticmethod
    def _parse_outcome(body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"outcome", "error_code", "error_message"}
        if unknown:
            raise invalid_argument(f"unknown field {sorted(unknown)[0]!r}")
        outcome = body.get("outcome")
        if outcome not in batch_model.OUTCOMES:
            raise invalid_argument(f"outcome must be one of {', '.join(batch_model.OUTCOMES)}")
        code = body.get("error_code")
        if code is not None and not isinstance(code, int | str):
            raise invalid_argument("error_code must be an integer or a string")
        message = body.get("error_message")
        if message is not None and not isinstance(message, str):
            raise invalid_argument("error_message must be a string")
        return {"outcome": outcome, "error_code": code, "error_message": message}

    async def _control_batch_method(self, request: web.Request) -> web.Response:
        batch_id, _, method = request.match_info["id"].partition(":")
        if method not in ("finish", "plan"):
            raise not_found(f"no such method: {request.method} {request.path}")
        plan = self._parse_outcome(await self._object_body(request))
        batch = self.batches.get(batch_id)
        if method == "plan":
            if batch.done:
                raise invalid_argument(f"batch {batch.name} is already {batch.state}")
            batch.planned = plan
            return _json(batch.operation())
        event = self.finish_batch(batch, plan["outcome"], plan["error_code"], plan["error_message"])
        return _json({"batch": batch.operation(), "event": event})

    async def _control_batch_outcome(self, request: web.Request) -> web.Response:
        self.default_outcome = self._parse_outcome(await self._object_body(request))
        return _json(self.default_outcome)

    async def _control_key_rollover(self, request: web.Request) -> web.Response:
        key = self.keys.rollover(self.clock.now(), self.scale.delta(self.config.key_overlap))
        log.info(json.dumps({"msg": "signing key rolled over", "kid": key.kid}))
        return _json({"kid": key.kid})

    async def _control_get_reporting(self, request: web.Request) -> web.Response:
        return _json(self.webhooks.reporting.to_json())

    async def _control_put_reporting(self, request: web.Request) -> web.Response:
        body = await self._object_body(request)
        unknown = set(body) - {"mode", "head", "tail"}
        if unknown:
            raise invalid_argument(f"unknown field {sorted(unknown)[0]!r}")
        head, tail = body.get("head", 4), body.get("tail", 4)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (head, tail)):
            raise invalid_argument("head and tail must be integers")
        try:
            self.webhooks.reporting = SecretReporting(body.get("mode", "truncated"), head, tail)
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        return _json(self.webhooks.reporting.to_json())

    async def _control_get_overrides(self, request: web.Request) -> web.Response:
        return _json({"overrides": dict(self.endpoint_overrides)})

    async def _control_put_overrides(self, request: web.Request) -> web.Response:
        body = await self._object_body(request)
        overrides = body.get("overrides", {})
        if not isinstance(overrides, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in overrides.items()
        ):
            raise invalid_argument("overrides must be an object of strings")
        self.endpoint_overrides.clear()
        self.endpoint_overrides.update(overrides)
        return _json({"overrides": dict(self.endpoint_overrides)})
