"""One event stream for several jobs (GET /api/streams?jobs=a,b,c), so that a page watching many
jobs holds one connection, not one per job (a browser opens at most six per origin on HTTP/1.1).

Each job's events go out as they are in its own stream (same ``event:`` and ``data:``, whose
``jobId`` says whose it is); the ``id:`` is the vector of every job's cursor after this event, in
the order of ``jobs``, e.g. ``id: 12,0,7``. A reconnect's Last-Event-ID (or the ``lastEventId``
query, for a page that reopens with a longer list) resumes each job where it was. The response
ends once every job is over and written; a reconnect then answers 204.
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qs

import trio

from ._jobs import JobManager
from ._problems import problem_bytes
from ._stream import JOB_ID, _cancel_on_disconnect, _simple

PATH = "/api/streams"
MAX_JOBS = 50


def _cursors(scope: dict, count: int) -> list[int]:
    """Last-Event-ID header, else the lastEventId query: counts, comma-separated; else zeros."""
    raw = None
    for name, value in scope.get("headers", []):
        if name.lower() == b"last-event-id":
            raw = value.decode("latin-1")
            break
    if raw is None:
        raw = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("lastEventId") or [""])[0]
    parts = [p.strip() for p in raw.split(",")] if raw.strip() else []
    cursors = [int(p) if p.isascii() and p.isdigit() and len(p) <= 18 else 0 for p in parts[:count]]
    return cursors + [0] * (count - len(cursors))


def _reframe(encoded: bytes, vector: str) -> bytes:
    """The stored event with its own ``id:`` line replaced by the vector."""
    lines = [line for line in encoded.split(b"\n") if not line.startswith(b"id:")]
    return b"id: " + vector.encode() + b"\n" + b"\n".join(lines)


class MultiStreamRoute:
    """ASGI middleware: answers GET /api/streams itself, passes everything else on."""

    def __init__(self, inner, manager: JobManager) -> None:
        self.inner, self.manager = inner, manager

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") != PATH:
            await self.inner(scope, receive, send)
            return
        if scope["method"] != "GET":
            await _simple(send, 405, problem_bytes(405, f"{scope['method']} is not allowed here; use GET"),
                          extra=[(b"allow", b"GET")])
            return
        wanted = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("jobs") or [""])[0]
        ids = [i for i in wanted.split(",") if i]
        if not ids or len(ids) > MAX_JOBS or len(set(ids)) != len(ids):
            await _simple(send, 400, problem_bytes(400, f"give jobs=ID,ID,... (1 to {MAX_JOBS}, no repeats)"))
            return
        jobs = [self.manager.jobs.get(i) if JOB_ID.match(i) else None for i in ids]
        if any(j is None for j in jobs):
            unknown = [i for i, j in zip(ids, jobs) if j is None]
            await _simple(send, 404, problem_bytes(404, f"no such job: {', '.join(unknown)[:200]}"))
            return
        cursors = [min(c, j.log.last_id) for c, j in zip(_cursors(scope, len(jobs)), jobs)]
        if all(j.log.closed and c >= j.log.last_id for c, j in zip(cursors, jobs)):
            await _simple(send, 204)
            return
        await self._stream(jobs, cursors, receive, send)

    async def _stream(self, jobs, cursors: list[int], receive, send) -> None:
        config = self.manager.config
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]})
        pending = [f"retry: {config.retry_ms}\n\n".encode()]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            while True:
                for i, job in enumerate(jobs):
                    encoded = job.log.encoded
                    while cursors[i] < len(encoded) and len(pending) < 256:
                        cursors[i] += 1
                        pending.append(_reframe(encoded[cursors[i] - 1], ",".join(map(str, cursors))))
                if pending:
                    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                    pending = []
                    continue
                if all(j.log.closed and c >= len(j.log.encoded) for c, j in zip(cursors, jobs)):
                    break
                with trio.move_on_after(config.keepalive_seconds) as quiet:
                    async with trio.open_nursery() as waiters:
                        for i, job in enumerate(jobs):
                            if not job.log.closed or cursors[i] < len(job.log.encoded):
                                waiters.start_soon(_first_of, job.log, cursors[i], waiters.cancel_scope)
                if quiet.cancelled_caught:
                    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                    pending.append(f": keepalive {stamp}\n\n".encode())
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


async def _first_of(log, cursor: int, scope: trio.CancelScope) -> None:
    await log.wait_beyond(cursor)
    scope.cancel()
