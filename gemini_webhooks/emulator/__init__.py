"""A local Gemini API emulator: WebhookService, batches, event delivery and a control API.

`Emulator` (aiohttp, embeddable, async start/stop or `async with`), `ThreadedEmulator`
(the same on a background thread), `ControlClient` (the control API from Python).
"""

from .app import Emulator, EmulatorConfig
from .control import AsyncControlClient, ControlClient, ControlError
from .threaded import ThreadedEmulator

__all__ = [
    "AsyncControlClient",
    "ControlClient",
    "ControlError",
    "Emulator",
    "EmulatorConfig",
    "ThreadedEmulator",
]
