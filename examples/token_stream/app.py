"""A minimal LLM-style token stream: POST a prompt, the answer streams back token by token on
the POST response and ends with ``data: [DONE]`` (no ids, no replay: a second POST is a new answer).

    python examples/token_stream/app.py [PORT]      (Starlette on uvicorn, 127.0.0.1)

Run the transport suite on it: sse-harness run --profile examples/token_stream/profile.toml
--target http://127.0.0.1:PORT --only 12
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

TOKEN_SECONDS = 0.04  # the pace of a quick model
MAX_TOKENS = 64


async def completion(request: Request):
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body must be JSON"}, status_code=400)
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(prompt, str) or not prompt:
        return JSONResponse({"error": "prompt: a non-empty string"}, status_code=422)
    count = min(MAX_TOKENS, int(body.get("max_tokens", 24)))
    words = (prompt.split() * count)[:count]  # the "model" echoes the prompt

    async def tokens():
        for index, word in enumerate(words):
            await asyncio.sleep(TOKEN_SECONDS)
            chunk = {"index": index, "token": word + " ", "created": round(time.time() * 1000)}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(tokens(), media_type="text/event-stream; charset=utf-8",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


app = Starlette(routes=[Route("/v1/stream", completion, methods=["POST"])])


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
