"""An export job on Litestar's built-in SSE (run: uvicorn app:app). GET /exports/{name}/events runs
the export while the reader watches: one `progress` event per step with an id, then `complete`.

As in Litestar's docs: a route handler returns ServerSentEvent(generator). Litestar 2.x writes no
keep-alive (ServerSentEvent takes no ping interval) and does not look at Last-Event-ID: a reconnect,
even after `complete`, runs the export again from the start."""

import asyncio
import json
import time
from typing import AsyncGenerator

from litestar import Litestar, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

STEPS, STEP_SECONDS = 12, 0.2


async def export_steps(name: str) -> AsyncGenerator[ServerSentEventMessage, None]:
    for step in range(1, STEPS + 1):
        await asyncio.sleep(STEP_SECONDS)
        data = {"export": name, "percent": step * 100 // STEPS, "ts": int(time.time() * 1000)}
        yield ServerSentEventMessage(data=json.dumps(data), event="complete" if step == STEPS else "progress", id=step)


@get("/exports/{name:str}/events", sync_to_thread=False)
def export_events(name: str) -> ServerSentEvent:
    return ServerSentEvent(export_steps(name))


app = Litestar(route_handlers=[export_events])
