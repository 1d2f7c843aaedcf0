"""The reference server with one deliberate fault (or one legal oddity), for the detection tests.

    python tests/variants/server.py FAULT [sse-reference-server options]

Faults are applied here, by patching, and exist nowhere in reference_server itself: the real
command line cannot reach them. Each differs from the correct server in one behaviour.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone

import trio

import reference_server._app as app_module
import reference_server._cli as cli
import reference_server._eventlog as eventlog
import reference_server._jobs as jobs
import reference_server._pipeline as pipeline
import reference_server._stream as stream
from reference_server._problems import problem_bytes

FAULT = sys.argv[1]
LEGAL = FAULT.startswith("legal-")


# -- faults in the event log: ids, percent, stage ------------------------------------------
_original_encode = eventlog.encode_event
_state = {"progress_seen": 0, "backwards_done": set(), "regress_done": set(), "last_percent": {}}


def _faulty_encode(event_id: int, event_type: str, data: dict) -> bytes:
    data = dict(data)
    if FAULT == "id-skip" and event_id >= 10:
        event_id += 1
    if FAULT == "id-repeat" and event_id == 10:
        event_id = 9
    if FAULT == "ts-backwards" and event_id == 15:
        data["ts"] = data.get("ts", 0) - 5000
    job = data.get("jobId")
    if FAULT == "percent-regress" and event_type == "step-progress" and data.get("stage") == "visuals" \
            and data.get("stagePercent", 0) > 50 and job not in _state["regress_done"]:
        _state["regress_done"].add(job)
        # Below the event before it, however far apart progress events come (a busy machine
        # spaces them: 5 points under this event's own value was once still above the last one).
        data["percent"] = round(min(data["percent"] - 5, _state["last_percent"].get(job, 100) - 1), 2)
    if isinstance(data.get("percent"), (int, float)):
        _state["last_percent"][job] = data["percent"]
    if FAULT == "stage-backwards" and event_type == "step-progress" and data.get("stage") == "visuals" \
            and data.get("stagePercent", 0) > 20 and job not in _state["backwards_done"]:
        _state["backwards_done"].add(job)
        data["stage"] = "tts"
    return _original_encode(event_id, event_type, data)


eventlog.encode_event = _faulty_encode


# -- faults in the job runner ---------------------------------------------------------------
_original_cancel = jobs.JobManager.cancel
_sleepers: list[int] = []


def _cancel_later(manager, job, delay: float) -> None:
    """Say canceling now, cancel the job's scope ``delay`` seconds later."""
    if job.status != "canceling":
        job.set_status("canceling", "cancel requested")

    async def later():
        await trio.sleep(delay)
        job.cancel_scope.cancel()

    manager._nursery.start_soon(later)


def _cancel(self, job):
    if FAULT == "cancel-twice-409" and not job.terminal:
        return _cancel_later(self, job, 0.3)  # like a server whose cleanup takes a moment
    if FAULT == "cancel-ignored-in-compose" and job.stage == "compose" and not job.terminal:
        return  # accepted (202) and forgotten
    if FAULT == "cancel-slow" and not job.terminal:
        return _cancel_later(self, job, 2.5)
    if FAULT == "cancel-202-keeps-running" and not job.terminal:
        return  # 202 "canceling", and the job just goes on
    return _original_cancel(self, job)


jobs.JobManager.cancel = _cancel

_original_cleanup = jobs.JobManager._cleanup


def _cleanup(self, job):
    if FAULT == "cancel-leaves-folder":
        return {"workdirRemoved": True, "processesKilled": True}  # and removes nothing
    result = _original_cleanup(self, job)
    if FAULT == "cancel-leaves-process":
        result["processesKilled"] = True  # a claim the harness checks for itself
    return result


jobs.JobManager._cleanup = _cleanup

_original_run_tool = pipeline.run_tool


async def _run_tool(ws, args, *, on_line=None):
    if FAULT == "cancel-leaves-process":
        sleeper = subprocess.Popen(["sleep", "20"], start_new_session=True)
        _sleepers.append(sleeper.pid)
        ws.pids.add(sleeper.pid)  # shown in resources, never killed by a cancel
    return await _original_run_tool(ws, args, on_line=on_line)


