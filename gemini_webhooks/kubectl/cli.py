"""`kubectl-gemini`: the `kubectl gemini` plugin's command line.

Every subcommand reads the cluster with your kubeconfig (`--kubeconfig`, `$KUBECONFIG`,
`~/.kube/config`, then in-cluster; `--context`, `-n`), prints text or `-o json|yaml`,
and exits 0 when what it reports is good, 1 when it is not or a call failed (one line on
stderr, no traceback), 2 on bad usage. Imports stay inside each subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

PROG = "kubectl gemini"

EXAMPLES = """\
examples:
  kubectl gemini status batch-results -n team-a      # conditions, secrets, receiver, Events
  kubectl gemini status batch-results -o yaml
  kubectl gemini rotate batch-results                # rotate the signing secret now, wait for it
  kubectl gemini rotate batch-results --immediate    # ... and revoke the previous secrets at once
  kubectl gemini sync batch-results                  # reconcile now, print the outcome
  kubectl gemini ping batch-results                  # Gemini pings; which Pods verified it
  kubectl gemini pause batch-results                 # hold scheduled rotations
  kubectl gemini resume batch-results
  kubectl gemini verify batch-results --headers h.txt --body body.json
  kubectl gemini replay batch-results                # every dead letter back to the stream
  kubectl gemini replay batch-results --since 2h --id msg_1 --id msg_2
  kubectl gemini check                               # CRD, operator, the operator's RBAC
  source <(kubectl-gemini completion bash)

