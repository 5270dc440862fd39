"""kopf's session to the Kubernetes API, from the credentials `gemini_webhooks.kube_access`
loads for every process of ours."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import kopf

from gemini_webhooks.kube_access import ClusterAccess

# kopf's session: one connection per watch stream (each holds its own for as long as it
# runs), and these for its patches, lists and events, which queue beyond them.
KOPF_SPARE_CONNECTIONS = 16


def kopf_session(
    access: ClusterAccess,
    *,
    watch_streams: int = 1,
    write_guard: Callable[[str], None] | None = None,
) -> kopf.AiohttpSession:
    """kopf's own client session, with at most `watch_streams` + KOPF_SPARE_CONNECTIONS
    connections. kopf's default pool is unbounded: 1,000 resources arriving at once
    opened ~800 concurrent TLS connections to kube-apiserver (asyncio keeps a 256 KiB
    read buffer per TLS connection), and the operator's peak RSS rose by ~90 MiB over
    plain HTTP. A bound below the number of watch streams would starve the rest. kopf
    closes the session when it drops these credentials and logs in again (on a 401:
    a replaced token file is read again then). `write_guard` is called before each of
    kopf's requests that is not a GET (its patches and Events) and refuses it by
    raising, as for the operator's own client."""
    traces = []
    if write_guard is not None:
        guard = write_guard

        async def refuse_unguarded_writes(
            session: aiohttp.ClientSession,
            context: Any,
            params: aiohttp.TraceRequestStartParams,
        ) -> None:
            if params.method != "GET":
                guard(f"kopf {params.method} {params.url.path}")

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(refuse_unguarded_writes)
        traces.append(trace)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            ssl=access.ssl_context(), limit=watch_streams + KOPF_SPARE_CONNECTIONS
        ),
        headers=access.headers(),
        trace_configs=traces,
    )
    return kopf.AiohttpSession(server=access.server, aiohttp_session=session)
