"""The emulator's HTTP plumbing: request bodies read as strict JSON, responses, and the
middlewares every request goes through (the call log, Google-style JSON errors, API keys)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from .calls import Call, CallLog, operation
from .clock import WallClock
from .errors import ApiError, invalid_argument, permission_denied, unauthenticated

log = logging.getLogger("gemini_webhooks.emulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def read_body(request: web.Request) -> Any:
    """The request's JSON body, None when empty; NaN/Infinity and bad JSON are refused."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise invalid_argument("Invalid JSON payload received.") from None


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object ({} when empty)."""
    body = await read_body(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise invalid_argument("request body must be a JSON object")
    return body


def calls_middleware(calls: CallLog, clock: WallClock) -> Middleware:
    """Records each WebhookService call with its caller's address and its answer (after
    the errors middleware made every failure an answer)."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        named = operation(request.method, request.path)
        response = await handler(request)
        if named is not None:
            what, webhook_id = named
            source = request.remote or ""
            calls.record(Call(clock.now(), source, what, webhook_id, response.status))
        return response

    return record


def errors_middleware(max_body_bytes: int) -> Middleware:
    """Every failure as a Google JSON error: the API's own, aiohttp's, and the unexpected."""

    @web.middleware
    async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
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
            return json_response(error.body(), status=error.code)
        except web.HTTPException as error:
            status = {
                404: "NOT_FOUND",
                405: "UNIMPLEMENTED",
                413: "INVALID_ARGUMENT",
            }.get(error.status, "INVALID_ARGUMENT" if error.status < 500 else "INTERNAL")
            message = {
                404: f"no such method: {request.method} {request.path}",
                405: f"method {request.method} is not allowed on {request.path}",
                413: f"request body larger than {max_body_bytes} bytes",
            }.get(error.status, error.reason)
            body = {"error": {"code": error.status, "message": message, "status": status}}
            return json_response(body, status=error.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error handling %s %s", request.method, request.path)
            body = {"error": {"code": 500, "message": "internal error", "status": "INTERNAL"}}
            return json_response(body, status=500)

    return answer


def auth_middleware(api_keys: tuple[str, ...], public_paths: Collection[str]) -> Middleware:
    """With API keys configured, every path but the public ones needs one of them."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if api_keys and request.path not in public_paths:
            given = request.headers.get("x-goog-api-key") or request.query.get("key")
            if not given:
                raise unauthenticated()
            matched = False
            for key in api_keys:
                matched |= hmac.compare_digest(given.encode(), key.encode())
            if not matched:
                raise permission_denied()
        return await handler(request)

    return authenticate