pipeline.run_tool = _run_tool


@atexit.register
def _stop_sleepers() -> None:
    for pid in _sleepers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_original_finish_completed = jobs.JobManager._finish_completed


def _finish_completed(self, job):
    _original_finish_completed(self, job)
    if FAULT == "event-after-terminal":
        job.log.closed = False
        job.emit("warning", terminal=True, stage="render", code="LATE", message="after the end")


jobs.JobManager._finish_completed = _finish_completed

_original_finish_failed = jobs.JobManager._finish_failed


def _finish_failed(self, job, failure):
    if FAULT == "failure-no-remediation":
        failure.remediation = []
    return _original_finish_failed(self, job, failure)


jobs.JobManager._finish_failed = _finish_failed


_original_emit = jobs.Job.emit


def _emit(self, event_type, terminal=False, **fields):
    if FAULT == "warn-missing" and event_type == "warning" and fields.get("code") == "REQUESTED_WARNING":
        return
    if FAULT == "stage-skipped" and event_type == "step-status" and fields.get("stage") == "tts":
        return
    return _original_emit(self, event_type, terminal, **fields)


jobs.Job.emit = _emit


# -- faults at the HTTP edge ----------------------------------------------------------------
if FAULT == "garbage-lei-500":
    _original_lei = stream._last_event_id

    def _strict_lei(scope):
        for name, value in scope.get("headers", []):
            if name.lower() == b"last-event-id":
                int(value)  # raises on garbage: a 500
        return _original_lei(scope)

    stream._last_event_id = _strict_lei


