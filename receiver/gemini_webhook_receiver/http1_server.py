"""An HTTP/1.1 port: its settings, its connections, and what it owes its clients.

A port is an `Http1Server` subclass that says how a request is routed (`route`: to a
handler, or to an answer decided from the request line alone) and how a refusal is worded
(`refusal`); the mechanics here are the same for both. What an HTTP server owes its
clients is kept, each bounded by the port's settings:

- the request head: at most `max_head` bytes (431), counted as bytes arrive (llhttp holds a
  header line until it ends) and as whole fields; it must arrive within `idle_timeout`
  counted from the connection or the previous answer and not reset by each byte, and,
  where `read_timeout` is shorter, within `read_timeout` from its first byte (then the
  connection is closed: a trickled head is cut off);
- the body: at most `max_body` (413, from Content-Length before any byte of it, or as
  chunks arrive) and `read_timeout` from the end of the head (408);
- trailer fields (after a chunked body) are not headers (RFC 9110 §6.5.1): dropped, never
  read as the request's, and bounded with the head (431);
- `Host` (RFC 9112 §3.2): an HTTP/1.1 request without one, with more than one, or with a
  value that is not `uri-host[:port]` gets 400 (HTTP/1.0 may omit it; with an
  absolute-form target its value is the target's authority, so only its presence and
  count are checked, §3.2.2);
- anything llhttp refuses (bad framing, conflicting Content-Length/Transfer-Encoding,
  invalid characters, upgrades) gets 400, without the sender's bytes in any log;
- `Expect: 100-continue` answered before the body (other expectations 417), HTTP/1.0 and
  `Connection: close` honoured, pipelined requests answered in order (reading pauses while
  `MAX_PIPELINED` wait, and while the client leaves our answers unread beyond the
  transport's high-water mark);
- at most `max_connections` open connections (None: no bound). When all are open a new one
  is still served: the connection that has waited longest without a request under way —
  between requests, with its request head unfinished (or not begun), or lingering after a
  refusal — is closed to make room (`count_eviction`), so that connections that never
  send a byte cannot keep requests out. A connection busy with a request (its head
  complete: the body being read, or its answer under way) is never closed for another;
  only when every one is busy is the new one refused (503) and closed. The evictable ones
  are kept in a dict in the order they became evictable: a connection moves out of it and
  back in once per request, and the oldest is found in O(1) amortized;
- on shutdown idle connections are closed at once and busy ones after their answer.

A refusal decided before the request was read to its end (413, 431, 408, 400) closes the
connection after the answer, lingering briefly so that the client can read it. If requests
read before it are still being answered, it waits for them (their answers come first, in
order) with reading paused; so does a 100 Continue.
"""

from __future__ import annotations

import asyncio

from .http1 import Connection
from .http1_messages import Answer, HttpDate, Request, Route
from .reasons import Rejection
from .writes import WriteBatch


class Http1Server:
    """Settings and state shared by a port's connections."""

    def __init__(
        self,
        *,
        wanted: dict[bytes, str],
        max_head: int,
        max_body: int,
        read_timeout: float,
        idle_timeout: float,
        max_connections: int | None,
    ) -> None:
        self.wanted = wanted
        self.max_head = max_head
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.date = HttpDate()
        self.batch: WriteBatch | None = None  # of this server's loop, made by the first connection
        self.connections: set[Connection] = set()
        # The connections that may be closed to make room for a new one (none of their
        # requests under way), the one evictable longest first: a dict keeps insertion
        # order, and taking an entry out and putting it back costs less than in an
        # `OrderedDict` (it is done twice per request). The first entry is found by
        # skipping the slots of removed ones, which a resize compacts: O(1) amortized.
        self.evictable: dict[Connection, None] = {}
        self.closing = False

    def route(self, request: Request) -> Route | Answer:
        """Where a complete request goes, decided from its method and target."""
        raise NotImplementedError

    def refusal(self, rejection: Rejection, request: Request | None) -> Answer:
        """The answer to a request (or a connection) refused while reading."""
        raise NotImplementedError

    def count_eviction(self, state: str) -> None:
        """A connection was closed to make room; `state` is `idle`, `head` or `lingering`."""

    def protocol(self) -> Connection:
        """The protocol factory for `loop.create_server`."""
        loop = asyncio.get_running_loop()
        if self.batch is None:
            self.batch = WriteBatch(loop)
        return Connection(self, loop, self.batch)

    def make_room(self) -> bool:
        """Close the connection evictable longest; False if every connection is busy."""
        if not self.evictable:
            return False
        victim = next(iter(self.evictable))
        del self.evictable[victim]
        self.connections.discard(victim)
        self.count_eviction(victim.eviction_state())
        victim.evict()
        return True

    def close_idle(self) -> None:
        """Stop keeping connections alive: idle ones close now, busy ones after answering."""
        self.closing = True
        for connection in list(self.connections):
            connection.close_if_idle()

    def close_all(self) -> None:
        if self.batch is not None:
            self.batch.flush()  # answers already given go out first
        for connection in list(self.connections):
            connection.abort()
