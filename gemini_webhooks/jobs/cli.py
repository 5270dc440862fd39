"""`gemini-webhooks webhook-config NAME`: the `webhook_config` of a job whose events the
GeminiWebhook's receiver accepts, as JSON — its URI and `user_metadata` signed with the
receiver's job key, read with your kubeconfig (get on the GeminiWebhook and on the Secret
`<NAME>-dynamic-job-key`). Use it as `config={"webhook_config": ...}` in
`client.batches.create(...)`. Imports stay inside `run`: other subcommands never load them.
"""

from __future__ import annotations

import argparse
import sys


def _metadata_item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the GeminiWebhook")
    parser.add_argument("-n", "--namespace", default="default", help="its namespace")
    parser.add_argument(
        "--metadata",
        "-m",
        action="append",
        type=_metadata_item,
        default=[],
        metavar="KEY=VALUE",
        help="a user_metadata entry (repeatable); routes match on these",
    )
    parser.add_argument(
        "--uri", help="the URI to give Gemini (default: the receiver's URL, if an audience)"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    parser.add_argument("--context", help="kubeconfig context")


def run(args: argparse.Namespace) -> int:
    import json

    from gemini_webhook_operator.kube import KubeError
    from gemini_webhooks.jobs.cluster import webhook_config_from_cluster
    from gemini_webhooks.jobs.webhook_config import WebhookConfigError
    from gemini_webhooks.kube_access import KubeConfigError

    try:
        config = webhook_config_from_cluster(
            args.name,
            args.namespace,
            dict(args.metadata),
            uri=args.uri,
            kubeconfig=args.kubeconfig,
            context=args.context,
        )
    except (WebhookConfigError, KubeError, KubeConfigError, OSError) as error:
        print(f"gemini-webhooks webhook-config: {error}", file=sys.stderr)
        return 1
    print(json.dumps(config, indent=2, sort_keys=True))
    return 0
