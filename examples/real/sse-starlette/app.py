"""A job API on sse-starlette (run: uvicorn app:app). POST /jobs starts a job; GET /jobs/{id}/events
streams its progress, one event per step with an id, and ends with a `done` event.

Resuming is ours, not the library's: sse-starlette passes the request through and gives no replay,
so the few lines marked below read Last-Event-ID and skip the steps the reader already has. A job's
steps happen at fixed times after it started, so a resumed reader gets the same bytes as the first.
Keep-alive is the library's: a comment every 15 s (EventSourceResponse's default ping)."""

import asyncio
import itertools
import json
import time

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

STEPS, STEP_SECONDS = 12, 0.2
started: dict[str, float] = {}  # job id -> wall time it started
job_ids = itertools.count(1)


async def create_job(request: Request) -> JSONResponse:
    job_id = str(next(job_ids))
    started[job_id] = time.time()
    return JSONResponse({"id": job_id}, status_code=201)


async def job_events(request: Request):
    job_id = request.path_params["job_id"]
    if job_id not in started:
        return JSONResponse({"error": "no such job"}, status_code=404)
    last = request.headers.get("last-event-id", "")  # ours: resume after the reader's last step
    first = int(last) + 1 if last.isdigit() else 1

    async def steps():
        for step in range(first, STEPS + 1):
            at = started[job_id] + step * STEP_SECONDS
            await asyncio.sleep(max(0.0, at - time.time()))
            data = {"job": job_id, "percent": step * 100 // STEPS, "ts": int(at * 1000)}
            yield ServerSentEvent(json.dumps(data), event="done" if step == STEPS else "progress", id=str(step))

    return EventSourceResponse(steps())


app = Starlette(routes=[Route("/jobs", create_job, methods=["POST"]),
                        Route("/jobs/{job_id}/events", job_events)])
