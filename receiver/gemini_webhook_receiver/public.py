"""The public port: HTTP/1.1 parsed by llhttp (`httptools`), one route, no web framework.

The public port serves exactly one thing — `POST <path>` with a small JSON body — on the
hot path of every event. aiohttp's server (which served both ports once) spends, per
request, a parser wrapper, a request object with a payload stream, a response object with
a header multidict and a writer; measured with bench/receiver, that was a fifth of the
CPU of a delivery. Here llhttp (the parser Node.js uses, through `httptools`, the binding
uvicorn uses) frames the request, and the answer is one preformatted write.

What an HTTP server owes its clients is kept, each bounded:

- the request head: at most `MAX_HEAD_BYTES` (431, `head_too_large`) and
  `read_timeout_seconds`, counted from the connection or the previous answer and not
  reset by each byte (then the connection is closed: a trickled head is cut off);
- the body: at most `max_body_bytes` (413, from Content-Length before any byte of it, or
  as chunks arrive) and `read_timeout_seconds` from the end of the head (408);
- trailer fields (after a chunked body) are not headers (RFC 9110 §6.5.1): dropped, never
  read as the request's, and bounded with the head (431);
- `Host` (RFC 9112 §3.2): an HTTP/1.1 request without one, with more than one, or with a
  value that is not `uri-host[:port]` gets 400 `bad_host` (HTTP/1.0 may omit it; with
  an absolute-form target its value is the target's authority, so only its presence and
  count are checked, §3.2.2);
- anything llhttp refuses (bad framing, conflicting Content-Length/Transfer-Encoding,
  invalid characters, upgrades) gets 400, counted as `malformed_request` and logged
  without the sender's bytes;
- the target in origin or absolute form (`POST http://host/path`, RFC 9112 §3.2.2);
  other paths 404, other methods 405 with `Allow: POST`, `Expect: 100-continue` answered
  before the body (other expectations 417), HTTP/1.0 and `Connection: close` honoured,
  pipelined requests answered in order (reading pauses while `MAX_PIPELINED` wait, and
  while the client leaves our answers unread beyond the transport's high-water mark);
- at most `max_connections` open connections. When all are open a new one is still
  served: the connection that has waited longest without a request under way — between
  requests, with its request head unfinished (or not begun), or lingering after a
  refusal — is closed to make room (counted in `connections_evicted_total{state}`), so
  that connections that never send a byte cannot keep deliveries out. A connection busy
  with a request (its head complete: the body being read, or its delivery under way) is
  never closed for another; only when every one is busy is the new one answered 503
  `too_many_connections` and closed. The evictable ones are kept in a dict in the order
  they became evictable: a connection moves out of it and back in once per request, and
  the oldest is found in O(1) amortized;
- on shutdown idle connections are closed at once and busy ones after their answer.

A rejection decided before the request was read to its end (413, 431, 408, 400) closes
the connection after the answer, lingering briefly so that the client can read it. If
requests read before it are still being answered, it waits for them (their answers come
first, in order: the client learns which events were taken) with reading paused; so does
a 100 Continue.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple

import httptools
import orjson

from gemini_webhooks.contracts.delivery import HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP

from . import metrics, reasons
from .reasons import Rejection
from .writes import WriteBatch

MAX_HEAD_BYTES = 32 * 1024
MAX_PIPELINED = 8
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024

# the headers the receiver reads (`_WANTED`, lower-case names) and the body → status and body
DeliveryHandler = Callable[[dict[str, str], bytes], Awaitable[tuple[int, bytes]]]
# a rejection decided here (body too large, read timeout, unparsable request) → its body,
# counted and logged by the receiver
RejectionHandler = Callable[[Rejection, str | None], bytes]

# The only request headers anything reads (framing is llhttp's), by their wire name
# (lower-case or capitalized, as most clients send them: found without lower-casing) and
# lower-cased; the first of a repeated field counts.
_WANTED = {
    wire.encode(): name
    for name in (
        HEADER_ID,
        HEADER_TIMESTAMP,
        HEADER_SIGNATURE,
        "content-type",
        "content-length",
        "expect",
        "host",
    )
    for wire in (name, name.title())
}
PHRASES = {s.value: s.phrase.encode() for s in HTTPStatus}
_NOT_FOUND = orjson.dumps({"error": "not_found", "message": "no such path"})
_NOT_ALLOWED = orjson.dumps({"error": "method_not_allowed", "message": "only POST"})
_EXPECTATION = orjson.dumps({"error": "expectation_failed", "message": "unknown Expect"})


def target_path(target: bytes) -> bytes | None:
    """The path a request target names: the origin form `/p?q`, or the absolute form
    `http://host/p?q` that a server must accept too (RFC 9112 §3.2.2; its host is not
    ours to check, the Host header is not either); None for any other form (asterisk,
    authority, another scheme, or userinfo, which RFC 9110 §4.2.4 calls an error)."""
    if target.startswith(b"/"):
        query = target.find(b"?")
        return target if query < 0 else target[:query]
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return None
    if url.schema is None or url.schema.lower() not in (b"http", b"https") or url.userinfo:
        return None
    return url.path or b"/"


# uri-host [":" port] (RFC 3986 §3.2.2-3): an IP literal in brackets, or a reg-name — an
# IPv4 address is one too, and it may be empty (RFC 9112 §3.2: a URI without authority).
_HOST = re.compile(
    r"(?:\[(?P<literal>[^\]]*)\]"
    r"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)"
    r"(?::[0-9]*)?"
)
_IP_FUTURE = re.compile(r"v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+")


def valid_host(value: str) -> bool:
    """Whether a Host field value (without its surrounding whitespace) is
    `uri-host [":" port]`."""
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    literal = match.group("literal")
    if literal is None:
        return True
    if _IP_FUTURE.fullmatch(literal):
        return True
    try:
        ipaddress.IPv6Address(literal)
    except ValueError:
        return False
    return "%" not in literal  # a zone id is not part of a URI's IPv6 literal


def host_is_acceptable(version: str, host: str | None, repeated: bool, target: bytes) -> bool:
    """RFC 9112 §3.2: one Host field with a valid value, which HTTP/1.0 may leave out;
    with an absolute-form target the target's authority replaces its value (§3.2.2), so
    that value is not judged."""
    if repeated:
        return False
    if host is None:
        return version == "1.0"
    return not target.startswith(b"/") or valid_host(host.rstrip(" \t"))


class HttpDate:
    """The `Date` header's value, formatted once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


