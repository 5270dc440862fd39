"""The forwarding target used by the benchmark: answers every request 204, as cheaply as
possible (a raw asyncio protocol), so that it costs the core it shares with wrk little."""

from __future__ import annotations

import asyncio
import sys

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class Sink(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end > 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.transport.write(RESPONSE)


async def main(port: int, host: str = "127.0.0.1") -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(main(int(sys.argv[1]), *sys.argv[2:3]))  # PORT [HOST]: a Pod's sink listens on 0.0.0.0
