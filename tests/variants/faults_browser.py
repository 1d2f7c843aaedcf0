"""Faults only a browser feels (family 10), loaded by server.py beside it.

Each patches the event-stream route the variant server already uses, for the fault named in
``sys.argv[1]``; with any other name this module changes nothing.
"""

from __future__ import annotations

import sys

import trio

import reference_server._stream as stream
from reference_server._problems import problem_bytes

FAULT = sys.argv[1] if len(sys.argv) > 1 else ""
KNOWN = {"after-end-200", "buffered", "reconnect-503", "retry-hour"}
HOUR_MS = 3_600_000
# buffered: what the stream writes is held and sent every this many seconds (and at its end), as
# a framework or proxy buffer does. Longer than the browser family's jobs (3.5 s), shorter than
# the events deadline (5 s): each job mostly reaches the browser in one burst at its end.
FLUSH_SECONDS = 4.5

_inner = stream.EventStreamRoute._stream
_refused: set[str] = set()


async def _stream(self, job, last_id, head_only, receive, send, scope=None):
    log = job.log
    if FAULT == "after-end-200" and log.closed and last_id is not None and last_id >= log.last_id:
        # A finished job's reconnect answered 200 and closed at once: 4.7 sees a wrong status,
        # a browser reconnects every retry period, for ever.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": f"retry: {self.manager.config.retry_ms}\n\n".encode()})
        return
    if FAULT == "reconnect-503" and last_id is not None and not log.closed and job.id not in _refused:
        # "Recovering": the first reconnect of each running job is turned away. A Python client
        # retries; a browser's EventSource gives up for good (readyState CLOSED).
        _refused.add(job.id)
        body = problem_bytes(503, "recovering; try again")
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()), (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": body})
        return
    if FAULT == "retry-hour":
        # Every stream opens with retry: one hour (healthz still says retryMs 200): after a cut a
        # browser's EventSource waits an hour before it reconnects.
        opening = f"retry: {self.manager.config.retry_ms}\n".encode()

        async def send_hour(message):
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and body.startswith(opening):
                message = {**message, "body": f"retry: {HOUR_MS}\n".encode() + body[len(opening):]}
            await send(message)

        return await _inner(self, job, last_id, head_only, receive, send_hour, scope)
    if FAULT == "buffered":
        return await _buffered(self, job, last_id, head_only, receive, send, scope)
    return await _inner(self, job, last_id, head_only, receive, send, scope)


async def _buffered(self, job, last_id, head_only, receive, send, scope):
    """The stream as the correct server writes it, its body sent every FLUSH_SECONDS."""
    held: list[bytes] = []
    lock = trio.Lock()  # one send at a time: the flusher's and the end's

    async def flush(more: bool) -> None:
        async with lock:
            if held or not more:
                body = b"".join(held)
                held.clear()
                await send({"type": "http.response.body", "body": body, "more_body": more})

    async def send_later(message):
        if message["type"] != "http.response.body":
            await send(message)
        elif message.get("more_body"):
            held.append(message.get("body", b""))
        else:
            held.append(message.get("body", b""))
            await flush(False)

    async with trio.open_nursery() as nursery:
        async def flusher():
            while True:
                await trio.sleep(FLUSH_SECONDS)
                await flush(True)

        nursery.start_soon(flusher)
        await _inner(self, job, last_id, head_only, receive, send_later, scope)
        nursery.cancel_scope.cancel()


if FAULT in KNOWN:
    stream.EventStreamRoute._stream = _stream
