"""A minimal peer for the stream benchmark: Starlette's StreamingResponse on uvicorn (h11).

    python benchmarks/peers/starlette_peer.py PORT JOBS RATE

Each of JOBS "jobs" emits RATE events per second to all its subscribers, each event encoded
once and shared, in the contract's format with a ts. Not part of the product: a yardstick.
"""

import asyncio
import socket
import contextlib
import json
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

PORT, JOBS, RATE = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
subscribers: dict[int, set[asyncio.Queue]] = {j: set() for j in range(JOBS)}


async def ticker(job: int) -> None:
    n = 0
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        # A fixed cadence, as the reference server's ticker: a busy loop must not stretch it.
        due = max(due + 1 / RATE, loop.time())
        await asyncio.sleep(due - loop.time())
        n += 1
        data = json.dumps({"jobId": str(job), "ts": int(time.time() * 1000), "stage": "script", "percent": 1.0},
                          separators=(",", ":"))
        encoded = f"id: {n}\nevent: step-progress\ndata: {data}\n\n".encode()
        for queue in subscribers[job]:
            queue.put_nowait(encoded)


async def events(request):
    job = int(request.path_params["job"]) % JOBS
    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)

    async def body():
        subscribers[job].add(queue)
        try:
            yield b"retry: 1000\n\n"
            while True:
                yield await queue.get()
        finally:
            subscribers[job].discard(queue)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@contextlib.asynccontextmanager
async def lifespan(app):
    tasks = [asyncio.get_running_loop().create_task(ticker(j)) for j in range(JOBS)]
    yield
    for task in tasks:
        task.cancel()


app = Starlette(routes=[Route("/jobs/{job}/events", events)], lifespan=lifespan)

if __name__ == "__main__":
    # Listen first, then say so: a client that reads the line can connect at once.
    sock = socket.socket()
    sock.bind(("127.0.0.1", PORT))
    sock.listen(8192)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http="h11"))
    asyncio.run(server.serve(sockets=[sock]))
