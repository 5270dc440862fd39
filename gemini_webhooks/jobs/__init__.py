"""Submitting jobs whose dynamic webhooks a receiver accepts: `webhook_config` for the SDK."""
