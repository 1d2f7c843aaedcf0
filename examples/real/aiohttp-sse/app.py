"""Notifications on aiohttp-sse (run: python -m aiohttp.web -H 127.0.0.1 -P 8080 app:init). One
channel every reader shares, GET /notifications: a `notice` every 0.5 s with an increasing id.

Replay is ours, not the library's: aiohttp-sse hands over the Last-Event-ID header
(resp.last_event_id) and no more, so the few lines marked below keep the last 200 notices and send
a returning reader those after its id. Keep-alive is the library's: `: ping` every ping_interval
seconds (15 by default; 3 here, so that a 7.5 s watch sees two)."""

import asyncio
import collections
import json
import time

from aiohttp import web
from aiohttp_sse import sse_response

history: collections.deque[tuple[int, str]] = collections.deque(maxlen=200)  # ours: (id, data) for replay
readers: set[asyncio.Queue] = set()


async def publish_notices(app: web.Application):
    async def publish():
        for n in range(1, 1 << 62):
            await asyncio.sleep(0.5)
            notice = (n, json.dumps({"n": n, "text": f"notice {n}", "ts": int(time.time() * 1000)}))
            history.append(notice)
            for queue in readers:
                queue.put_nowait(notice)

    task = asyncio.create_task(publish())
    yield
    task.cancel()


async def notifications(request: web.Request) -> web.StreamResponse:
    queue: asyncio.Queue = asyncio.Queue()
    readers.add(queue)
    try:
        async with sse_response(request, ping_interval=3) as resp:
            last = resp.last_event_id or ""
            sent = int(last) if last.isdigit() else 0
            for n, data in list(history) if sent else ():  # ours: what the reader missed
                if n > sent:
                    await resp.send(data, id=str(n), event="notice")
                    sent = n
            while resp.is_connected():
                n, data = await queue.get()
                if n > sent:
                    await resp.send(data, id=str(n), event="notice")
                    sent = n
    finally:
        readers.discard(queue)
    return resp


def init(argv=None) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(publish_notices)
    app.router.add_get("/notifications", notifications)
    return app
