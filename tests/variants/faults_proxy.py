"""Faults only a reverse proxy in between shows (family 13), loaded by server.py beside it.

    no-accel-header   the event stream is sent without ``X-Accel-Buffering: no``: a correct stream
                      that nginx with its default settings (proxy_buffering on) holds back

With any other fault name this module changes nothing.
"""

from __future__ import annotations

import sys

import reference_server._stream as stream

FAULT = sys.argv[1] if len(sys.argv) > 1 else ""
KNOWN = {"no-accel-header"}

_inner = stream.EventStreamRoute._stream


async def _stream(self, job, last_id, head_only, receive, send, scope=None):
    async def send_without_header(message):
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-accel-buffering"]
            message = {**message, "headers": headers}
        await send(message)

    return await _inner(self, job, last_id, head_only, receive, send_without_header, scope)


if FAULT in KNOWN:
    stream.EventStreamRoute._stream = _stream