class FaultEdge:
    """ASGI middleware for faults in the REST answers."""

    def __init__(self, inner, manager):
        self.inner, self.manager = inner, manager

    async def __call__(self, scope, receive, send):
        path, method = scope.get("path", ""), scope.get("method")
        parts = path.strip("/").split("/")
        if FAULT == "cancel-finished-202" and method == "POST" and len(parts) == 4 and parts[3] == "cancel":
            job = self.manager.jobs.get(parts[2])
            if job is not None and job.terminal:
                return await _answer(send, 202, json.dumps({"jobId": job.id, "status": "canceling",
                                                            "cleanupScheduled": True}).encode(), b"application/json")
        if FAULT == "hostile-id-500" and len(parts) >= 3 and parts[:2] == ["api", "jobs"] and len(parts[2]) > 64:
            return await _answer(send, 500, b"<html><body>Internal Server Error</body></html>", b"text/html")
        if FAULT == "healthz-missing-settings" and path == "/api/healthz":
            return await _answer(send, 200, b'{"status": "ok", "version": "x"}', b"application/json")
        if FAULT == "cancel-unknown-500" and method == "POST" and len(parts) == 4 and parts[3] == "cancel" \
                and parts[2] not in self.manager.jobs:
            return await _answer(send, 500, problem_bytes(500, "oops"), b"application/problem+json")
        if FAULT == "cancel-twice-409" and method == "POST" and len(parts) == 4 and parts[3] == "cancel":
            job = self.manager.jobs.get(parts[2])
            if job is not None and job.status == "canceling":
                return await _answer(send, 409, problem_bytes(409, "already canceling"), b"application/problem+json")
        if FAULT == "filter-ignored" and path == "/api/queue" and scope.get("query_string"):
            return await self.inner({**scope, "query_string": b""}, receive, send)
        if FAULT == "artifact-not-mp4" and method == "GET" and len(parts) == 5 and parts[3] == "artifacts" \
                and parts[2] in self.manager.jobs and self.manager.jobs[parts[2]].artifacts:
            return await _answer(send, 200, b"this is not a video", b"video/mp4")
        if FAULT == "unknown-job-stream" and method == "GET" and len(parts) == 4 and parts[3] == "events" \
                and parts[2] not in self.manager.jobs:
            return await _answer(send, 200, b"", b"text/event-stream")
        if FAULT == "bad-filter-200" and path == "/api/queue" and b"nonsense" in scope.get("query_string", b""):
            return await _answer(send, 200, b'{"jobs": [], "stats": {}}', b"application/json")
        if FAULT == "wrong-method-404" and method == "DELETE" and path == "/api/jobs":
            return await _answer(send, 404, problem_bytes(404, "not found"), b"application/problem+json")
        if FAULT == "queue-stats-wrong" and method == "GET" and path == "/api/queue" and not scope.get("query_string"):
            return await self.inner(scope, receive, _bump_total(send))
        if FAULT == "snapshot-ahead" and method == "GET" and len(parts) == 3 and parts[:2] == ["api", "jobs"]:
            return await self.inner(scope, receive, _percent_ahead(send))
        if FAULT in ("not-object-422", "wrong-type-400", "big-body-500", "unknown-field-accepted") \
                and method == "POST" and path == "/api/jobs":
            body = await _read_body(receive)
            headers = dict(scope.get("headers", []))
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if FAULT == "not-object-422" and parsed is not None and not isinstance(parsed, dict):
                return await _answer(send, 422, problem_bytes(422, "bad body"), b"application/problem+json")
            if FAULT == "wrong-type-400" and headers.get(b"content-type", b"") != b"application/json":
                return await _answer(send, 400, problem_bytes(400, "bad type"), b"application/problem+json")
            if FAULT == "big-body-500" and len(body) > 64 * 1024:
                return await _answer(send, 500, problem_bytes(500, "too big"), b"application/problem+json")
            if FAULT == "unknown-field-accepted" and isinstance(parsed, dict) and "surprise" in parsed:
                parsed.pop("surprise")
                body = json.dumps(parsed).encode()
            replayed = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive_body():
                return replayed.pop() if replayed else await receive()

            return await self.inner(scope, receive_body, send)
        if FAULT == "malformed-json-500-html" and method == "POST" and path == "/api/jobs":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            try:
                json.loads(body)
            except ValueError:
                return await _answer(send, 500, b"<html><body><h1>Traceback</h1></body></html>", b"text/html")
            replayed = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive_again():
                return replayed.pop() if replayed else await receive()

            return await self.inner(scope, receive_again, send)
        return await self.inner(scope, receive, send)


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _bump_total(send):
    """Wrap send so that the queue's stats.total is off by one."""
    async def wrapped(message):
        if message["type"] == "http.response.body" and message.get("body"):
            data = json.loads(message["body"])
            data["stats"]["total"] += 1
            message = {**message, "body": json.dumps(data).encode()}
        elif message["type"] == "http.response.start":
            message = {**message, "headers": [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]}
        await send(message)
    return wrapped


def _percent_ahead(send):
    """Wrap send so that a running job's snapshot says it is 30 points further on than it is (a
    snapshot computed from an estimate, not from the state its events come from)."""
    async def wrapped(message):
        if message["type"] == "http.response.body" and message.get("body"):
            data = json.loads(message["body"])
            if data.get("status") == "running" and isinstance(data.get("percent"), (int, float)):
                data["percent"] = min(99.0, data["percent"] + 30)
            message = {**message, "body": json.dumps(data).encode()}
        elif message["type"] == "http.response.start":
            message = {**message, "headers": [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]}
        await send(message)
    return wrapped


async def _answer(send, status, body, content_type):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


_original_create_app = app_module.create_app


def _create_app(config, manager, *args):
    app = _original_create_app(config, manager, *args)
    app.asgi_app = FaultEdge(app.asgi_app, manager)
    _LEAK["manager"] = manager
    return app


app_module.create_app = _create_app
_LEAK: dict = {}


# -- the event stream, written plainly with switches (faults and legal oddities) ---------------
_connections = [0]


