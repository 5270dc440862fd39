"""gemini-webhook-operator: reconciles GeminiWebhook resources with kopf."""
