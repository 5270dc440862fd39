"""The Gemini API's WebhookService as the emulator serves it: create, get, list, update,
delete, rotate the signing secret (both spellings), ping."""

from __future__ import annotations

import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gemini_webhooks.contracts.delivery import ENVELOPE_VERSION, PING_EVENT_TYPE
from gemini_webhooks.contracts.times import rfc3339

from . import decisions
from .errors import not_found
from .http_plumbing import json_response, read_body, read_object

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger("gemini_webhooks.emulator")


class WebhookService:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def add_routes(self, router: web.UrlDispatcher, base: str) -> None:
        router.add_get(f"{base}/webhooks", self.list_webhooks)
        router.add_post(f"{base}/webhooks", self.create_webhook)
        router.add_get(f"{base}/webhooks/{{id}}", self.get_webhook)
        router.add_patch(f"{base}/webhooks/{{id}}", self.update_webhook)
        router.add_delete(f"{base}/webhooks/{{id}}", self.delete_webhook)
        router.add_post(f"{base}/webhooks/{{id}}", self.webhook_method)
        router.add_post(f"{base}/webhooks/{{id}}/rotate_secret", self.rotate_guide_spelling)

    async def create_webhook(self, request: web.Request) -> web.Response:
        new = decisions.parse_create(await read_body(request))
        now = self.emulator.service_clock.now()
        webhook, secret = self.emulator.webhooks.create(new, now)
        log.info(json.dumps({"msg": "webhook created", "webhook_id": webhook.id}))
        resource = self.emulator.webhooks.show(webhook, now)
        resource["new_signing_secret"] = secret
        return json_response(resource)

    async def get_webhook(self, request: web.Request) -> web.Response:
        webhook = self.emulator.webhooks.get(request.match_info["id"])
        return json_response(
            self.emulator.webhooks.show(webhook, self.emulator.service_clock.now())
        )

    async def list_webhooks(self, request: web.Request) -> web.Response:
        size = decisions.parse_page_size(
            request.query.get("page_size", request.query.get("pageSize"))
        )
        token = request.query.get("page_token", request.query.get("pageToken")) or None
        items, next_token = self.emulator.webhooks.page(size, token)
        now = self.emulator.service_clock.now()
        body: dict[str, Any] = {"webhooks": [self.emulator.webhooks.show(w, now) for w in items]}
        if next_token:
            body["next_page_token"] = next_token
        return json_response(body)

    async def update_webhook(self, request: web.Request) -> web.Response:
        webhook_id = request.match_info["id"]
        mask = decisions.parse_update_mask(
            request.query.get("update_mask", request.query.get("updateMask"))
        )
        body = await read_body(request)
        changes = decisions.parse_update({} if body is None else body, mask)
        self.emulator.webhooks.get(webhook_id)  # 404 before anything changes
        webhook = self.emulator.webhooks.update(
            webhook_id, changes, self.emulator.service_clock.now()
        )
        log.info(
            json.dumps(
                {"msg": "webhook updated", "webhook_id": webhook.id, "fields": sorted(changes)}
            )
        )
        return json_response(
            self.emulator.webhooks.show(webhook, self.emulator.service_clock.now())
        )

    async def delete_webhook(self, request: web.Request) -> web.Response:
        self.emulator.webhooks.delete(request.match_info["id"])
        log.info(json.dumps({"msg": "webhook deleted", "webhook_id": request.match_info["id"]}))
        return json_response({})

    async def webhook_method(self, request: web.Request) -> web.Response:
        webhook_id, _, method = request.match_info["id"].partition(":")
        if method == "ping":
            await read_object(request)
            return self.ping(webhook_id)
        if method == "rotateSigningSecret":
            return self.rotate(webhook_id, await read_body(request))
        raise not_found(f"no such method: {request.method} {request.path}")

    async def rotate_guide_spelling(self, request: web.Request) -> web.Response:
        return self.rotate(request.match_info["id"], await read_body(request))

    def rotate(self, webhook_id: str, body: Any) -> web.Response:
        behavior = decisions.parse_revocation(body)
        secret = self.emulator.webhooks.rotate(
            webhook_id,
            behavior,
            self.emulator.service_clock.now(),
            self.emulator.scale.delta(self.emulator.config.secret_grace),
        )
        log.info(
            json.dumps({"msg": "secret rotated", "webhook_id": webhook_id, "behavior": behavior})
        )
        return json_response({"secret": secret})

    def ping(self, webhook_id: str) -> web.Response:
        webhook = self.emulator.webhooks.get(webhook_id)
        now = self.emulator.clock.now()
        data = {"id": webhook.id, "message": "test event"}
        envelope = {
            "type": PING_EVENT_TYPE,
            "version": ENVELOPE_VERSION,
            "timestamp": rfc3339(now),
            "data": data,
        }
        event_id = f"evt_{secrets.token_hex(10)}"
        self.emulator.engine.submit_static(
            event_id, envelope, [webhook.id], counts_for_health=False
        )
        return json_response({})
