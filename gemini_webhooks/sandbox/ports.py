"""Loopback ports for the sandbox's processes and Services."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago: bound on port 0, read, released.

    Used where a child process must be told its port on the command line or in its
    config; another process could take it in between, so callers that can bind port 0
    themselves (the in-process servers) do that instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
