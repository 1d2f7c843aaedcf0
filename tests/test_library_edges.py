"""The library's sharp edges: a caller's exception leaves as itself, an unreachable stream is an
error, and a stream that owes events but sends only comments ends at its deadline."""

import functools
import time

import pytest
import trio

from harness import FaultProxy, Limits, ReconnectPolicy, StreamError, record, stream


async def _free_port() -> int:
    """A port where nothing listens (bound, then closed)."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


async def _serve(handler, nursery) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def _read_request(sock: trio.SocketStream) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await sock.receive_some(4096)
        if not chunk:
            return
        request += chunk


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


async def comments_only(sock: trio.SocketStream) -> None:
    """A stream that is open, sends one event, then only keep-alive comments, forever."""
    try:
        await _read_request(sock)
        await sock.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + _chunk(b"id: 1\nevent: job-status\ndata: {}\n\n"))
        for _ in range(200):
            await trio.sleep(0.05)
            await sock.send_all(_chunk(b": keepalive\n\n"))
    except trio.BrokenResourceError:
        pass


async def not_found(sock: trio.SocketStream) -> None:
    try:
        await _read_request(sock)
        await sock.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except trio.BrokenResourceError:
        pass


async def test_a_callers_exception_leaves_stream_as_itself():
    port = await _free_port()
    with pytest.raises(KeyError) as caught:
        async with stream(f"http://127.0.0.1:{port}/events", policy=ReconnectPolicy(max_attempts=50, delay_ms=10)):
            raise KeyError("mine")
    assert caught.type is KeyError and caught.value.args == ("mine",)


async def test_a_callers_exception_leaves_the_proxy_as_itself():
    port = await _free_port()
    with pytest.raises(KeyError) as caught:
        async with FaultProxy(port):
            raise KeyError("mine")
    assert caught.type is KeyError


async def test_a_callers_exception_keeps_its_own_cause():
    port = await _free_port()
    with pytest.raises(KeyError) as caught:
        async with FaultProxy(port):
            try:
                raise ValueError("first")
            except ValueError as exc:
                raise KeyError("mine") from exc
    assert isinstance(caught.value.__cause__, ValueError)


async def test_nothing_listening_raises_once_the_attempts_are_spent():
    port = await _free_port()
    with trio.fail_after(10):
        with pytest.raises(StreamError) as caught:
            async with stream(f"http://127.0.0.1:{port}/events",
                              policy=ReconnectPolicy(max_attempts=3, delay_ms=10)) as s:
                async for _ in s:
                    pass
    assert len(caught.value.trace.segments) == 3
    assert "3 connection(s)" in str(caught.value) and "connect-failed" in str(caught.value)


async def test_one_connection_to_nothing_raises_too():
    port = await _free_port()
    with pytest.raises(StreamError, match="could not connect"):
        async with stream(f"http://127.0.0.1:{port}/events", reconnect=False) as s:
            async for _ in s:
                pass


async def test_a_refusing_status_raises_with_the_status():
    async with trio.open_nursery() as nursery:
        port = await _serve(not_found, nursery)
        with pytest.raises(StreamError, match="HTTP 404"):
            async with stream(f"http://127.0.0.1:{port}/events") as s:
                async for _ in s:
                    pass
        nursery.cancel_scope.cancel()


async def test_comments_alone_do_not_hold_a_wait_for_events():
    async with trio.open_nursery() as nursery:
        port = await _serve(comments_only, nursery)
        started = time.monotonic()
        segment = await record(f"http://127.0.0.1:{port}/events", limits=Limits(read=5, between_events=0.6))
        waited = time.monotonic() - started
        nursery.cancel_scope.cancel()
    assert segment.end == "no-events", segment.end_detail
    assert "no event for 0.6s" in segment.end_detail
    assert len(segment.events) == 1 and len(segment.comments) >= 5
    assert 0.6 <= waited < 3.0


async def no_head(sock: trio.SocketStream) -> None:
    """Reads the request and never answers (a WSGI server before its first body chunk)."""
    await _read_request(sock)
    await trio.sleep(30)


async def test_a_head_limit_ends_the_wait_for_a_head_and_no_later_wait():
    async with trio.open_nursery() as nursery:
        port = await _serve(no_head, nursery)
        started = time.monotonic()
        segment = await record(f"http://127.0.0.1:{port}/events", limits=Limits(read=10, total=10, head=0.5))
        waited = time.monotonic() - started
        # Once the head came, the limit is gone: a stream silent for longer than it goes on.
        port = await _serve(comments_only, nursery)
        streamed = await record(f"http://127.0.0.1:{port}/events", limits=Limits(read=5, total=3.0, head=2.0))
        nursery.cancel_scope.cancel()
    assert (segment.end, segment.end_detail, segment.head_at) == ("timeout", "no response head within 0.5s", None)
    assert 0.5 <= waited < 3.0
    assert streamed.end == "timeout" and "total time limit" in streamed.end_detail, streamed.end_detail


async def test_following_stops_when_events_are_overdue():
    async with trio.open_nursery() as nursery:
        port = await _serve(comments_only, nursery)
        with pytest.raises(StreamError, match="no event for 0.4s"):
            async with stream(f"http://127.0.0.1:{port}/events", limits=Limits(between_events=0.4)) as s:
                async for _ in s:
                    pass
        nursery.cancel_scope.cancel()


async def test_a_callers_exception_leaves_the_other_context_managers_as_itself():
    """Every context manager of ours that runs tasks around the caller's block: the live
    recording, the embedded server process, the browser tap."""
    import sys

    import httpx

    from harness import Context, load_profile
    from harness._browser import Tap
    from harness._server_process import server_process

    port = await _free_port()
    async with httpx.AsyncClient() as http:
        ctx = Context(load_profile(base_url=f"http://127.0.0.1:{port}"), http, same_host=True)
        with pytest.raises(KeyError):
            async with ctx.live("abc"):
                raise KeyError("mine")
    script = "print('listening on http://127.0.0.1:1', flush=True); import time; time.sleep(30)"
    with trio.fail_after(20), pytest.raises(KeyError):
        async with server_process([sys.executable, "-c", script]):
            raise KeyError("mine")
    with pytest.raises(KeyError):
        async with Tap(port):
            raise KeyError("mine")