exit codes: 0 done; 1 not verified, something missing (check), timed out, not found,
or a failed call; 2 bad usage.
"""

SUBCOMMAND_HELP = {
    "status": "everything about one GeminiWebhook, with what to do next",
    "rotate": "rotate the signing secret now (the rotate annotation) and wait for it",
    "sync": "reconcile now (the sync annotation), wait for it and print the outcome",
    "ping": "have Gemini send a ping now; print which receiver Pods verified it, with which secret",
    "pause": "pause scheduled rotation (spec.rotation.paused) and wait for the operator",
    "resume": "resume scheduled rotation and wait for the operator",
    "verify": "check a captured delivery against the webhook's current signing secrets",
    "replay": "move dead letters back to the delivery stream (Redis mode), run in a receiver Pod",
    "check": "check the CRD, the operator and its RBAC; print what is missing",
    "completion": "print a shell completion script",
}


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    """kubectl's flags; on subcommands too, so that they may come anywhere."""
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file(s)")
    parser.add_argument("--context", default=default, help="kubeconfig context")
    parser.add_argument(
        "-n", "--namespace", default=default, help="namespace (default: the context's)"
    )
    parser.add_argument(
        "-o",
        "--output",
        default=default,
        choices=("text", "json", "yaml"),
        help="output format (default: text)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate GeminiWebhooks: status, rotation, delivery verification, "
        "dead-letter replay, checks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, None)
    shared = argparse.ArgumentParser(add_help=False)
    _common(shared, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub(name: str, example: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[shared],
            help=SUBCOMMAND_HELP[name],
            description=SUBCOMMAND_HELP[name],
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    status = sub("status", "kubectl gemini status batch-results -n team-a")
    status.add_argument("name", help="the GeminiWebhook")
    rotate = sub("rotate", "kubectl gemini rotate batch-results --timeout 2m")
    rotate.add_argument("name", help="the GeminiWebhook")
    rotate.add_argument(
        "--immediate",
        action="store_true",
        help="revoke the previous secrets at once (default: spec.rotation.revocation)",
    )
    for name in ("sync", "ping", "pause", "resume"):
        action = sub(name, f"kubectl gemini {name} batch-results")
        action.add_argument("name", help="the GeminiWebhook")
        action.add_argument("--timeout", type=_seconds, default=60.0, help="wait at most (60s)")
    rotate.add_argument("--timeout", type=_seconds, default=60.0, help="wait at most (60s)")
    verify = sub(
        "verify",
        "curl -sD h.txt -o body.json ... && "
        "kubectl gemini verify batch-results --headers h.txt --body body.json",
    )
    verify.add_argument("name", help="the GeminiWebhook")
    verify.add_argument(
        "--headers",
        required=True,
        metavar="FILE",
        help="the delivery's headers: `Name: value` lines (curl -D) or a JSON object",
    )
    verify.add_argument("--body", required=True, metavar="FILE", help="the delivery's body")
    replay = sub(
        "replay",
        "kubectl gemini replay batch-results --since 2026-12-06T18:00:00Z -o json\n"
        "  kubectl gemini replay batch-results --since 30m --id msg_1 --id msg_2\n\n"
        "It runs `gemini-webhooks receiver replay` in one Ready receiver Pod of the webhook,\n"
        "as `kubectl exec` would (you need `create` on `pods/exec`), with the Pod's own config.",
    )
    replay.add_argument("name", help="the GeminiWebhook (its receiver in Redis mode)")
    replay.add_argument(
        "--since",
        metavar="T",
        help="only dead letters dead-lettered at or after T: an RFC 3339 time "
        "(2026-12-06T18:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)",
    )
    replay.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        metavar="ID",
        help="only the dead letter with this webhook-id (repeatable)",
    )
    replay.add_argument(
        "--timeout", type=_seconds, default=120.0, help="wait at most (120s) for the replay"
    )
    check = sub("check", "kubectl gemini check -n team-a")
    check.add_argument(
        "--operator-namespace", help="where the operator runs (default: look everywhere)"
    )
    check.add_argument(
        "--service-account",
        metavar="NAMESPACE:NAME",
        help="check this ServiceAccount's RBAC instead of the operator Deployment's",
    )
    completion = commands.add_parser(
        "completion",
        help=SUBCOMMAND_HELP["completion"],
        description=SUBCOMMAND_HELP["completion"],
        epilog="example:\n  source <(kubectl-gemini completion bash)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=("bash",))
    return parser


def _seconds(text: str) -> float:
    """`90`, `90s`, `2m`, `1h`."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s or 2m, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    return value


Handler = Callable[[Any, argparse.Namespace], Awaitable[tuple[Any, Any, bool]]]


async def _status(session: Any, args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl import status

    report, tree = await status.run(session, args.name)
    return report, tree, True  # a report, healthy or not, is a success (as cmctl status)


async def _rotate(session: Any, args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl import actions

    report = await actions.rotate(session, args.name, args.timeout, args.immediate)
    return report, actions.rotate_text(report), True


async def _sync(session: Any, args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl import actions

    report = await actions.sync(session, args.name, args.timeout)
    return report, actions.sync_text(report), actions.sync_succeeded(report)


async def _ping(session: Any, args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl import actions

    report = await actions.ping(session, args.name, args.timeout)
    return report, actions.ping_text(report), report["status"] == "True"


async def _pause(session: Any, args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl import actions

    paused = args.command == "pause"
    report = await actions.set_paused(session, args.name, paused, args.timeout)
    return report, actions.paused_text(report), True


async def _verify(session: Any, args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl import verify

    headers, body = verify.read_capture(args.headers, args.body)
    report = await verify.run(session, args.name, headers, body)
    return report, verify.text(report), bool(report["verified"])


async def _replay(session: Any, args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl import replay

    report = await replay.run(session, args.name, args.since, args.ids, args.timeout)
    return report, replay.text(report), True


async def _check(session: Any, args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl import check

    report = await check.run(session, args.operator_namespace, args.service_account)
    return report, check.text(report), bool(report["ok"])


HANDLERS: dict[str, Handler] = {
    "status": _status,
    "rotate": _rotate,
    "sync": _sync,
    "ping": _ping,
    "pause": _pause,
    "resume": _pause,
    "verify": _verify,
    "replay": _replay,
    "check": _check,
}


async def _run(args: argparse.Namespace) -> tuple[Any, Any, bool]:
    from gemini_webhooks.kubectl.cluster import Session

    session = Session.open(args.kubeconfig, args.context, args.namespace)
    try:
        return await HANDLERS[args.command](session, args)
    finally:
        await session.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The tree's lines and marks are Unicode; a terminal in a legacy encoding gets `?`.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    if args.command == "completion":
        from gemini_webhooks.kubectl.completion import bash_script

        print(bash_script(build_parser()))
        return 0
    from gemini_webhook_operator.kube import KubeError
    from gemini_webhooks.kubectl.cluster import PluginError
    from gemini_webhooks.kubectl.output import render

    try:
        report, text, good = asyncio.run(_run(args))
    except (PluginError, KubeError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. a client certificate the TLS library refuses
        print(f"{PROG}: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(render(report, text, args.output or "text"))
    return 0 if good else 1
