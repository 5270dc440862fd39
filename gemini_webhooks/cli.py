"""`gemini-webhooks`: one console script, one subcommand per component.

Each subcommand lives in its component's package as a module with
`add_arguments(parser)` and `run(args) -> int`; this file only dispatches. A component
that is not installed does not appear (nothing here pretends it exists).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "emulator": ("gemini_webhooks.emulator.cli", "run the local Gemini API emulator"),
    "kube-sandbox": (
        "gemini_webhooks.kubesandbox.cli",
        "serve an in-memory Kubernetes API that kubectl and kopf accept",
    ),
    "receiver": ("gemini_webhook_receiver.cli", "verify, deduplicate and forward deliveries"),
    "operator": ("gemini_webhook_operator.cli", "reconcile GeminiWebhook resources"),
    "sandbox": ("gemini_webhooks.sandbox.cli", "run the whole system locally, on loopback"),
    "webhook-config": (
        "gemini_webhooks.jobs.cli",
        "print the webhook_config of a job whose events a GeminiWebhook's receiver accepts",
    ),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-webhooks",
        description="Gemini API webhooks on Kubernetes: operator, receiver, emulator, sandboxes.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if not _available(module_name):
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args._run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
