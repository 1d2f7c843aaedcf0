"""A minimal implementation of the contract on another stack (Starlette on uvicorn, asyncio),
written the way a new user of the harness might: to show the harness judges behaviour, not
the reference server's quirks. It shares no code with reference_server.

    python examples/starlette_server.py [PORT]      (needs starlette, uvicorn, imageio-ffmpeg)

Stages are timed, not real work, except render: one real ffmpeg run that makes the MP4.
"""

from __future__ import annotations

import asyncio
import socket
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STAGES = ["script", "tts", "visuals", "compose", "render"]
RANGES = {"script": (0, 15), "tts": (15, 35), "visuals": (35, 65), "compose": (65, 85), "render": (85, 100)}
KEEPALIVE, RETRY_MS, TICK, STAGE_DEFAULT, CAPACITY = 1.0, 200, 0.04, 0.3, 6
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
jobs: dict[str, "Job"] = {}
capacity = asyncio.Semaphore(CAPACITY)
DATA = tempfile.mkdtemp(prefix="starlette-sse-")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": str(status), "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json")


class Job:
    def __init__(self, body: dict) -> None:
        self.id = secrets.token_urlsafe(16)
        self.body = body
        self.events: list[bytes] = []
        self.changed = asyncio.Event()  # set, then replaced, at every event
        self.status, self.stage, self.percent, self.stage_percent = "queued", None, 0.0, 0.0
        self.created = now_iso()
        self.error = None
        self.artifact: str | None = None
        self.task: asyncio.Task | None = None
        self.workdir = os.path.join(DATA, self.id)

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed", "canceled")

    def emit(self, type_: str, **data) -> None:
        data = {"jobId": self.id, "correlationId": self.id[:8], "ts": int(time.time() * 1000), **data}
        self.events.append(f"id: {len(self.events) + 1}\nevent: {type_}\ndata: {json.dumps(data)}\n\n".encode())
        self.changed.set()
        self.changed = asyncio.Event()

    def snapshot(self) -> dict:
        return {"jobId": self.id, "status": self.status, "stage": self.stage, "percent": self.percent,
                "message": "", "correlationId": self.id[:8], "createdAt": self.created, "startedAt": None,
                "completedAt": None, "canceledAt": None, "failedAt": None, "elapsedMs": 0, "etaMs": None,
                "lastEventId": len(self.events), "steps": [], "error": self.error,
                "artifacts": [{"name": "video.mp4", "url": f"/api/jobs/{self.id}/artifacts/video.mp4",
                               "sizeBytes": os.path.getsize(self.artifact), "mimeType": "video/mp4"}] if self.artifact else []}

    async def run(self) -> None:
        try:
            async with capacity:
                self.status = "running"
                self.emit("job-status", status="running", stage=None, percent=0.0, message="started")
                os.makedirs(self.workdir, exist_ok=True)
                for stage in STAGES:
                    await self.run_stage(stage)
                final = os.path.join(DATA, f"{self.id}.mp4")
                os.replace(os.path.join(self.workdir, "video.mp4"), final)
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.artifact, self.status, self.percent = final, "completed", 100.0
                self.emit("job-completed", status="completed", percent=100.0, durationMs=0,
                          artifacts=self.snapshot()["artifacts"])
        except asyncio.CancelledError:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.status = "canceled"
            self.emit("job-cancelled", status="canceled", stage=self.stage,
                      cleanup={"workdirRemoved": not os.path.exists(self.workdir), "processesKilled": True})
        except RuntimeError as exc:
            self.error = {"code": "STAGE_FAILED", "message": str(exc), "stage": self.stage, "remediation": ["retry"]}
            self.emit("error", stage=self.stage, code="STAGE_FAILED", message=str(exc))
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.status = "failed"
            self.emit("job-failed", status="failed", stage=self.stage, error=self.error,
                      cleanup={"workdirRemoved": True, "processesKilled": True})

    async def run_stage(self, stage: str) -> None:
        low, high = RANGES[stage]
        self.stage, self.stage_percent, self.percent = stage, 0.0, float(low)
        self.emit("step-status", stage=stage, status="running", percent=self.percent)
        stall = self.body.get("stallSeconds", {}).get(stage, 0)
        if stall:
            await asyncio.sleep(stall)
        if self.body.get("warnAt") == stage:
            self.emit("warning", stage=stage, code="WARN", message="as asked")
        if self.body.get("failAt") == stage:
            raise RuntimeError(f"{stage} failed as asked")
        seconds = self.body.get("stageSeconds", {}).get(stage, STAGE_DEFAULT)
        work = asyncio.get_running_loop().create_task(self.render()) if stage == "render" else None
        started = time.monotonic()
        try:
            while True:
                done = time.monotonic() - started >= seconds and (work is None or work.done())
                fraction = 1.0 if done else min(0.99, (time.monotonic() - started) / max(seconds, 0.001))
                self.stage_percent = max(self.stage_percent, round(100 * fraction, 1))
                self.percent = round(low + (high - low) * self.stage_percent / 100, 2)
                self.emit("step-progress", stage=stage, stagePercent=self.stage_percent, percent=self.percent,
                          message=stage, elapsedMs=int((time.monotonic() - started) * 1000), etaMs=0)
                if done:
                    break
                await asyncio.sleep(TICK)
            if work is not None:
                work.result()
        finally:
            if work is not None and not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        self.emit("step-status", stage=stage, status="succeeded", percent=float(high))

    async def render(self) -> None:
        import imageio_ffmpeg

        proc = await asyncio.create_subprocess_exec(
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "color=c=black:s=160x90:d=1", "-f", "lavfi", "-i", "sine=duration=1",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
            os.path.join(self.workdir, "video.mp4"), stdin=asyncio.subprocess.DEVNULL)
        try:
            if await proc.wait() != 0:
                raise RuntimeError("ffmpeg failed")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def validate(body) -> str | None:
    """The name of the first bad field, or None."""
    known = {"topic", "audience", "goal", "tone", "scenes", "stageSeconds", "stallSeconds", "failAt", "warnAt"}
    for key in body:
        if key not in known:
            return key
    if not isinstance(body.get("topic"), str) or not 1 <= len(body["topic"]) <= 200:
        return "topic"
    for key in ("audience", "goal", "tone"):
        if key in body and (not isinstance(body[key], str) or len(body[key]) > 200):
            return key
    scenes = body.get("scenes", 3)
    if not isinstance(scenes, int) or isinstance(scenes, bool) or not 1 <= scenes <= 20:
        return "scenes"
    for key in ("stageSeconds", "stallSeconds"):
        value = body.get(key, {})
        if not isinstance(value, dict) or any(
                k not in STAGES or isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 600
                for k, v in value.items()):
            return key
    for key in ("failAt", "warnAt"):
        if key in body and body[key] not in STAGES:
            return key
    return None


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": "example", "keepaliveSeconds": KEEPALIVE, "retryMs": RETRY_MS,
                         "cancelDeadlineMs": 1000})


