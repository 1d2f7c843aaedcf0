"""The event-stream route as a lean ASGI handler: replay, live events, keep-alives, prompt close."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

import trio

from ._jobs import JobManager
from ._problems import PROBLEM_TYPE, problem_bytes

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

    def __init__(self, inner: Callable, manager: JobManager) -> None:
        self.inner = inner
        self.manager = manager

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
        await self._stream(job, _last_event_id(scope), scope["method"] == "HEAD", receive, send)

    async def _stream(self, job, last_id: int | None, head_only: bool, receive: Receive, send: Send) -> None:
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
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            pending = f"retry: {config.retry_ms}\n\n".encode()
            while True:
                end = min(len(log.encoded), cursor + 256)
                if end > cursor:
                    # Coalesce what is waiting into one write, bounded in size.
                    chunk = [pending] if pending else []
                    size = len(pending)
                    while cursor < end and size < config.max_write_bytes:
                        chunk.append(log.encoded[cursor])
                        size += len(log.encoded[cursor])
                        cursor += 1
                    pending = b"".join(chunk)
                if pending:
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                    pending = b""
                if log.closed and cursor >= len(log.encoded):
                    break
                if cursor < len(log.encoded):
                    continue
                with trio.move_on_after(config.keepalive_seconds):
                    await log.wait_beyond(cursor)
                    continue
                stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                pending = f": keepalive {stamp}\n\n".encode()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