def _legal_bytes(encoded: bytes, connection: int = 0) -> bytes:
    if FAULT == "multiline-data" and encoded.startswith(b"id:"):
        encoded = encoded.replace(b',"correlationId"', b',\ndata: "correlationId"', 1)
    if FAULT == "per-connection-bytes" and encoded.startswith(b"id:"):
        encoded = encoded.replace(b'{"jobId"', b'{"conn":%d,"jobId"' % connection, 1)
    if FAULT == "legal-crlf":
        encoded = encoded.replace(b"\n", b"\r\n")
    if FAULT == "legal-cr":
        encoded = encoded.replace(b"\n", b"\r")
    if FAULT == "legal-misc":
        encoded = b"x-trace: 7\n" + encoded.replace(b"data: ", b"data:")
    return encoded


_opened_jobs: list = []  # lei-other-stream: the jobs whose streams were opened afresh, newest last


async def _variant_stream(self, job, last_id, head_only, receive, send, scope=None):
    config = self.manager.config
    if FAULT == "lei-other-stream":
        if last_id is None:
            _opened_jobs[:] = [*_opened_jobs[-99:], job]
        else:
            # An event store that looks the id up in the newest stream that has it, whichever
            # stream's URL asked: another job's events after that id.
            job = next((j for j in reversed(_opened_jobs) if j is not job and j.log.last_id >= last_id), job)
    log = job.log
    past_end = last_id is not None and last_id > log.last_id
    if log.closed and last_id is not None and last_id >= log.last_id and not (FAULT == "past-end-replays-all" and past_end):
        if FAULT == "finished-reconnect-200-open" and last_id == log.last_id:
            return await _open_and_idle(send, config.keepalive_seconds, receive)
        if FAULT == "empty-200-not-204":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    content_type = {"wrong-content-type": b"text/plain", "legal-misc": b"text/event-stream;charset=UTF-8"}.get(
        FAULT, b"text/event-stream")
    cache = b"no-store" if FAULT == "legal-misc" else b"no-cache"
    cors = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-credentials", b"true")] \
        if FAULT == "cors-star-credentials" else []
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"cache-control", cache), (b"x-accel-buffering", b"no"),
                            *cors]})
    cursor = min(last_id or 0, log.last_id)
    if FAULT == "past-end-replays-all" and last_id and last_id > log.last_id:
        cursor = 0
    _connections[0] += 1
    connection = _connections[0]
    if FAULT == "lei-ignored":
        cursor = 0
    if FAULT == "replay-off-by-one" and last_id:
        cursor = max(0, cursor - 1)
    # queued-events-held: a queued job's stored events wait for the next event to come.
    held_until = len(log.encoded) + 1 if FAULT == "queued-events-held" and job.status == "queued" else 0
    keepalive = config.keepalive_seconds
    if FAULT == "keepalive-slow":
        keepalive *= 2.2
    if FAULT == "legal-misc":
        keepalive /= 3  # more often than advertised, and other text
    first = b"" if FAULT == "no-retry" else _legal_bytes(f"retry: {config.retry_ms}\n\n".encode())
    byte_by_byte = FAULT == "legal-misc"
    writes = 0

    async def write(data: bytes) -> None:
        nonlocal byte_by_byte
        if byte_by_byte:
            byte_by_byte = False
            for i in range(min(len(data), 300)):  # the first bytes one at a time
                await send({"type": "http.response.body", "body": data[i:i + 1], "more_body": True})
            data = data[300:]
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream._cancel_on_disconnect, receive, nursery.cancel_scope)
        if first:
            await write(first)
        if FAULT == "invalid-utf8":
            await write(b": caf\xe9 latin-1, not UTF-8\n\n")
        if FAULT == "replay-race" and cursor < len(log.encoded):
            end = len(log.encoded)
            for i in range(cursor, end):  # replay slowly, one event per write ...
                await write(log.encoded[i])
                await trio.sleep(0.02)
            cursor = len(log.encoded)  # ... then "subscribe" at the live end: what came meanwhile is lost
        while True:
            if FAULT == "batched":
                await trio.sleep(1.5)
            if cursor < len(log.encoded) and len(log.encoded) >= held_until:
                chunk = [_legal_bytes(e, connection) for e in log.encoded[cursor:] if not _withheld(e)]
                writes += 1
                if FAULT == "cross-job-leak" and writes % 5 == 0:
                    others = [j for j in _LEAK["manager"].jobs.values() if j is not job and j.log.encoded]
                    if others:
                        chunk.append(others[0].log.encoded[-1])
                cursor = len(log.encoded)
                await write(b"".join(chunk))
                continue
            if log.closed and FAULT not in ("stream-open-after-terminal", *_WITHHELD) and len(log.encoded) >= held_until:
                break
            timeout = float("inf") if FAULT == "no-keepalive" else keepalive
            with trio.move_on_after(timeout):
                await log.wait_beyond(max(cursor, held_until - 1))
                if not (log.closed and cursor >= len(log.encoded)):
                    continue
                await trio.sleep(keepalive)
            stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            text = f": ping {stamp}\n\n" if FAULT == "legal-misc" else f": keepalive {stamp}\n\n"
            await write(_legal_bytes(text.encode()))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        nursery.cancel_scope.cancel()


