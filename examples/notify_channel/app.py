"""A minimal notification channel: one broadcast stream that every reader shares, with ids,
Last-Event-ID replay from a bounded history, keep-alive comments and a retry field.

    python examples/notify_channel/app.py [PORT]      (Starlette on uvicorn, 127.0.0.1)

Notifications come in bursts (one every 0.2 s for 2 s, then 2.5 s of quiet), so that a reader
sees both events and the keep-alives that cover the quiet.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

KEEPALIVE_SECONDS, RETRY_MS = 1.0, 1000
HISTORY = collections.deque(maxlen=1000)  # (id, encoded event): what a Last-Event-ID can resume from
subscribers: set[asyncio.Queue] = set()


def encode(number: int) -> str:
    data = {"n": number, "text": f"notification {number}"}
    return f"id: {number}\nevent: notification\ndata: {json.dumps(data)}\n\n"


async def publish() -> None:
    number = 0
    while True:
        for _ in range(10):
            number += 1
            message = encode(number)
            HISTORY.append((number, message))
            for queue in list(subscribers):
                try:
                    queue.put_nowait(message)
                except asyncio.QueueFull:  # a reader that stopped reading: let it go
                    subscribers.discard(queue)
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)


async def notifications(request: Request):
    raw = request.headers.get("last-event-id", "")
    last = int(raw) if raw.isdigit() else None
    # Subscribe and read the history in one step (no await between): nothing is missed or doubled.
    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
    subscribers.add(queue)
    backlog = [message for number, message in HISTORY if last is not None and number > last]

    async def stream():
        try:
            yield f"retry: {RETRY_MS}\n\n"
            for message in backlog:
                yield message
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
        finally:
            subscribers.discard(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@contextlib.asynccontextmanager
async def lifespan(app):
    task = asyncio.create_task(publish())
    yield
    task.cancel()


app = Starlette(routes=[Route("/notifications", notifications)], lifespan=lifespan)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8091
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
