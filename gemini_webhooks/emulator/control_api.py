"""The emulator's own control API (`/emulator/v1/...`), for tests and demos: emit events,
inspect deliveries and calls, finish or plan batches, roll the signing keys over, set how
secrets are reported and where endpoints resolve. Its client is `control.ControlClient`."""

from __future__ import annotations

import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import batches as batch_model
from . import decisions
from .errors import invalid_argument, not_found
from .http_plumbing import json_response, read_object
from .webhooks import SecretReporting

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger("gemini_webhooks.emulator")

CONTROL_PREFIX = "/emulator/v1"


class ControlApi:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def add_routes(self, router: web.UrlDispatcher) -> None:
        c = CONTROL_PREFIX
        router.add_get(f"{c}/healthz", self.healthz)
        router.add_post(f"{c}/reset", self.reset)
        router.add_post(f"{c}/events", self.event)
        router.add_get(f"{c}/deliveries", self.deliveries)
        router.add_get(f"{c}/calls", self.calls)
        router.add_get(f"{c}/deliveries/{{id}}", self.delivery)
        router.add_post(f"{c}/batches/{{id}}", self.batch_method)
        router.add_put(f"{c}/batch-outcome", self.batch_outcome)
        router.add_post(f"{c}/signing-keys:rollover", self.key_rollover)
        router.add_get(f"{c}/secret-reporting", self.get_reporting)
        router.add_put(f"{c}/secret-reporting", self.put_reporting)
        router.add_get(f"{c}/endpoint-overrides", self.get_overrides)
        router.add_put(f"{c}/endpoint-overrides", self.put_overrides)

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"ok": True})

    async def reset(self, request: web.Request) -> web.Response:
        await self.emulator.reset()
        return json_response({})

    async def event(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        unknown = set(body) - {"type", "data", "webhook_config"}
        if unknown:
            raise invalid_argument(f"unknown field {sorted(unknown)[0]!r}")
        event_type = body.get("type")
        if not isinstance(event_type, str):
            raise invalid_argument("type is required")
        given = body.get("data") or {}
        if not isinstance(given, dict):
            raise invalid_argument("data must be an object")
        data = decisions.event_data(event_type, given, self.default_data(event_type))
        config = batch_model.parse_webhook_config(body.get("webhook_config"))
        return json_response(self.emulator.emit(event_type, data, config))

    @staticmethod
    def default_data(event_type: str) -> dict[str, Any]:
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

    async def deliveries(self, request: web.Request) -> web.Response:
        q = request.query
        found = self.emulator.engine.deliveries(
            webhook_id=q.get("webhook_id"),
            event_type=q.get("event_type"),
            event_id=q.get("event_id"),
            state=q.get("state"),
        )
        return json_response({"deliveries": [d.to_json() for d in found]})

    async def calls(self, request: web.Request) -> web.Response:
        return json_response(self.emulator.calls.show(request.query.get("source")))

    async def delivery(self, request: web.Request) -> web.Response:
        delivery = self.emulator.engine.get(request.match_info["id"])
        if delivery is None:
            raise not_found(f"delivery {request.match_info['id']!r} not found")
        return json_response(delivery.to_json())

    @staticmethod
    def parse_outcome(body: dict[str, Any]) -> dict[str, Any]:
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

    async def batch_method(self, request: web.Request) -> web.Response:
        batch_id, _, method = request.match_info["id"].partition(":")
        if method not in ("finish", "plan"):
            raise not_found(f"no such method: {request.method} {request.path}")
        plan = self.parse_outcome(await read_object(request))
        batch = self.emulator.batches.get(batch_id)
        if method == "plan":
            if batch.done:
                raise invalid_argument(f"batch {batch.name} is already {batch.state}")
            batch.planned = plan
            return json_response(batch.operation())
        event = self.emulator.finish_batch(
            batch, plan["outcome"], plan["error_code"], plan["error_message"]
        )
        return json_response({"batch": batch.operation(), "event": event})

    async def batch_outcome(self, request: web.Request) -> web.Response:
        self.emulator.default_outcome = self.parse_outcome(await read_object(request))
        return json_response(self.emulator.default_outcome)

    async def key_rollover(self, request: web.Request) -> web.Response:
        key = self.emulator.keys.rollover(
            self.emulator.clock.now(), self.emulator.scale.delta(self.emulator.config.key_overlap)
        )
        log.info(json.dumps({"msg": "signing key rolled over", "kid": key.kid}))
        return json_response({"kid": key.kid})

    async def get_reporting(self, request: web.Request) -> web.Response:
        return json_response(self.emulator.webhooks.reporting.to_json())

    async def put_reporting(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        unknown = set(body) - {"mode", "head", "tail"}
        if unknown:
            raise invalid_argument(f"unknown field {sorted(unknown)[0]!r}")
        head, tail = body.get("head", 4), body.get("tail", 4)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (head, tail)):
            raise invalid_argument("head and tail must be integers")
        try:
            self.emulator.webhooks.reporting = SecretReporting(
                body.get("mode", "truncated"), head, tail
            )
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        return json_response(self.emulator.webhooks.reporting.to_json())

    async def get_overrides(self, request: web.Request) -> web.Response:
        return json_response({"overrides": dict(self.emulator.endpoint_overrides)})

    async def put_overrides(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        overrides = body.get("overrides", {})
        if not isinstance(overrides, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in overrides.items()
        ):
            raise invalid_argument("overrides must be an object of strings")
        self.emulator.endpoint_overrides.clear()
        self.emulator.endpoint_overrides.update(overrides)
        return json_response({"overrides": dict(self.emulator.endpoint_overrides)})
