"""The quart-trio application, its REST routes, and serve(): hypercorn plus the job manager."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import signal
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from quart import Response, request, send_file
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ._config import ServerConfig
from ._jobs import STATUSES, JobManager
from ._problems import PROBLEM_TYPE, problem
from ._serving import Connections
from ._serving import serve as hypercorn_serve
from ._page import register_page
from ._stream import JOB_ID, EventStreamRoute
from ._validation import InvalidField, parse_job_request

try:  # the one place the version is written is the package's metadata (pyproject.toml)
    VERSION = importlib.metadata.version("sse-harness")
except importlib.metadata.PackageNotFoundError:
    VERSION = "0+unknown"
MAX_BODY = 64 * 1024
DEMO = {"topic": "How a render farm turns a script into a video", "audience": "newcomers", "scenes": 3}
log = logging.getLogger("reference_server")


def _json(body: Any, status: int = 200, headers: dict | None = None, content_type: str = "application/json") -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type=content_type)


def _problem(status: int, detail: str, **extra: Any) -> Response:
    return _json(problem(status, detail, **extra), status, content_type=PROBLEM_TYPE)


def create_app(config: ServerConfig, manager: JobManager, connections: Connections | None = None) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 10

    def find_job(job_id: str):
        job = manager.jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            return None, _problem(404, "no such job")
        return job, None

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        response = _problem(exc.code or 500, exc.description or exc.name)
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error")
        return _problem(500, "internal error; see the server log")

    @app.get("/api/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok", "version": VERSION, "keepaliveSeconds": config.keepalive_seconds,
                      "retryMs": config.retry_ms, "cancelDeadlineMs": config.cancel_deadline_ms})

    async def _accept(body: dict) -> Response:
        try:
            job_request = parse_job_request(body)
        except InvalidField as exc:
            return _problem(422, str(exc), field=exc.field)
        if manager.closing.is_set():
            return _problem(503, "the server is shutting down")
        job = manager.create(job_request)
        with trio.move_on_after(5):  # answered once the job is on disk: a restart now keeps it
            await job.log.wait_beyond(0)
        return _json(job.snapshot(), 202, headers={"Location": f"/api/jobs/{job.id}"})

    @app.post("/api/jobs")
    async def create_job() -> Response:
        if (request.content_length or 0) > MAX_BODY:
            response = _problem(413, f"the body is over {MAX_BODY} bytes")
            response.headers["Connection"] = "close"  # the unread body must not poison the connection
            return response
        # Read the body before any other answer, so that a kept-alive connection stays in step.
        raw = await request.get_data()  # raises 413 past MAX_CONTENT_LENGTH when chunked
        if request.mimetype != "application/json":
            return _problem(415, "send the job as application/json")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _problem(400, f"malformed JSON: {exc}")
        if not isinstance(body, dict):
            return _problem(400, "the body must be a JSON object")
        return await _accept(body)

    @app.post("/api/quick/demo")
    async def quick_demo() -> Response:
        return await _accept(dict(DEMO))

    @app.get("/api/jobs/<job_id>")
    async def get_job(job_id: str) -> Response:
        job, error = find_job(job_id)
        return error or _json(job.snapshot())

    @app.post("/api/jobs/<job_id>/cancel")
    async def cancel_job(job_id: str) -> Response:
        job, error = find_job(job_id)
        if error:
            return error
        if job.terminal:
            return _problem(409, f"the job is already {job.status}")
        manager.cancel(job)
        return _json({"jobId": job.id, "status": "canceling", "cleanupScheduled": True}, 202)

    @app.get("/api/jobs/<job_id>/artifacts/<name>")
    async def artifact(job_id: str, name: str) -> Response:
        job, error = find_job(job_id)
        if error:
            return error
        path = manager.artifact_path(job, name)
        if path is None:
            return _problem(404, "no such artifact")
        return await send_file(path, mimetype="video/mp4")

    @app.get("/api/queue")
    async def queue() -> Response:
        wanted = request.args.get("status")
        statuses = None
        if wanted is not None:
            statuses = [s.strip() for s in wanted.split(",") if s.strip()]
            unknown = [s for s in statuses if s not in STATUSES]
            if unknown or not statuses:
                return _problem(400, f"unknown status word(s): {', '.join(unknown) or '(empty)'}; "
                                     f"expected {', '.join(STATUSES)}")
        jobs = list(manager.jobs.values())
        stats = {"total": len(jobs), **{s: 0 for s in STATUSES}}
        for job in jobs:
            stats[job.status] += 1
        listed = [j.summary() for j in jobs if statuses is None or j.status in statuses]
        return _json({"jobs": listed, "stats": stats})

    @app.get("/api/render/<job_id>/progress")
    async def render_progress(job_id: str) -> Response:
        job, error = find_job(job_id)
        return error or _json(job.progress())

    app.asgi_app = EventStreamRoute(app.asgi_app, manager, connections)
    register_page(app, manager)  # GET / (the web page) and GET /api/streams (several jobs, one stream)
    return app


async def serve(config: ServerConfig, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
                shutdown_trigger=None, hard_exit: bool = False) -> None:
    """Run the server until SIGINT/SIGTERM (or ``shutdown_trigger`` returns).

    On shutdown, live jobs are cancelled and cleaned up first (their terminal events end
    the streams), writes still waiting on clients that stopped reading are given up (their
    connections closed), then hypercorn stops. With ``hard_exit`` the process also leaves
    after 1.8 s whatever still holds it, as a last resort.
    """
    manager = JobManager(config)
    connections = Connections(patience=config.stalled_client_seconds)
    app = create_app(config, manager, connections)
    hyper = HypercornConfig()
    hyper.bind = [f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"]
    hyper.graceful_timeout = 0.5
    # Hostile clients, by hypercorn's own settings: a connection without a complete request
    # (idle, or sending its headers a byte at a time) is closed after keep_alive_timeout, which
    # runs from the accept and is not restarted by partial data; a request head over
    # h11_max_incomplete_size is answered 431 and the connection closed.
    hyper.keep_alive_timeout = config.idle_connection_seconds
    hyper.h11_max_incomplete_size = 16 * 1024
    hyper.backlog = 4096  # hypercorn's 100 drops SYNs in a burst of connects: a second's delay each
    hyper.accesslog = None
    hyper.errorlog = log

    async def until_signal() -> None:
        if shutdown_trigger is not None:
            await shutdown_trigger()
        else:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
        await manager.shutdown(grace=1.0)
        connections.stop_waiting()  # a client that stopped reading must not hold the exit open

    async def watchdog() -> None:
        await manager.closing.wait()
        await trio.sleep(1.8)
        log.warning("shutdown still held open after 1.8 s; exiting now")
        os._exit(0)

    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        if hard_exit:
            nursery.start_soon(watchdog)
        await hypercorn_serve(app, hyper, connections, shutdown_trigger=until_signal, task_status=task_status)
        nursery.cancel_scope.cancel()
