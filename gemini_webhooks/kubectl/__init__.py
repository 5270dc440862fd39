"""`kubectl gemini` (the `kubectl-gemini` executable): Day-2 operations on GeminiWebhooks
with the user's own kubeconfig — never the operator's credentials.

Each subcommand is a module that gathers objects through the operator's small Kubernetes
client (`gemini_webhook_operator.kube`), decides or summarises with pure functions, and
returns a report that `output` renders as text, JSON or YAML.
"""
