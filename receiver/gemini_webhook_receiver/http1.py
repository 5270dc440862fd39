"""One HTTP/1.1 connection, framed by llhttp (`httptools`), as both receiver ports serve it:
the head and body read and bounded as bytes arrive, deadlines, keep-alive, pipelined
requests answered in order by one task, refusals that linger so the client reads them.
What a port decides (routes, the words of a refusal, its limits) is its `Http1Server`'s;
what the connection guarantees is listed in `http1_server.py`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from . import reasons
from .http1_messages import JSON_HEADERS, PHRASES, Answer, Request, host_is_acceptable
from .reasons import Rejection
from .writes import WriteBatch

if TYPE_CHECKING:
    from .http1_server import Http1Server

MAX_PIPELINED = 8
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024

_CONTINUE = Answer(100)
_CONTINUE_BYTES = b"HTTP/1.1 100 Continue\r\n\r\n"
_EXPECTATION_FAILED = Answer(417, b'{"error":"expectation_failed","message":"unknown Expect"}')


class Connection(asyncio.Protocol):
    # Slots: CPython 3.11 specializes attribute access on an instance dict of at most 30
    # keys only (callgrind: +6% instructions per request with 32 attributes in a dict).
    __slots__ = (
        "batch body body_size busy closed continue_owed deadline discarded done evictable"
        " framing_bytes head_bytes head_size head_sooner in_head kept_alive loop owing parser"
        " pending queue_full reading request route server timer transport valid_host wake"
        " wanted worker writes_blocked"
    ).split()

    def __init__(
        self, server: Http1Server, loop: asyncio.AbstractEventLoop, batch: WriteBatch
    ) -> None:
        self.server = server
        self.route = server.route
        self.wanted = server.wanted
        self.evictable = server.evictable
        # A head must also end within `read_timeout` of its first byte (not only within
        # `idle_timeout` of the previous answer) where that is sooner.
        self.head_sooner = server.read_timeout < server.idle_timeout
        self.loop = loop
        self.batch = batch
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None  # the one being parsed
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
        self.pending: deque[Request | Answer] = deque()
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
        limit = server.max_connections
        if limit is not None and len(server.connections) >= limit and not server.make_room():
            # Every connection is busy with a request. Answered before any request (HTTP/1.1
            # allows it) and closed at once: lingering would keep holding what the limit is
            # there to bound.
            self.done = True
            answer = server.refusal(reasons.TOO_MANY_CONNECTIONS, None)
            self._write(answer.status, answer.body, False, answer.headers)
            transport.close()
            return
        server.connections.add(self)
        self.evictable[self] = None
        self._expect_by(server.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.evictable.pop(self, None)
        self.done = self.closed = True
        self._disarm()
        self._release_worker()
        # An answer under way runs to its end (a delivery is acknowledged or not by its
        # own outcome); only the answer has nowhere to go.

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
        if (self.head_bytes if self.in_head else self.framing_bytes) > self.server.max_head:
            self._refuse(reasons.HEAD_TOO_LARGE)  # a head, or a trailer field, without end
        elif (
            not self.in_head
            and self.request is not None
            and self.deadline is None
            and not self.continue_owed
        ):
            self._expect_by(self.server.read_timeout)  # the body is still coming

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
        self.request = Request()
        self.head_size = 0
        self.body = []
        self.body_size = 0
        if self.head_sooner:
            self._expect_sooner(self.server.read_timeout)

    def on_url(self, url: bytes) -> None:
        assert self.request is not None
        self.request.target += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.request is not None
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.server.max_head:
            self._refuse(reasons.HEAD_TOO_LARGE)
            return
        if not self.in_head:
            # A trailer field (llhttp reports them like header fields, after the last
            # chunk): not part of the header section (RFC 9110 §6.5.1), so a signature
            # sent there is not the request's. Counted with the head, and dropped.
            return
        key = self.wanted.get(name) or self.wanted.get(name.lower())
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
                self._refuse(reasons.BAD_HOST, request)
                return
            if request.target.startswith(b"/"):
                # Judged valid: the connection's next requests name the same host, and
                # checking it again would be ~2 µs per request on the hot path.
                self.valid_host = host
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            self._refuse(reasons.BODY_TOO_LARGE, request)
            return
        expect = headers.get("expect")
        if expect is not None and parser.get_http_version() == "1.1":
            routed = self.route(request)
            if isinstance(routed, Answer):
                self._finish_with(routed)
            elif expect.lower() != "100-continue":
                self._finish_with(_EXPECTATION_FAILED)
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
            self._refuse(reasons.BODY_TOO_LARGE, self.request)
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
                    if isinstance(request, Answer):
                        if request is not _CONTINUE:
                            self._close_with(request)
                            return
                        self._continue(bool(pending))
                        continue
                    routed = self.route(request)
                    if isinstance(routed, Answer):
                        if routed.close:
                            self._close_with(routed)
                            return
                        status, body, headers, head_only, _ = routed
                    else:
                        handler, headers, head_only = routed
                        status, body = await handler(request.headers, request.body)
                        if self.closed:
                            return
                    keep_alive = request.keep_alive and not self.server.closing
                    self._write(status, body, keep_alive, headers, head_only)
                    if not keep_alive:
                        self.abort()  # after the buffered answer is written
                        return
                self.busy = False
                if self.done:
                    return
                if self.deadline is None:
                    # the next request's head (or the rest of a body) is due
                    self._expect_by(self.server.idle_timeout)
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
        """Wake the waiting task: a request was queued, or none will come (closed)."""
        wake = self.wake
        if wake is not None:
            self.wake = None
            wake.set_result(None)

    def _continue(self, body_received: bool) -> None:
        """The 100 Continue that waited for the answers before it, unless the body came
        anyway (the request or a refusal of it is queued behind): then it is moot."""
        self.continue_owed = False
        if body_received or self.done:
            return
        assert self.transport is not None
        self.batch.flush()
        self.transport.write(_CONTINUE_BYTES)
        self._expect_by(self.server.read_timeout)  # the body is due from now

    def _write(
        self,
        status: int,
        body: bytes,
        keep_alive: bool,
        headers: bytes = JSON_HEADERS,
        head_only: bool = False,
    ) -> None:
        """Answer: batched with the loop pass's other writes (`writes.py`) when the
        connection stays open; written at once, after what is queued, when it closes."""
        assert self.transport is not None
        answer = b"HTTP/1.1 %d %s\r\n%scontent-length: %d\r\ndate: %s\r\n%s\r\n%s" % (
            status,
            PHRASES.get(status, b""),
            headers,
            len(body),
            self.server.date.now(),
            b"" if keep_alive else b"connection: close\r\n",
            b"" if head_only else body,
        )
        if keep_alive:
            self.batch.write(self.transport, answer)
        else:
            self.batch.flush()  # earlier answers first
            self.transport.write(answer)

    def _finish_with(self, answer: Answer) -> None:
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

    def _close_with(self, answer: Answer) -> None:
        """Answer and close.

        The client may still be sending: closing at once would make the kernel answer its
        next bytes with a reset, which can destroy our answer before the client reads it.
        So our side is shut (the answer is followed by EOF) and what still arrives is read
        and dropped, for at most `LINGER_SECONDS` and `LINGER_BYTES`, as web servers do.
        """
        self.done = True
        self._disarm()
        status, body, headers, head_only, _ = answer
        self._write(status, body, False, headers, head_only)
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

    def _refuse(self, rejection: Rejection, request: Request | None = None) -> None:
        if self.done:
            return
        self._finish_with(self.server.refusal(rejection, request))

    # ---- timers and shutdown ---------------------------------------------------------

    def _expect_by(self, seconds: float) -> None:
        """What is being read must arrive within `seconds` from now. Such deadlines only
        move later, so a timer already set fires no later than needed and re-arms itself
        then: a request costs a float store, not a timer (bench/receiver: a call_at and a
        cancel per request were ~3% of its CPU)."""
        self.deadline = self.loop.time() + seconds
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)

    def _expect_sooner(self, seconds: float) -> None:
        """Bring the deadline forward to `seconds` from now, if that is sooner."""
        deadline = self.loop.time() + seconds
        if self.deadline is not None and self.deadline <= deadline:
            return
        self._disarm()
        self.deadline = deadline
        self.timer = self.loop.call_at(deadline, self._on_deadline)

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
            self._refuse(reasons.READ_TIMEOUT, self.request)

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
