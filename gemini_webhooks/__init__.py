"""gemini-webhook-operator: shared contracts, the CLI, the Gemini API emulator and the sandboxes."""

__version__ = "0.1.0"
