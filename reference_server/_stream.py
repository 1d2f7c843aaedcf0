"""The event-stream route as a lean ASGI handler: replay, live events, keep-alives, prompt close."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

import trio

from ._eventlog import EventLog
from ._jobs import JobManager
from ._problems import PROBLEM_TYPE, problem_bytes
from ._serving import BodyWriter, Connections

EVENTS_PATH = re.compile(r"^/api/jobs/([^/]*)/events/?$")
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def _last_event_id(scope: Scope) -> int | None:
    """Header wins over the query parameter; anything but a decimal integer counts as absent."""
    raw = None
    for name, value in scope.get("headers", []):
        if name.lower() == b"last-event-id":
            raw = value.decode("latin-1").strip()
            break
    if raw is None:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("lastEventId")
        raw = values[0].strip() if values else None
    if raw and raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    return None


async def _simple(send: Send, status: int, body: bytes = b"", content_type: bytes = PROBLEM_TYPE.encode(),
                  extra: list[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-length", str(len(body)).encode()), *extra]
    if body:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class EventStreamRoute:
    """ASGI middleware: answers GET /api/jobs/{id}/events itself, passes all else on.

    Kept out of Quart's response machinery: no per-response timeout to defeat, no
    per-chunk wrapper objects, and the disconnect is watched directly.
    """

    def __init__(self, inner: Callable, manager: JobManager, connections: Connections | None = None) -> None:
        self.inner = inner
        self.manager = manager
        self.connections = connections  # where the server offers direct body writes (see _serving)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = EVENTS_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.inner(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _simple(send, 405, problem_bytes(405, f"{scope['method']} is not allowed here; use GET"),
                          extra=[(b"allow", b"GET, HEAD")])
            return
        job_id = match.group(1)
        job = self.manager.jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            await _simple(send, 404, problem_bytes(404, "no such job"))
            return
        await self._stream(job, _last_event_id(scope), scope["method"] == "HEAD", receive, send, scope)

    async def _stream(self, job, last_id: int | None, head_only: bool, receive: Receive, send: Send,
                      scope: Scope) -> None:
        config = self.manager.config
        log = job.log
        if log.closed and last_id is not None and last_id >= log.last_id:
            await _simple(send, 204)
            return
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
        })
        if head_only:
            await send({"type": "http.response.body", "body": b""})
            return
        # An id past the end means "I have everything so far": continue from the end.
        cursor = min(last_id or 0, log.last_id)
        writer = self.connections.for_scope(scope) if self.connections is not None else None
        keepalive = config.keepalive_seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            pending = f"retry: {config.retry_ms}\n\n".encode()
            last_write = trio.current_time()
            while True:
                # Write what is past the cursor (the replay, or what came while we were away),
                # coalesced into writes of bounded size.
                while cursor < len(log.encoded) or pending:
                    end = min(len(log.encoded), cursor + 256)
                    chunk = [pending] if pending else []
                    size = len(pending)
                    while cursor < end and size < config.max_write_bytes:
                        chunk.append(log.encoded[cursor])
                        size += len(log.encoded[cursor])
                        cursor += 1
                    await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
                    pending = b""
                    last_write = trio.current_time()
                    if cursor < len(log.encoded):
                        await trio.lowlevel.checkpoint()  # a long replay must not starve the others
                if log.closed:
                    break
                # Caught up: wait for the next event, or until the stream has been quiet too long.
                if writer is not None and writer.ready():
                    live = _LiveDelivery(log, writer, cursor, last_write)
                    rest = await live.run(keepalive)
                    cursor, last_write = live.cursor, live.last_write
                    if rest:
                        await writer.send_rest(rest)
                        last_write = trio.current_time()
                else:
                    with trio.move_on_at(last_write + keepalive):
                        await log.wait_beyond(cursor)
                if cursor == len(log.encoded) and not log.closed and trio.current_time() >= last_write + keepalive:
                    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                    pending = f": keepalive {stamp}\n\n".encode()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


class _LiveDelivery:
    """A caught-up subscriber's live events, written from the log's append or its Fanout: no task
    switch per event.

    The subscriber's task sleeps in ``run`` meanwhile and wakes only when an event could not
    be written whole at once (the client is slow: the task finishes the write, waiting for
    the client), when the log closes, or when the stream has been quiet for the keep-alive
    interval. Whatever happens, ``cursor`` counts exactly the events already written.
    """

    __slots__ = ("log", "writer", "cursor", "last_write", "rest", "_wake", "_quiet", "_keepalive")

    def __init__(self, log: EventLog, writer: BodyWriter, cursor: int, last_write: float) -> None:
        self.log, self.writer, self.cursor, self.last_write = log, writer, cursor, last_write
        self.rest = b""
        self._wake = trio.Event()
        self._quiet: trio.CancelScope | None = None  # the keep-alive timer while ``run`` waits
        self._keepalive = 0.0

    def _written(self) -> None:
        """After a write: the keep-alive timer moves on, but only once it is half spent. Moving it
        on every write costs about 10 % per event; never moving it makes every subscriber of a
        busy job wake at the same time, once per interval, only to go back to sleep (4,000 of
        them at once held the loop for 0.4 s, and every request waited for that pass)."""
        self.last_write = now = trio.current_time()
        quiet = self._quiet
        if quiet is not None and quiet.deadline - now < self._keepalive / 2:
            quiet.deadline = now + self._keepalive

    def offer(self, encoded: bytes) -> None:
        if self.cursor != len(self.log.encoded) - 1 or not self.writer.ready():
            self._stop()  # not the next event for us, or a write is under way: the task takes over
            return
        self.rest = self.writer.write_now(encoded)
        self.cursor += 1
        self._written()
        if self.rest or self.log.closed:
            self._stop()

    def offer_many(self, joined: bytes, first: int, count: int) -> None:
        """Events ``first`` .. ``first + count - 1`` of the log, joined: one write for all of them
        (the Fanout offers all a log got since its last turn at once; see _eventlog.Fanout)."""
        end = first + count
        if self.cursor >= end:
            # Our task wrote these from the log while the fan-out was on its way to us. A safety net,
            # not reached today (a task does not listen on a closed log): should a listener ever
            # already have a closed log's last event here, its task still ends the stream.
            if self.log.closed and self.cursor == len(self.log.encoded):
                self._stop()
            return
        if self.cursor < first or not self.writer.ready():
            self._stop()  # events before these are missing here, or a write is under way
            return
        if self.cursor > first:
            # Our task wrote the first few from the log and listened again (it is ahead of the
            # fan-out whenever the fan-out is behind): write the rest, rather than hand back to
            # the task, which would write them, listen, and be handed back again at the next turn.
            joined = joined[sum(len(e) for e in self.log.encoded[first:self.cursor]):]
        self.rest = self.writer.write_now(joined)
        self.cursor = end
        self._written()
        if self.rest or self.log.closed:
            self._stop()

    def _stop(self) -> None:
        self.log.unlisten(self.offer)
        self._wake.set()

    async def run(self, keepalive: float) -> bytes:
        """Deliver until woken or quiet for ``keepalive`` s; return framed bytes still to send."""
        self._keepalive = keepalive
        self.log.listen(self.offer)
        try:
            while not self._wake.is_set():
                with trio.move_on_at(self.last_write + keepalive) as self._quiet:
                    await self._wake.wait()
                if self._quiet.cancelled_caught and trio.current_time() >= self.last_write + keepalive:
                    break
        finally:
            self._quiet = None
            self.log.unlisten(self.offer)
        return self.rest


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
