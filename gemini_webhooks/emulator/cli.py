"""`gemini-webhooks emulator`: run the local Gemini API emulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from gemini_webhooks.contracts.delivery import GOOGLE_ISSUER

from .app import Emulator, EmulatorConfig
from .webhooks import REPORTING_MODES, SecretReporting

API_KEY_ENV = "GEMINI_EMULATOR_API_KEYS"


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return number


def _visible(value: str) -> tuple[int, int]:
    head, sep, tail = value.partition(":")
    if not sep or not head.isdigit() or not tail.isdigit():
        raise argparse.ArgumentTypeError("expected HEAD:TAIL, e.g. 4:4")
    if int(head) > 16 or int(tail) > 16:
        raise argparse.ArgumentTypeError("at most 16 characters each")
    return int(head), int(tail)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one")
    parser.add_argument(
        "--batch-seconds",
        type=_positive,
        default=10.0,
        help="how long a batch runs before it finishes by itself (default 10)",
    )
    parser.add_argument(
        "--time-scale",
        type=_positive,
        default=1.0,
        help="divide every duration (backoff, 24 h windows, batch time) by this factor",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"accept only this x-goog-api-key (repeatable; also ${API_KEY_ENV}, comma separated)",
    )
    parser.add_argument("--issuer", default=GOOGLE_ISSUER, help="`iss` of dynamic-webhook JWTs")
    parser.add_argument(
        "--delivery-timeout",
        type=_positive,
        default=5.0,
        help="seconds an endpoint has to answer a delivery (not scaled)",
    )
    parser.add_argument(
        "--port-file", help="write the bound port to this file once listening (for --port 0)"
    )
    parser.add_argument(
        "--secret-reporting",
        choices=REPORTING_MODES,
        default="truncated",
        help="how webhooks show signing_secrets (default truncated; see docs/emulator.md)",
    )
    parser.add_argument(
        "--secret-visible",
        type=_visible,
        default=(4, 4),
        metavar="HEAD:TAIL",
        help="characters shown before and after '...' in truncated mode (default 4:4)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    keys = list(args.api_key)
    keys += [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(keys),
        batch_seconds=args.batch_seconds,
        time_scale=args.time_scale,
        issuer=args.issuer,
        delivery_timeout=args.delivery_timeout,
        secret_reporting=SecretReporting(args.secret_reporting, *args.secret_visible),
    )


async def _serve(config: EmulatorConfig, port_file: str | None) -> None:
    emulator = Emulator(config)
    await emulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if port_file:
        with open(port_file, "w") as handle:  # noqa: ASYNC230 — once, before serving
            handle.write(str(emulator.port))
    print(f"gemini-webhooks emulator listening on {emulator.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, and the message's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
        }
        message = record.getMessage()
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
        line.update(fields if isinstance(fields, dict) else {"msg": message})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def run(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=args.log_level, handlers=[handler])
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"gemini-webhooks emulator: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.port_file))
    except OSError as error:
        print(f"gemini-webhooks emulator: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0
