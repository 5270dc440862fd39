"""Contracts shared by every component: each is defined here once and imported by every side.

- `events`: the event catalogue (what Gemini sends, what a static webhook may subscribe to).
- `delivery`: the wire format of a delivery (headers, envelope, JWT claims of dynamic webhooks).
- `signing_secret`: the format of the Kubernetes Secret that holds a webhook's signing secrets.
"""
