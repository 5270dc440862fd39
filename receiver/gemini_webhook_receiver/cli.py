"""`gemini-webhooks receiver --config FILE` and `gemini-webhooks receiver replay --config FILE`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import time

from gemini_webhooks.contracts import replay as replay_contract
from gemini_webhooks.contracts.receiver_config import ReceiverConfig, ReceiverConfigError, load

from . import logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="receiver config (YAML or JSON)")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM, time allowed for in-flight deliveries to finish (default 10)",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    replay = actions.add_parser(
        "replay",
        help="move dead letters back into the delivery stream (Redis mode)",
        description="Move dead letters back into the delivery stream; the running "
        "receivers deliver them again.",
    )
    replay.add_argument("--config", dest="replay_config", metavar="FILE", required=True)
    replay.add_argument(
        "--id",
        dest="ids",
        action="append",
        metavar="WEBHOOK_ID",
        help="only this webhook-id (repeatable); default: every dead letter",
    )
    replay.add_argument(
        "--since",
        metavar="T",
        help="only those dead-lettered at or after T: an RFC 3339 time "
        "(2026-12-06T18:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)",
    )
    replay.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help=f'text, or json: {{"{replay_contract.COUNT_KEY}": N}}',
    )


def _load(path: str | None) -> ReceiverConfig | None:
    if not path:
        print("gemini-webhooks receiver: --config FILE is required", file=sys.stderr)
        return None
    try:
        return load(path)
    except ReceiverConfigError as error:
        print(f"gemini-webhooks receiver: {error}", file=sys.stderr)
        return None


async def _serve(config: ReceiverConfig, drain_seconds: float) -> int:
    from gemini_webhooks.contracts.egress_proxy import ProxySettingsError
    from gemini_webhooks.tracing import TracingConfigError

    from .app import serve
    from .job_origin import JobKeyUnavailable
    from .receiver import RedisNotDurable

    try:
        running = await serve(config, drain_seconds=drain_seconds)
    except (RedisNotDurable, JobKeyUnavailable, TracingConfigError, ProxySettingsError) as error:
        logs.log(50, "not started", reason=str(error))
        print(f"gemini-webhooks receiver: {error}", file=sys.stderr)
        return 2
    # Everything allocated so far (imported modules, config) lives for the whole process:
    # keep it out of the collector's full passes, which otherwise show up as p99 spikes;
    # and collect the young generation less often (a request allocates a few dozen objects).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logs.log(20, "shutting down; draining in-flight deliveries")
    await running.stop(drain_seconds)
    logs.log(20, "stopped")
    return 0


async def _replay(
    config: ReceiverConfig, ids: list[str] | None, since: float | None, output: str
) -> int:
    from .redis_connection import open_client
    from .redis_stream import Stream

    if config.redis is None:
        print(
            "gemini-webhooks receiver replay: the config has no 'redis' section; "
            "dead letters exist only in Redis mode",
            file=sys.stderr,
        )
        return 2
    client = open_client(config.redis)
    try:
        stream = Stream(client, config.redis, None)
        moved = await stream.replay(set(ids) if ids else None, since)
    finally:
        await client.aclose()
    if output == "json":
        print(replay_contract.output(moved))
    else:
        print(f"replayed {moved} dead letter(s)")
    return 0


def _run_loop(coro: object) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is optional; asyncio's loop works, only slower
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    if args.action == "replay":
        since = None
        if args.since is not None:
            try:
                since = replay_contract.parse_since(args.since, time.time())
            except replay_contract.SinceError as error:
                print(f"gemini-webhooks receiver replay: {error}", file=sys.stderr)
                return 2
        config = _load(args.replay_config)
        if config is None:
            return 2
        logs.configure(config.logging.level, config.logging.format)
        return _run_loop(_replay(config, args.ids, since, args.output))
    config = _load(args.config)
    if config is None:
        return 2
    logs.configure(config.logging.level, config.logging.format)
    return _run_loop(_serve(config, args.drain_seconds))