# Terminal events a fault never writes: the stream stays open with keep-alives instead.
_WITHHELD = {"cancelled-event-lost": b"event: job-cancelled\n", "no-terminal-event": b"event: job-completed\n"}


def _withheld(encoded: bytes) -> bool:
    marker = _WITHHELD.get(FAULT)
    return marker is not None and marker in encoded


async def _open_and_idle(send, keepalive: float, receive) -> None:
    """200 and a stream that brings nothing but keep-alives until the client goes."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                            (b"x-accel-buffering", b"no")]})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream._cancel_on_disconnect, receive, nursery.cancel_scope)
        while True:
            await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
            await trio.sleep(keepalive)


stream.EventStreamRoute._stream = _variant_stream


# -- settings faults ------------------------------------------------------------------------
_original_parse_args = cli.parse_args


def _parse_args(argv=None):
    config = _original_parse_args(argv)
    if FAULT == "cadence-slow":
        config = dataclasses.replace(config, progress_interval=1.2)
    return config


cli.parse_args = _parse_args

KNOWN = {
    "correct", "id-skip", "id-repeat", "percent-regress", "snapshot-ahead", "stage-backwards", "lei-ignored", "replay-off-by-one",
    "replay-race", "no-keepalive", "keepalive-slow", "cancel-ignored-in-compose", "cancel-slow",
    "cancel-leaves-folder", "cancel-leaves-process", "event-after-terminal", "stream-open-after-terminal",
    "cross-job-leak", "batched", "wrong-content-type", "cancel-finished-202", "malformed-json-500-html",
    "empty-200-not-204", "garbage-lei-500", "no-retry", "failure-no-remediation", "cadence-slow", "hostile-id-500",
    "artifact-not-mp4", "unknown-job-stream", "bad-filter-200", "wrong-method-404", "queue-stats-wrong",
    "not-object-422", "wrong-type-400", "big-body-500", "unknown-field-accepted", "warn-missing", "stage-skipped",
    "multiline-data", "per-connection-bytes", "past-end-replays-all", "invalid-utf8", "ts-backwards",
    "healthz-missing-settings", "cancel-unknown-500", "cancel-twice-409", "filter-ignored",
    "queued-events-held", "cancelled-event-lost", "no-terminal-event", "cancel-202-keeps-running",
    "finished-reconnect-200-open", "lei-other-stream", "cors-star-credentials",
    "legal-crlf", "legal-cr", "legal-misc",
}

# Faults of later families live in their own modules beside this file (faults_*.py): each
# reads the fault name from sys.argv[1], patches what it needs, and names its faults in KNOWN.
import importlib  # noqa: E402
import pathlib  # noqa: E402

for _path in sorted(pathlib.Path(__file__).parent.glob("faults_*.py")):
    KNOWN |= set(importlib.import_module(_path.stem).KNOWN)

if __name__ == "__main__":
    if FAULT not in KNOWN:
        raise SystemExit(f"unknown variant {FAULT}; known: {', '.join(sorted(KNOWN))}")
    raise SystemExit(cli.main(sys.argv[2:]))
