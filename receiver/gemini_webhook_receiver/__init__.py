"""The Gemini webhook receiver: verify every delivery, drop replays and duplicates, route and
forward to in-cluster Services without losing an event. Entry point: `cli.py`."""