class _Answer(NamedTuple):
    """An answer decided while reading (a refusal, or 100 Continue), queued behind the
    requests read before it, whose answers must come first (RFC 9112 §9.3.2)."""

    status: int
    body: bytes = b""
    extra: bytes = b""
    head_only: bool = False


_CONTINUE = _Answer(100)
_CONTINUE_BYTES = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "repeated_host", "target")

    def __init__(self) -> None:
        self.target = b""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.method = b""
        self.keep_alive = True
        self.repeated_host = False


class PublicServer:
    """Settings and state shared by the public port's connections."""

    def __init__(
        self,
        path: str,
        max_body_bytes: int,
        read_timeout_seconds: float,
        deliver: DeliveryHandler,
        reject: RejectionHandler,
        max_connections: int = 1024,
    ) -> None:
        self.path = path.encode()
        self.max_body = max_body_bytes
        self.read_timeout = read_timeout_seconds
        self.max_connections = max_connections
        self.deliver = deliver
        self.reject = reject
        self.date = HttpDate()
        self.batch: WriteBatch | None = None  # of this server's loop, made by the first connection
        self.connections: set[_Connection] = set()
        # The connections that may be closed to make room for a new one (none of their
        # requests under way), the one evictable longest first: a dict keeps insertion
        # order, and taking an entry out and putting it back costs less than in an
        # `OrderedDict` (it is done twice per request). The first entry is found by
        # skipping the slots of removed ones, which a resize compacts: O(1) amortized.
        self.evictable: dict[_Connection, None] = {}
        self.evicted = {
            state: metrics.connections_evicted.labels(state) for state in metrics.EVICTED_STATES
        }
        self.closing = False

    def protocol(self) -> _Connection:
        """The protocol factory for `loop.create_server`."""
        loop = asyncio.get_running_loop()
        if self.batch is None:
            self.batch = WriteBatch(loop)
        return _Connection(self, loop, self.batch)

    def make_room(self) -> bool:
        """Close the connection evictable longest; False if every connection is busy."""
        if not self.evictable:
            return False
        victim = next(iter(self.evictable))
        del self.evictable[victim]
        self.connections.discard(victim)
        self.evicted[victim.eviction_state()].inc()
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


