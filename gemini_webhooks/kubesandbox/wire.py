"""The API's wire format over HTTP: request bodies in (JSON, YAML, protobuf), JSON responses,
Status errors and Warning headers out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import kmock

from gemini_webhooks.kubesandbox import errors, protobuf
from gemini_webhooks.kubesandbox.errors import ApiError
from gemini_webhooks.kubesandbox.resources import ResourceType

JSON = "application/json"
Obj = dict[str, Any]


def flag(params: Mapping[str, str], name: str) -> bool:
    return params.get(name, "").lower() in ("1", "true")


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type=JSON,
        headers=headers,
    )


def error_response(e: ApiError) -> aiohttp.web.Response:
    return json_response(e.status(), e.code, e.headers)


def as_version(obj: Obj, rtype: ResourceType) -> Obj:
    if obj.get("apiVersion") == rtype.api_version:
        return obj
    return {**obj, "apiVersion": rtype.api_version}


def wants_table(headers: Mapping[str, str]) -> bool:
    accept = headers.get("Accept", "")
    return "as=Table" in accept


def warning_headers(warnings: list[str]) -> dict[str, str] | None:
    if not warnings:
        return None
    # Field names come from the client: escape them so no control character (or non-ASCII)
    # reaches a header.
    safe = [w.encode("unicode_escape").decode("ascii").replace('"', '\\"') for w in warnings]
    return {"Warning": ", ".join(f'299 - "{w}"' for w in safe)}


def decode_body(request: kmock.Request) -> Any:
    """The request's body, decoded by its Content-Type."""
    if not request.body:
        raise errors.bad_request("the request body is empty")
    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith(protobuf.CONTENT_TYPE):
        try:
            return protobuf.decode_object(request.body)
        except protobuf.ProtobufError as e:
            raise ApiError(415, "UnsupportedMediaType", str(e)) from None
    if "cbor" in content_type or "protobuf" in content_type:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types "
            f"include: application/json, application/yaml, {protobuf.CONTENT_TYPE} "
            f"(not {content_type})",
        )
    if "yaml" in content_type:
        import yaml

        try:
            return yaml.safe_load(request.body)
        except yaml.YAMLError as e:
            raise errors.bad_request(f"the request body is not valid YAML: {e}") from None
    try:
        return json.loads(request.body)
    except ValueError:
        raise errors.bad_request("the request body is not valid JSON") from None


def loads_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None
