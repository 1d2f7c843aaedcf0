"""The reference server's own guarantees that the conformance suite does not reach:
shutdown, crash sweep, the event log's replay/live seam, validation, a client that stops reading."""

import json
import os
import signal
import socket
import time

import h11
import httpx
import pytest
import trio

from conftest import reference_args
from harness import Decoder, Event, record
from reference_server._eventlog import EventLog
from reference_server._validation import InvalidField, parse_job_request


async def test_event_log_replay_and_live_have_no_gap_or_duplicate():
    log = EventLog()
    seen: list[int] = []

    async def subscriber(start: int) -> None:
        cursor = start
        while True:
            await log.wait_beyond(cursor)
            while cursor < len(log.encoded):
                seen.append(int(log.encoded[cursor].split(b"\n", 1)[0][4:]))
                cursor += 1
                await trio.sleep(0)  # appends happen between our writes, as on a slow socket
            if log.closed and cursor >= len(log.encoded):
                return

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            log.append("e", {"n": 1})
        nursery.start_soon(subscriber, 10)
        for i in range(200):
            log.append("e", {"n": i}, terminal=(i == 199))
            if i % 7 == 0:
                await trio.sleep(0)
    assert seen == list(range(11, 251))
    with pytest.raises(RuntimeError):
        log.append("e", {})


@pytest.mark.parametrize("body,field", [
    ({}, "topic"), ({"topic": ""}, "topic"), ({"topic": "x" * 201}, "topic"), ({"topic": 1}, "topic"),
    ({"topic": "x", "scenes": 0}, "scenes"), ({"topic": "x", "scenes": True}, "scenes"),
    ({"topic": "x", "stageSeconds": {"tts": 601}}, "stageSeconds.tts"),
    ({"topic": "x", "stageSeconds": {"bogus": 1}}, "stageSeconds.bogus"),
    ({"topic": "x", "stallSeconds": {"tts": float("nan")}}, "stallSeconds.tts"),
    ({"topic": "x", "failAt": "nope"}, "failAt"), ({"topic": "x", "other": 1}, "other"),
])
def test_validation_names_the_field(body, field):
    with pytest.raises(InvalidField) as info:
        parse_job_request(body)
    assert info.value.field == field


def test_validation_accepts_the_knobs():
    request = parse_job_request({"topic": "t", "scenes": 20, "stageSeconds": {"tts": 0, "render": 600},
                                 "stallSeconds": {"script": 1.5}, "failAt": "render", "warnAt": "tts"})
    assert request.stage_seconds == {"tts": 0.0, "render": 600.0} and request.fail_at == "render"


async def test_sigterm_cancels_jobs_closes_streams_and_exits_within_2s(fresh_server):
    server = fresh_server(reference_args())
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        created = [(await http.post("/api/jobs", json={"topic": "t", "stallSeconds": {"tts": 60}})).json()
                   for _ in range(3)]
        segments = []

        async def watch(job_id):
            segments.append(await record(f"{server.base_url}/api/jobs/{job_id}/events",
                                         terminal_types={"job-cancelled"}))

        async with trio.open_nursery() as nursery:
            for job in created:
                nursery.start_soon(watch, job["jobId"])
            await trio.sleep(1.0)
            workdirs = [(await http.get(f"/api/jobs/{j['jobId']}")).json()["resources"]["workdir"] for j in created]
            sent = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            while server.process.poll() is None and time.monotonic() - sent < 5:
                await trio.sleep(0.02)
            exited_after = time.monotonic() - sent
    assert server.process.poll() is not None and exited_after < 2.0, exited_after
    assert all(s.events and s.events[-1].type == "job-cancelled" for s in segments)
    assert all(s.end == "server-closed" for s in segments)
    assert not any(os.path.exists(w) for w in workdirs)


async def test_crash_leftovers_older_than_a_day_are_swept_at_start(fresh_server, tmp_path):
    work = tmp_path / "work"
    old, new = work / "old-job", work / "new-job"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / "f").write_text("x")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    args = [a if a != "{data_dir}" else str(tmp_path) for a in reference_args()]
    fresh_server(args)
    await trio.sleep(0.5)
    assert not old.exists() and new.exists()


