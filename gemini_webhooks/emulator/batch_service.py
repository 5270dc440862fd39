"""Batches as the emulator serves them: `models/{model}:batchGenerateContent` starts one;
get, list, delete and cancel operate on them."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import batches as batch_model
from . import decisions
from .errors import not_found
from .http_plumbing import json_response, read_body, read_object

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger("gemini_webhooks.emulator")


class BatchService:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def add_routes(self, router: web.UrlDispatcher, base: str) -> None:
        router.add_post(f"{base}/models/{{model}}", self.model_method)
        router.add_get(f"{base}/batches", self.list_batches)
        router.add_get(f"{base}/batches/{{id}}", self.get_batch)
        router.add_delete(f"{base}/batches/{{id}}", self.delete_batch)
        router.add_post(f"{base}/batches/{{id}}", self.batch_method)

    async def model_method(self, request: web.Request) -> web.Response:
        model, _, method = request.match_info["model"].partition(":")
        if method != "batchGenerateContent":
            raise not_found(f"no such method: {request.method} {request.path}")
        new = batch_model.parse_create(model, await read_body(request))
        batch = self.emulator.batches.create(new, self.emulator.clock.now())
        self.emulator.run_batch(batch)
        log.info(
            json.dumps(
                {
                    "msg": "batch created",
                    "batch": batch.name,
                    "dynamic": batch.webhook_config is not None,
                }
            )
        )
        return json_response(batch.operation())

    async def get_batch(self, request: web.Request) -> web.Response:
        return json_response(self.emulator.batches.get(request.match_info["id"]).operation())

    async def delete_batch(self, request: web.Request) -> web.Response:
        self.emulator.batches.delete(request.match_info["id"])
        return json_response({})

    async def list_batches(self, request: web.Request) -> web.Response:
        size = decisions.parse_page_size(
            request.query.get("pageSize", request.query.get("page_size"))
        )
        token = request.query.get("pageToken", request.query.get("page_token")) or None
        after = self.emulator.webhooks.tokens.decode(token) if token else 0
        ordered = [b for b in self.emulator.batches.all() if b.seq > after]
        items = ordered[:size]
        body: dict[str, Any] = {"operations": [b.operation() for b in items]}
        if len(ordered) > size and items:
            body["nextPageToken"] = self.emulator.webhooks.tokens.encode(items[-1].seq)
        return json_response(body)

    async def batch_method(self, request: web.Request) -> web.Response:
        batch_id, _, method = request.match_info["id"].partition(":")
        if method != "cancel":
            raise not_found(f"no such method: {request.method} {request.path}")
        await read_object(request)
        batch = self.emulator.batches.get(batch_id)
        self.emulator.finish_batch(batch, "cancelled")
        return json_response({})
