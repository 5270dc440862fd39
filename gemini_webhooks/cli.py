"""`gemini-webhooks`: one console script, one subcommand per component.

Each subcommand lives in its component's package as a module with
`add_arguments(parser)` and `run(args) -> int`; this file only dispatches. A subcommand's
module is imported only when that subcommand is chosen, so that a process (the receiver
in its Pod above all) holds only the code it runs. A component that is not installed does
not appear (nothing here pretends it exists).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

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
    """Whether the subcommand's component is installed, without importing the component:
    `find_spec` of the module itself would run its package's `__init__` (the emulator's
    imports the whole emulator)."""
    package = module.rpartition(".")[0]
    try:
        return importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:
        return False


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser; its module adds the arguments when the subcommand is chosen
    (argparse hands a chosen subcommand's arguments to its parser's `parse_known_args`).
    Nested subcommands (`receiver replay`) get this class too, with no module."""

    def __init__(self, *args: Any, module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module: str | None = module

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._module is not None:
            module = importlib.import_module(self._module)
            self._module = None
            module.add_arguments(self)
            self.set_defaults(_run=module.run)
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-webhooks",
        description="Gemini API webhooks on Kubernetes: operator, receiver, emulator, sandboxes.",
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Subcommand
    )
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if _available(module_name):
            subparsers.add_parser(name, help=help_text, description=help_text, module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args._run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