async def create(request: Request) -> Response:
    body_bytes = await request.body()
    if len(body_bytes) > 64 * 1024:
        return problem(413, "body over 64 KiB")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return problem(415, "send application/json")
    try:
        body = json.loads(body_bytes)
    except ValueError:
        return problem(400, "malformed JSON")
    if not isinstance(body, dict):
        return problem(400, "not an object")
    bad = validate(body)
    if bad:
        return problem(422, f"invalid field {bad}")
    return accept(body)


def accept(body: dict) -> Response:
    job = Job(body)
    jobs[job.id] = job
    job.emit("job-status", status="queued", stage=None, percent=0.0, message="queued")
    job.task = asyncio.get_running_loop().create_task(job.run())
    return JSONResponse(job.snapshot(), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})


async def demo(request: Request) -> Response:
    return accept({"topic": "demo"})


def find(request: Request) -> Job:
    job = jobs.get(request.path_params["id"]) if ID.match(request.path_params["id"]) else None
    if job is None:
        raise HTTPException(404, "no such job")
    return job


async def snapshot(request: Request) -> Response:
    return JSONResponse(find(request).snapshot())


async def progress(request: Request) -> Response:
    job = find(request)
    return JSONResponse({"jobId": job.id, "status": job.status, "stage": job.stage, "percent": job.percent,
                         "stagePercent": job.stage_percent, "elapsedMs": 0, "etaMs": None, "steps": []})


async def cancel(request: Request) -> Response:
    job = find(request)
    if job.terminal:
        return problem(409, f"already {job.status}")
    if job.status != "canceling":
        job.status = "canceling"
        job.emit("job-status", status="canceling", stage=job.stage, percent=job.percent, message="canceling")
        job.task.cancel()
    return JSONResponse({"jobId": job.id, "status": "canceling", "cleanupScheduled": True}, status_code=202)


async def artifact(request: Request) -> Response:
    job = find(request)
    if request.path_params["name"] != "video.mp4" or not job.artifact:
        return problem(404, "no such artifact")
    return FileResponse(job.artifact, media_type="video/mp4")


async def queue(request: Request) -> Response:
    words = ["queued", "running", "canceling", "completed", "failed", "canceled"]
    wanted = request.query_params.get("status")
    wanted = wanted.split(",") if wanted is not None else None
    if wanted is not None and any(w not in words for w in wanted):
        return problem(400, "unknown status")
    stats = {"total": len(jobs), **{w: sum(1 for j in jobs.values() if j.status == w) for w in words}}
    listed = [{"jobId": j.id, "status": j.status} for j in jobs.values() if wanted is None or j.status in wanted]
    return JSONResponse({"jobs": listed, "stats": stats})


async def events(request: Request) -> Response:
    job = find(request)
    raw = request.headers.get("last-event-id", request.query_params.get("lastEventId"))
    last = int(raw) if raw is not None and raw.isascii() and raw.isdigit() else 0
    if job.terminal and raw is not None and last >= len(job.events):
        return Response(status_code=204)

    async def body():
        yield f"retry: {RETRY_MS}\n\n".encode()
        cursor = min(last, len(job.events))
        while True:
            if cursor < len(job.events):
                chunk = b"".join(job.events[cursor:])
                cursor = len(job.events)
                yield chunk
                continue
            if job.terminal:
                return
            # An Event, not a Condition: on Python 3.11 a Condition.wait cut by wait_for's
            # timeout can leave its lock released, and the stream dies (the suite found it).
            try:
                await asyncio.wait_for(job.changed.wait(), KEEPALIVE)
            except asyncio.TimeoutError:
                yield f": keepalive {now_iso()}\n\n".encode()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def http_error(request: Request, exc: HTTPException) -> Response:
    return problem(exc.status_code, exc.detail)


app = Starlette(
    routes=[
        Route("/api/healthz", healthz),
        Route("/api/jobs", create, methods=["POST"]),
        Route("/api/quick/demo", demo, methods=["POST"]),
        Route("/api/jobs/{id}", snapshot),
        Route("/api/jobs/{id}/events", events),
        Route("/api/jobs/{id}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{id}/artifacts/{name}", artifact),
        Route("/api/queue", queue),
        Route("/api/render/{id}/progress", progress),
    ],
    exception_handlers={HTTPException: http_error},
)

if __name__ == "__main__":
    # Listen first, then say so: a client that reads the line can connect at once.
    sock = socket.socket()
    sock.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8090))
    sock.listen(8192)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http="h11"))
    asyncio.run(server.serve(sockets=[sock]))