class _Connection(asyncio.Protocol):
    def __init__(
        self, server: PublicServer, loop: asyncio.AbstractEventLoop, batch: WriteBatch
    ) -> None:
        self.server = server
        self.evictable = server.evictable
        self.loop = loop
        self.batch = batch
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.request: _Request | None = None  # the one being parsed
        self.body: list[bytes] = []
        self.body_size = 0
        # The head is bounded twice: by the bytes of whole fields (a complete head), and by
        # the bytes received while a head is unfinished (a field that never ends). llhttp
        # does not say where in a read a pipelined head starts, so that count begins with
        # the next read: a field that never ends may pass the limit by up to one read.
        self.head_size = 0
        self.head_bytes = 0
        # A body's bytes that are not its data (chunk framing, trailer fields) since the
        # last chunk's size line: llhttp hands trailer fields over only when complete and
        # `httptools` buffers them until then, so one that never ends is cut off at the
        # head's bound (the last chunk's size line starts the count, within one read).
        self.framing_bytes = 0
        self.in_head = True  # between requests or inside a head
        self.pending: deque[_Request | _Answer] = deque()
        # The connection's one task answers its requests in order. Between requests it
        # waits on `wake` rather than ending: a future's wake-up costs a third of a new
        # task (bench/receiver, A/B). `busy` while a request is queued or being answered.
        self.worker: asyncio.Task[None] | None = None
        self.wake: asyncio.Future[None] | None = None
        self.busy = False
        # Reading a head or a body must end by `deadline` (loop time); None while a request
        # is being answered. One lazy timer: moving the deadline later costs no re-arming.
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False  # no more requests are read on this connection
        self.closed = False  # ... nor answers written: the transport is closed or lost
        self.discarded = 0  # bytes received after that (while lingering)
        # Reading pauses while too many requests wait (pipelining) or while the client does
        # not read our answers (the transport's write buffer is over its high-water mark):
        # either way what a client can make us hold is bounded.
        self.queue_full = False
        self.writes_blocked = False
        # Reading also pauses while a refusal waits behind earlier answers (what the
        # client still sends waits in the kernel until the refusal is written), and
        # while a 100 Continue does (the body is not yet due).
        self.owing = False
        self.continue_owed = False
        self.reading = True
        self.kept_alive = False  # answered a request and kept open (for eviction's label)
        self.valid_host: str | None = None  # the Host value last judged valid here

    # ---- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        server = self.server
        if len(server.connections) >= server.max_connections and not server.make_room():
            # Every connection is busy with a request. Answered before any request (HTTP/1.1
            # allows it) and closed at once: lingering would keep holding what the limit is
            # there to bound.
            self.done = True
            body = server.reject(reasons.TOO_MANY_CONNECTIONS, None)
            self._write(reasons.TOO_MANY_CONNECTIONS.status, body, False)
            transport.close()
            return
        server.connections.add(self)
        self.evictable[self] = None
        self._expect_by()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.evictable.pop(self, None)
        self.done = self.closed = True
        self._disarm()
        self._release_worker()
        # A delivery under way runs to its end (it is acknowledged or not by its own
        # outcome); only its answer has nowhere to go.

    def data_received(self, data: bytes) -> None:
        if self.done:
            self.discarded += len(data)
            if self.discarded > LINGER_BYTES:
                self.abort()
            return
        if self.in_head:
            self.head_bytes += len(data)
        else:
            self.framing_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp stops after the message that asks to switch protocols; none is
            # offered, so the refusal is that request's answer, not an addition to it.
            if self.request is None and self.pending and not self.done:
                self.pending.pop()
            self._refuse(reasons.MALFORMED_REQUEST)
            return
        except httptools.HttpParserError:
            self._refuse(reasons.MALFORMED_REQUEST)  # the sender's bytes are not logged
            return
        if self.done:
            return
        if self.in_head and self.head_bytes > MAX_HEAD_BYTES:
            self._refuse(reasons.HEAD_TOO_LARGE)
        elif not self.in_head and self.framing_bytes > MAX_HEAD_BYTES:
            self._refuse(reasons.HEAD_TOO_LARGE)  # a trailer field that never ends
        elif (
            not self.in_head
            and self.request is not None
            and self.deadline is None
            and not self.continue_owed
        ):
            self._expect_by()  # the body is still coming

    def pause_writing(self) -> None:
        self.writes_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writes_blocked = False
        self._update_reading()

    def _update_reading(self) -> None:
        reading = not (self.queue_full or self.writes_blocked or self.owing)
        if reading == self.reading or self.transport is None or self.transport.is_closing():
            return
        self.reading = reading
        if reading:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too (answers still in flight are lost with it)

    # ---- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.request = _Request()
        self.head_size = 0
        self.body = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        assert self.request is not None
        self.request.target += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.request is not None
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD_BYTES:
            self._refuse(reasons.HEAD_TOO_LARGE)
            return
        if not self.in_head:
            # A trailer field (llhttp reports them like header fields, after the last
            # chunk): not part of the header section (RFC 9110 §6.5.1), so a signature
            # sent there is not the request's. Counted with the head, and dropped.
            return
        key = _WANTED.get(name) or _WANTED.get(name.lower())
        if key is None:
            return  # nothing reads it
        headers = self.request.headers
        if key not in headers:
            headers[key] = value.decode("utf-8", "surrogateescape")
        elif key == "host":
            self.request.repeated_host = True

    def on_headers_complete(self) -> None:
        request = self.request
        if self.done or request is None:
            return
        self.in_head = False
        self.head_bytes = 0
        self.framing_bytes = 0
        self.deadline = None
        self.evictable.pop(self, None)  # busy with this request from now
        parser = self.parser
        request.method = parser.get_method()
        request.keep_alive = parser.should_keep_alive()
        headers = request.headers
        host = headers.get("host")
        if host is None or request.repeated_host or host != self.valid_host:
            if not host_is_acceptable(
                parser.get_http_version(), host, request.repeated_host, request.target
            ):
                self._refuse(reasons.BAD_HOST, headers.get(HEADER_ID))
                return
            if request.target.startswith(b"/"):
                # Judged valid: the connection's next requests name the same host, and
                # checking it again would be ~2 µs per request on the hot path.
                self.valid_host = host
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            self._refuse(reasons.BODY_TOO_LARGE, request.headers.get(HEADER_ID))
            return
        expect = request.headers.get("expect")
        if expect is not None and parser.get_http_version() == "1.1":
            wrong = self._misrouted(request)
            if wrong is not None:
                self._finish_with(wrong)
            elif expect.lower() != "100-continue":
                self._finish_with(_Answer(417, _EXPECTATION))
            elif not self.busy:
                assert self.transport is not None
                self.batch.flush()  # after the answers queued before it
                self.transport.write(_CONTINUE_BYTES)
            else:
                self.pending.append(_CONTINUE)  # the body is due once it is written
                self.continue_owed = True

    def on_chunk_header(self) -> None:
        self.framing_bytes = 0  # a chunk's size line: what follows is its data, or trailers

    def on_body(self, chunk: bytes) -> None:
        if self.done:
            return
        self.framing_bytes -= len(chunk)
        self.body_size += len(chunk)
        if self.body_size > self.server.max_body:
            assert self.request is not None
            self._refuse(reasons.BODY_TOO_LARGE, self.request.headers.get(HEADER_ID))
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        request = self.request
        if self.done or request is None:
            return
        self.deadline = None
        self.request = None
        self.in_head = True
        body = self.body
        request.body = body[0] if len(body) == 1 else b"".join(body)
        self.body = []
        self.pending.append(request)
        if not self.busy:
            self.busy = True
            if self.wake is not None:
                self._release_worker()  # the connection's task, waiting for this request
            else:
                self.worker = self.loop.create_task(self._work())
        elif len(self.pending) >= MAX_PIPELINED and not self.queue_full:
            self.queue_full = True
            self._update_reading()

    # ---- answering -------------------------------------------------------------------

    async def _work(self) -> None:
        """Answer the pending requests in order, then wait for the next; the connection's
        only task, ended when the connection is."""
        pending = self.pending
        try:
            while True:
                while pending:
                    request = pending.popleft()
                    if self.queue_full and len(pending) < MAX_PIPELINED // 2:
                        self.queue_full = False
                        self._update_reading()
                    if isinstance(request, _Answer):
                        if request is not _CONTINUE:
                            self._close_with(request)
                            return
                        self._continue(bool(pending))
                        continue
                    wrong = self._misrouted(request)
                    if wrong is not None:
                        self._close_with(wrong)
                        return
                    status, body = await self.server.deliver(request.headers, request.body)
                    if self.closed:
                        return
                    keep_alive = request.keep_alive and not self.server.closing
                    self._write(status, body, keep_alive)
                    if not keep_alive:
                        self.abort()  # after the buffered answer is written
                        return
                self.busy = False
                if self.done:
                    return
                if self.deadline is None:
                    self._expect_by()  # the next request's head (or the rest of a body) is due
                if self.in_head:  # between requests, or the next head unfinished: evictable
                    self.kept_alive = True
                    self.evictable[self] = None
                wake = self.wake = self.loop.create_future()
                await wake  # a request queued (`busy` again), or the connection closed
                if not pending:
                    return
        finally:
            self.worker = self.wake = None
            self.busy = False

    def _release_worker(self) -> None:
        """Wake the connection's task waiting between requests: one was queued, or none
        will come (the connection closed) and it ends."""
        wake = self.wake
        if wake is not None:
            self.wake = None
            wake.set_result(None)

    def _misrouted(self, request: _Request) -> _Answer | None:
        if target_path(request.target) != self.server.path:
            return _Answer(404, _NOT_FOUND)
        if request.method != b"POST":
            # An answer to HEAD carries the headers of the body it does not have.
            head = request.method == b"HEAD"
            return _Answer(405, _NOT_ALLOWED, b"allow: POST\r\n", head)
        return None

    def _continue(self, body_received: bool) -> None:
        """The 100 Continue that waited for the answers before it, unless the body came
        anyway (the request or a refusal of it is queued behind): then it is moot."""
        self.continue_owed = False
        if body_received or self.done:
            return
        assert self.transport is not None
        self.batch.flush()
        self.transport.write(_CONTINUE_BYTES)
        self._expect_by()  # the body is due from now

    def _write(
        self,
        status: int,
        body: bytes,
        keep_alive: bool,
        extra: bytes = b"",
        head_only: bool = False,
    ) -> None:
        """Answer: batched with the loop pass's other writes (`writes.py`) when the
        connection stays open; written at once, after what is queued, when it closes."""
        assert self.transport is not None
        answer = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"date: %s\r\n%s%s\r\n%s"
            % (
                status,
                PHRASES.get(status, b""),
                len(body),
                self.server.date.now(),
                extra,
                b"" if keep_alive else b"connection: close\r\n",
                b"" if head_only else body,
            )
        )
        if keep_alive:
            self.batch.write(self.transport, answer)
        else:
            self.batch.flush()  # earlier answers first
            self.transport.write(answer)

    def _finish_with(self, answer: _Answer) -> None:
        """Stop reading requests and answer, possibly before the request was read to its
        end: at once, or after the answers still owed to the requests before it."""
        if self.done:
            return
        self.done = True
        self._disarm()
        if not self.busy:
            self._close_with(answer)
            return
        self.pending.append(answer)
        self.owing = True
        self._update_reading()

    def _close_with(self, answer: _Answer) -> None:
        """Answer and close.

        The client may still be sending: closing at once would make the kernel answer its
        next bytes with a reset, which can destroy our answer before the client reads it.
        So our side is shut (the answer is followed by EOF) and what still arrives is read
        and dropped, for at most `LINGER_SECONDS` and `LINGER_BYTES`, as web servers do.
        """
        self.done = True
        self._disarm()
        self._write(answer.status, answer.body, False, answer.extra, answer.head_only)
        assert self.transport is not None
        if self.owing:
            self.owing = False
            self._update_reading()  # to drop what arrives while lingering
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.timer = self.loop.call_later(LINGER_SECONDS, self.abort)
            self.evictable[self] = None  # lingering holds a slot for nothing
        else:
            self.transport.close()

    def _refuse(self, rejection: Rejection, msg_id: str | None = None) -> None:
        if self.done:
            return
        self._finish_with(_Answer(rejection.status, self.server.reject(rejection, msg_id)))

    # ---- timers and shutdown ---------------------------------------------------------

    def _expect_by(self) -> None:
        """What is being read must arrive within the read timeout from now.

        Deadlines only move later, so a timer already set fires no later than needed and
        re-arms itself then: a request costs a float store, not a timer (measured with
        bench/receiver, a call_at and a cancel per request were ~3% of its CPU).
        """
        self.deadline = self.loop.time() + self.server.read_timeout
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.done:
            return
        if self.loop.time() < deadline:
            self.timer = self.loop.call_at(deadline, self._on_deadline)
            return
        self.deadline = None
        if self.in_head:
            self.abort()  # an idle keep-alive connection, or a head that never ended
        elif self.request is not None:
            self._refuse(reasons.READ_TIMEOUT, self.request.headers.get(HEADER_ID))

    def _disarm(self) -> None:
        self.deadline = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close_if_idle(self) -> None:
        if not self.busy and self.request is None:
            self.abort()

    def abort(self) -> None:
        """Close now; what is already written still goes out first."""
        self.done = self.closed = True
        self._disarm()
        self._release_worker()
        self.evictable.pop(self, None)  # on its way out already
        if self.transport is not None:
            self.transport.close()

    def eviction_state(self) -> str:
        if self.done:
            return "lingering"
        return "idle" if self.kept_alive and self.request is None else "head"

    def evict(self) -> None:
        """Close to make room for a new connection: the answers already given are written
        first (the batch is flushed), nothing is waited for."""
        self.batch.flush()
        self.done = self.closed = True
        self._disarm()
        self._release_worker()
        if self.transport is not None:
            self.transport.abort()
