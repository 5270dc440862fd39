"""`python -m gemini_webhooks.observability [--check]`: write (or check) the generated
dashboard and alert rules in the Helm chart's `files/` directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gemini_webhooks.observability import alerts, dashboard

CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "gemini-webhook-operator" / "files"
DASHBOARD_FILE = CHART_FILES / "dashboard.json"
RULES_FILE = CHART_FILES / "prometheus-rules.yaml"


def generated() -> dict[Path, str]:
    return {DASHBOARD_FILE: dashboard.render(), RULES_FILE: alerts.render()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemini_webhooks.observability")
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed files are out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(
            f"{path} is out of date: run python -m gemini_webhooks.observability", file=sys.stderr
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