async def test_a_client_that_stops_reading_harms_no_one(reference_server):
    """Its own task blocks on its socket; other streams and requests go on."""
    async with httpx.AsyncClient(base_url=reference_server.base_url) as http:
        job = (await http.post("/api/jobs", json={"topic": "t", "stageSeconds": {"script": 2}})).json()
        path = f"/api/jobs/{job['jobId']}/events"
        stuck = socket.create_connection(("127.0.0.1", reference_server.port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        stuck.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())  # and never read
        try:
            started = time.monotonic()
            seg = await record(reference_server.base_url + path, terminal_types={"job-completed"})
            assert seg.events[-1].type == "job-completed"
            health = await http.get("/api/healthz")
            assert health.status_code == 200 and time.monotonic() - started < 30
        finally:
            stuck.close()


async def _finished_job_with_a_long_history(server) -> tuple[str, list]:
    """A completed job whose replay is far larger than the socket buffers of a client that
    does not read (so that the server's write to it has to wait)."""
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        job = (await http.post("/api/jobs", json={"topic": "t", "stageSeconds": {"script": 8}})).json()
    path = f"/api/jobs/{job['jobId']}/events"
    whole = await record(server.base_url + path, terminal_types={"job-completed"})
    assert whole.events[-1].type == "job-completed"
    size = sum(len(e.raw) for e in whole.events)
    assert size > 48_000, f"the history ({size} bytes) is too short to fill the buffers; the test proves nothing"
    return path, whole.events


def _client_that_does_not_read(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


async def test_a_client_that_takes_nothing_is_closed_and_loses_nothing(fresh_server):
    """A write that waits --stalled-client-seconds without progress closes the connection; the
    client reconnects with Last-Event-ID and the log gives it the rest."""
    server = fresh_server(reference_args("--stalled-client-seconds", "1"))
    path, whole = await _finished_job_with_a_long_history(server)
    stuck = _client_that_does_not_read(server.port, path)
    try:
        await trio.sleep(3.0)  # the server's write waits, then gives up after 1 s
        stuck.settimeout(5.0)
        received = bytearray()
        while True:  # what the kernel had taken before the close, then the end
            try:
                chunk = stuck.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received.extend(chunk)
    finally:
        stuck.close()
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target=path, headers=[("host", "x")]))
    connection.receive_data(bytes(received))
    decoder, events = Decoder(), []
    while (h11_event := connection.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        if isinstance(h11_event, h11.Data):
            events.extend(r for r in decoder.feed(h11_event.data, 0.0) if isinstance(r, Event))
    assert events and events[-1].type != "job-completed", "the whole history went: nothing waited, or nothing closed"
    rest = await record(server.base_url + path, last_event_id=events[-1].id, terminal_types={"job-completed"})
    assert [e.raw for e in events + rest.events] == [e.raw for e in whole]
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/api/healthz")).status_code == 200


async def test_sigterm_does_not_wait_for_a_client_that_stopped_reading(fresh_server):
    """Its waiting write is given up at shutdown: a clean exit, not the last-resort one."""
    server = fresh_server(reference_args())  # the default patience, 30 s, is far away
    path, _ = await _finished_job_with_a_long_history(server)
    stuck = _client_that_does_not_read(server.port, path)
    try:
        await trio.sleep(1.0)
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        while server.process.poll() is None and time.monotonic() - sent < 5:
            await trio.sleep(0.02)
        exited_after = time.monotonic() - sent
    finally:
        stuck.close()
    assert server.process.poll() == 0 and exited_after < 1.5, exited_after
    output = server.output_after_exit()
    assert "still held open" not in output, output[-2000:]


async def test_unknown_routes_and_methods_are_problems(reference_server):
    async with httpx.AsyncClient(base_url=reference_server.base_url) as http:
        for method, path, status in (("GET", "/nope", 404), ("DELETE", "/api/jobs", 405),
                                     ("POST", "/api/jobs/x/events", 405), ("GET", "/api/jobs/x/artifacts/video.mp4", 404)):
            reply = await http.request(method, path)
            assert reply.status_code == status, (method, path)
            assert reply.headers["content-type"] == "application/problem+json"
            assert json.loads(reply.content)["status"] == status
