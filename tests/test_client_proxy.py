"""The recording client and the fault proxy against a tiny trio SSE endpoint written here."""

import functools
import time

import pytest
import trio

from harness import FaultProxy, Limits, Notice, ReconnectPolicy, follow, record, stream

EVENTS = 40


async def tiny_sse_server(stream_: trio.SocketStream) -> None:
    try:
        await _serve_events(stream_)
    except trio.BrokenResourceError:
        pass  # the client (or the proxy's cut) went away


async def _serve_events(stream_: trio.SocketStream, interval: float = 0.02, total: int = EVENTS) -> None:
    """HTTP/1.1, one response per connection: `retry`, then events id > Last-Event-ID, then close."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream_.receive_some(4096)
        if not chunk:
            return
        request += chunk
    last = 0
    for line in request.decode().split("\r\n"):
        if line.lower().startswith("last-event-id:"):
            last = int(line.split(":", 1)[1])
    if last >= total:
        await stream_.send_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    await stream_.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + _chunk(b"retry: 50\n\n"))
    for n in range(last + 1, total + 1):
        payload = '{"n": %d, "pad": "%s"}' % (n, "x" * 60)
        await stream_.send_all(_chunk(f"id: {n}\nevent: {'end' if n == total else 'tick'}\ndata: {payload}\n\n".encode()))
        await trio.sleep(interval)
    await stream_.send_all(b"0\r\n\r\n")  # chunked framing: a cut is told apart from the end
    await stream_.aclose()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.fixture
async def sse_port(nursery):
    listeners = await nursery.start(functools.partial(trio.serve_tcp, tiny_sse_server, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_record_one_connection(sse_port):
    seg = await record(f"http://127.0.0.1:{sse_port}/", terminal_types={"end"})
    assert seg.status == 200 and seg.end == "server-closed"
    assert [e.id for e in seg.events] == [str(i) for i in range(1, EVENTS + 1)]
    assert seg.retry_ms == 50 and seg.header("content-type") == "text/event-stream"
    assert len(seg.chunks) >= EVENTS // 2  # written one event at a time, timed one read at a time


async def test_cut_mid_event_discards_partial_and_resumes(sse_port):
    async with FaultProxy(sse_port) as proxy:
        proxy.cut_after(500)  # inside an event, not on a boundary
        trace = await follow(proxy.url("/"), terminal_types={"end"}, policy=ReconnectPolicy(max_attempts=3))
    first, second = trace.segments[0], trace.segments[1]
    assert first.end == "reset"
    assert any(isinstance(r, Notice) and r.kind == "partial-event-discarded" for r in first.records)
    assert second.last_event_id_sent == first.events[-1].id  # the previous complete event's id
    assert [e.id for e in trace.events] == [str(i) for i in range(1, EVENTS + 1)]


async def test_cut_now_and_rst(sse_port):
    async with FaultProxy(sse_port) as proxy:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _later(0.2, lambda: proxy.cut(rst=True)))
            trace = await follow(proxy.url("/"), terminal_types={"end"}, policy=ReconnectPolicy(max_attempts=3))
    assert trace.segments[0].end == "reset" and len(trace.segments) >= 2
    assert [e.id for e in trace.events] == [str(i) for i in range(1, EVENTS + 1)]


async def _later(delay, action):
    await trio.sleep(delay)
    action()


async def test_stall_is_seen_as_silence(sse_port):
    async with FaultProxy(sse_port) as proxy:
        seen = []

        async def stall_after_the_fifth(rec) -> None:
            # After events have flowed (a stall on a timer missed a stream that started late).
            seen.append(rec)
            if len(seen) == 5:
                proxy.stall(0.6)

        seg = await record(proxy.url("/"), terminal_types={"end"}, sink=stall_after_the_fifth)
    gaps = [b[0] - a[0] for a, b in zip(seg.chunks, seg.chunks[1:])]
    assert max(gaps) >= 0.55
    assert len(seg.events) == EVENTS  # held, not lost


async def test_slice_rechunks_the_bytes(sse_port):
    async with FaultProxy(sse_port) as proxy:
        proxy.slice(7, 0.0005)
        seg = await record(proxy.url("/"), terminal_types={"end"})
    assert len(seg.events) == EVENTS
    assert max(size for _, size in seg.chunks) <= 7 * 8  # reads may merge a few slices, never a whole event


async def test_delay_and_throttle(sse_port):
    async with FaultProxy(sse_port) as proxy:
        plain = await record(f"http://127.0.0.1:{sse_port}/", terminal_types={"end"})
        proxy.delay(0.3)
        seg = await record(proxy.url("/"), terminal_types={"end"})
        assert len(seg.events) == EVENTS
        # Latency, not lower throughput: every event is late by the delay, the whole by little more.
        assert seg.events[0].arrived_at - seg.started_at >= 0.3
        span = seg.events[-1].arrived_at - seg.events[0].arrived_at
        plain_span = plain.events[-1].arrived_at - plain.events[0].arrived_at
        assert span < plain_span + 0.3
        proxy.clear()
        proxy.throttle(2000)
        started = time.monotonic()
        seg = await record(proxy.url("/"), terminal_types={"end"})
        size = sum(s for _, s in seg.chunks)
        assert time.monotonic() - started >= size / 2000 * 0.8


async def test_refuse_then_recover(sse_port):
    async with FaultProxy(sse_port) as proxy:
        proxy.refuse(0.4)
        trace = await follow(proxy.url("/"), terminal_types={"end"},
                             policy=ReconnectPolicy(max_attempts=20, delay_ms=50))
    assert trace.segments[0].end in ("reset", "connect-failed")
    assert trace.segments[-1].end == "server-closed" and len(trace.events) == EVENTS


async def test_204_stops_the_follower(sse_port):
    trace = await follow(f"http://127.0.0.1:{sse_port}/", last_event_id=str(EVENTS), terminal_types={"end"})
    assert len(trace.segments) == 1 and trace.segments[0].status == 204


async def test_read_timeout_and_total_limit(nursery):
    async def silent(stream_):
        await stream_.receive_some(4096)
        await stream_.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        await trio.sleep(10)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    seg = await record(f"http://127.0.0.1:{port}/", limits=Limits(read=0.3))
    assert seg.end == "timeout" and "no bytes" in seg.end_detail
    seg = await record(f"http://127.0.0.1:{port}/", limits=Limits(read=5, total=0.3))
    assert seg.end == "timeout" and "total" in seg.end_detail


async def test_flood_is_bounded(nursery):
    async def flood(stream_):
        await stream_.receive_some(4096)
        await stream_.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        for _ in range(2000):
            await stream_.send_all(b"data: " + b"z" * 1000 + b"\n\n")

    listeners = await nursery.start(functools.partial(trio.serve_tcp, flood, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    seg = await record(f"http://127.0.0.1:{port}/", limits=Limits(max_bytes=100_000))
    assert seg.end == "overflow"


async def test_connect_failure_is_recorded():
    seg = await record("http://127.0.0.1:9/")
    assert seg.end == "connect-failed" and seg.status is None


async def test_library_stream_api(sse_port):
    seen = []
    async with stream(f"http://127.0.0.1:{sse_port}/", terminal_types={"end"}) as s:
        async for event in s:
            seen.append(event.id)
    assert seen == [str(i) for i in range(1, EVENTS + 1)]
    assert s.trace is not None and len(s.trace.segments) == 1


def test_proxy_refuses_foreign_targets():
    with pytest.raises(ValueError):
        FaultProxy(80, "10.0.0.1")


async def test_a_queued_jobs_reconnect_stays_patient(nursery):
    """The first connection brings a "queued" event and is closed; the reconnect (Last-Event-ID 1)
    brings nothing for longer than the events deadline, then the job runs: the follower waits,
    as it would have on the first connection (it gave up before: 4.3 judged a queued job's events
    as never sent)."""
    async def queued_then_runs(stream_):
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream_.receive_some(4096)
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n")
        await stream_.send_all(head)
        if b"last-event-id" not in request.lower():
            await stream_.send_all(_chunk(b'id: 1\nevent: status\ndata: {"status": "queued"}\n\n') + b"0\r\n\r\n")
            return
        await trio.sleep(0.6)  # past the events deadline below, still queued
        await stream_.send_all(_chunk(b'id: 2\nevent: end\ndata: {"status": "done"}\n\n') + b"0\r\n\r\n")

    listeners = await nursery.start(functools.partial(trio.serve_tcp, queued_then_runs, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    trace = await follow(f"http://127.0.0.1:{port}/", limits=Limits(between_events=0.3), terminal_types={"end"},
                         policy=ReconnectPolicy(max_attempts=2, delay_ms=10),
                         patient=lambda e: '"queued"' in e.data)
    assert [e.id for e in trace.events] == ["1", "2"] and not trace.gave_up


async def test_the_cases_client_never_reuses_a_connection_a_server_may_be_closing():
    """A server closes keep-alive connections idle past its own timeout (uvicorn's 5 s, gunicorn's
    2 s); a POST sent on one as it closes gets no answer, which read as the target's transport fault
    (10.7 on the Starlette example). The run's client opens a fresh connection after 1 s idle."""
    from harness._runner import POOL_IDLE_SECONDS, cases_client

    connections = []

    async def serve(stream: trio.SocketStream) -> None:
        connections.append(stream)
        buffer = b""
        while True:
            with trio.move_on_after(3.0) as idle:  # this server's own keep-alive timeout
                chunk = await stream.receive_some(4096)
            if idle.cancelled_caught or not chunk:
                break
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
        async with cases_client() as http:
            assert (await http.get(url)).text == "ok"
            assert (await http.get(url)).text == "ok"  # at once: the pooled connection is reused
            assert len(connections) == 1
            await trio.sleep(POOL_IDLE_SECONDS + 0.3)
            assert (await http.post(url, content=b"{}")).text == "ok"
        assert len(connections) == 2, "an idle pooled connection was reused"
        nursery.cancel_scope.cancel()
