"""A small client for the emulator's control API (`/emulator/v1/...`), for tests, the
sandbox and demos. The WebhookService and batches are driven with `google-genai` itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx

PREFIX = "/emulator/v1"


class ControlError(RuntimeError):
    """The control API refused a request (the Google JSON error's message is kept)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise ControlError(response.status_code, message)


def _event_body(
    event_type: str, data: Mapping[str, Any] | None, webhook_config: Mapping[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": event_type, "data": dict(data or {})}
    if webhook_config is not None:
        body["webhook_config"] = dict(webhook_config)
    return body


def _settled(found: list[dict[str, Any]], count: int, settled: bool) -> bool:
    return len(found) >= count and not (settled and any(d["state"] == "pending" for d in found))


class ControlClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        headers = {"x-goog-api-key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        _raise_for(response)
        return response.json()

    def health(self) -> bool:
        return bool(self._call("GET", f"{PREFIX}/healthz").get("ok"))

    def reset(self) -> None:
        self._call("POST", f"{PREFIX}/reset")

    def fire(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        webhook_config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Emit one catalogue event; missing `data` fields get generated values.
        With `webhook_config` ({"uris": [...], "user_metadata": {...}}) it is a dynamic
        delivery; otherwise it goes to the subscribed static webhooks."""
        body = _event_body(event_type, data, webhook_config)
        result: dict[str, Any] = self._call("POST", f"{PREFIX}/events", json=body)
        return result

    def deliveries(self, **filters: str) -> list[dict[str, Any]]:
        """The delivery log; filter by webhook_id, event_type, event_id or state."""
        found: list[dict[str, Any]] = self._call("GET", f"{PREFIX}/deliveries", params=filters)[
            "deliveries"
        ]
        return found

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"{PREFIX}/deliveries/{delivery_id}")
        return found

    def calls(self, source: str | None = None) -> dict[str, Any]:
        """The WebhookService calls by caller address: `by_source` counts each operation,
        `calls` lists the recent ones in order (`time`, `source`, `operation`,
        `webhook_id`, `status_code`)."""
        params = {"source": source} if source else {}
        found: dict[str, Any] = self._call("GET", f"{PREFIX}/calls", params=params)
        return found

    def wait_for_deliveries(
        self, count: int = 1, *, timeout: float = 10.0, settled: bool = True, **filters: str
    ) -> list[dict[str, Any]]:
        """Poll the log until `count` deliveries match (and, if `settled`, none of them is
        still pending); raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.deliveries(**filters)
            if _settled(found, count, settled):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} settled deliveries, log has: {found}")
            time.sleep(0.02)

    def finish_batch(
        self,
        name: str,
        outcome: str,
        *,
        error_code: int | str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        """End a batch now with `outcome` (succeeded/failed/cancelled/expired)."""
        body = {"outcome": outcome, "error_code": error_code, "error_message": error_message}
        batch_id = name.removeprefix("batches/")
        result: dict[str, Any] = self._call(
            "POST", f"{PREFIX}/batches/{batch_id}:finish", json=body
        )
        return result

    def plan_batch(self, name: str, outcome: str, **error: Any) -> None:
        """Make a running batch end with `outcome` when its run time is up."""
        batch_id = name.removeprefix("batches/")
        self._call("POST", f"{PREFIX}/batches/{batch_id}:plan", json={"outcome": outcome, **error})

    def set_batch_outcome(self, outcome: str, **error: Any) -> None:
        """The outcome of every batch that finishes by itself from now on."""
        self._call("PUT", f"{PREFIX}/batch-outcome", json={"outcome": outcome, **error})

    def rollover_signing_key(self) -> str:
        """Start signing dynamic deliveries with a new key; returns its `kid`."""
        kid: str = self._call("POST", f"{PREFIX}/signing-keys:rollover")["kid"]
        return kid

    def set_secret_reporting(self, mode: str, *, head: int = 4, tail: int = 4) -> dict[str, Any]:
        """How webhooks show `signing_secrets` from now on: truncated (`head`/`tail`
        characters visible), masked, empty or absent."""
        body = {"mode": mode, "head": head, "tail": tail}
        shown: dict[str, Any] = self._call("PUT", f"{PREFIX}/secret-reporting", json=body)
        return shown

    def set_endpoint_overrides(self, overrides: Mapping[str, str]) -> None:
        """Replace the in-process endpoint overrides (`host:port` or `namespace/name:port`
        -> `address:port`)."""
        self._call("PUT", f"{PREFIX}/endpoint-overrides", json={"overrides": dict(overrides)})

    def jwks(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/.well-known/jwks.json")
        return found


class AsyncControlClient:
    """The control API for asyncio code (same operations as `ControlClient`)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        headers = {"x-goog-api-key": api_key} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        _raise_for(response)
        return response.json()

    async def health(self) -> bool:
        return bool((await self._call("GET", f"{PREFIX}/healthz")).get("ok"))

    async def reset(self) -> None:
        await self._call("POST", f"{PREFIX}/reset")

    async def fire(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        webhook_config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = _event_body(event_type, data, webhook_config)
        result: dict[str, Any] = await self._call("POST", f"{PREFIX}/events", json=body)
        return result

    async def deliveries(self, **filters: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (
            await self._call("GET", f"{PREFIX}/deliveries", params=filters)
        )["deliveries"]
        return found

    async def wait_for_deliveries(
        self, count: int = 1, *, within: float = 10.0, settled: bool = True, **filters: str
    ) -> list[dict[str, Any]]:
        """Like `ControlClient.wait_for_deliveries`; `within` is its timeout in seconds."""
        deadline = time.monotonic() + within
        while True:
            found = await self.deliveries(**filters)
            if _settled(found, count, settled):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} settled deliveries, log has: {found}")
            await asyncio.sleep(0.02)

    async def finish_batch(self, name: str, outcome: str, **error: Any) -> dict[str, Any]:
        batch_id = name.removeprefix("batches/")
        result: dict[str, Any] = await self._call(
            "POST", f"{PREFIX}/batches/{batch_id}:finish", json={"outcome": outcome, **error}
        )
        return result

    async def rollover_signing_key(self) -> str:
        kid: str = (await self._call("POST", f"{PREFIX}/signing-keys:rollover"))["kid"]
        return kid

    async def set_secret_reporting(
        self, mode: str, *, head: int = 4, tail: int = 4
    ) -> dict[str, Any]:
        body = {"mode": mode, "head": head, "tail": tail}
        shown: dict[str, Any] = await self._call("PUT", f"{PREFIX}/secret-reporting", json=body)
        return shown

    async def set_endpoint_overrides(self, overrides: Mapping[str, str]) -> None:
        await self._call("PUT", f"{PREFIX}/endpoint-overrides", json={"overrides": dict(overrides)})
