"""Monitoring as code: the Grafana dashboard and the Prometheus alert rules.

Both are generated from Python that imports every metric name from the operator's and the
receiver's `metrics` modules, so a renamed metric breaks the build instead of leaving an
empty panel. `python -m gemini_webhooks.observability` writes them into the Helm chart
(`charts/gemini-webhook-operator/files/`), which ships them; `--check` fails when the
committed files differ from what the code generates.

A development tool: it needs the `dev` extra (`grafana-foundation-sdk`); nothing at run
time imports it, so the image does not carry that package.
"""
