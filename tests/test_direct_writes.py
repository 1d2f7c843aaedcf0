"""The reference server's fast path for live events: written from the event log's append into the
kernel, the subscriber's task asleep. These tests hold it to the plain path's guarantees: every
event once and in order, the slow client handed back to a task, keep-alives on time."""

import socket

import h11
from hypercorn.events import RawData
import httpx
import pytest
import trio
import trio.testing

from conftest import start_in_process
from reference_server._config import ServerConfig
from reference_server._eventlog import EventLog
from reference_server._serving import BodyWriter
from reference_server._stream import _LiveDelivery


def ids(chunks: list[bytes]) -> list[int]:
    return [int(line[4:]) for line in b"".join(chunks).split(b"\n") if line.startswith(b"id: ")]


class FakeWriter:
    """Takes whole writes while ``room`` lasts, then a part, then nothing; can be made busy."""

    def __init__(self, room: int = 10**9) -> None:
        self.room = room
        self.busy = False
        self.taken: list[bytes] = []

    def ready(self) -> bool:
        return not self.busy

    def write_now(self, data: bytes) -> bytes:
        took = data[: max(0, self.room)]
        self.room -= len(took)
        self.taken.append(took)
        return data[len(took):]


async def test_live_events_are_written_from_append_without_waking_the_task():
    log = EventLog()
    for _ in range(3):
        log.append("e", {})
    writer = FakeWriter()
    live = _LiveDelivery(log, writer, 3, trio.current_time())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(live.run, 100.0)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(5):
                log.append("e", {})
                assert not live._wake.is_set()  # written in append itself, the task still asleep
            assert live.cursor == 8 and ids(writer.taken) == [4, 5, 6, 7, 8]
            log.append("end", {}, terminal=True)  # the last event is written, then the task wakes
    assert live.cursor == 9 and ids(writer.taken) == [4, 5, 6, 7, 8, 9]
    assert not log._listeners


async def test_a_write_the_kernel_takes_only_in_part_hands_the_rest_to_the_task():
    log = EventLog()
    writer = FakeWriter(room=300)  # the second event fits only in part
    live = _LiveDelivery(log, writer, 0, trio.current_time())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def run() -> None:
                result.append(await live.run(100.0))

            nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                log.append("e", {"pad": "x" * 150})
    rest = result[0]
    assert rest and live.cursor == 2, "the cut event counts as written; its rest is returned"
    assert writer.taken[1] + rest == log.encoded[1]
    assert len(writer.taken) == 2, "nothing more is offered once the task has the connection"
    assert not log._listeners


async def test_a_busy_connection_wakes_the_task_and_writes_nothing():
    log = EventLog()
    writer = FakeWriter()
    writer.busy = True
    live = _LiveDelivery(log, writer, 0, trio.current_time())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(live.run, 100.0)
            await trio.testing.wait_all_tasks_blocked()
            log.append("e", {})
    assert live.cursor == 0 and writer.taken == [], "the task writes it, in order, its own way"


async def test_quiet_time_counts_from_the_last_direct_write(autojump_clock):
    log = EventLog()
    writer = FakeWriter()
    live = _LiveDelivery(log, writer, 0, trio.current_time())
    started = trio.current_time()
    with trio.fail_after(60):  # virtual seconds
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def run() -> None:
                await live.run(10.0)
                done.set()

            nursery.start_soon(run)
            for _ in range(4):  # an event every 6 s: never 10 s quiet
                await trio.sleep(6)
                log.append("e", {})
                assert not done.is_set()
            await done.wait()
    assert trio.current_time() - started == pytest.approx(24 + 10)
    assert live.cursor == 4


class _LockOnly:
    """The part of our connection class a BodyWriter uses, over a plain socket pair."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.send_lock = trio.Lock()
        self.sock = sock

    def send_now(self, data: bytes) -> int:
        try:
            return self.sock._sock.send(data)
        except BlockingIOError:
            return 0

    async def protocol_send(self, event: RawData) -> None:
        data = memoryview(event.data)
        while data:
            sent = await self.sock.send(data)
            data = data[sent:]


async def test_body_writer_frames_like_h11_and_a_rest_completes_the_frame():
    ours, theirs = trio.socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n")
    assert type(connection.next_event()) is h11.Request
    head = connection.send(h11.Response(status_code=200, headers=[("content-type", "text/event-stream")]))
    writer = BodyWriter(_LockOnly(ours), connection)
    pieces = [f"id: {i}\ndata: {'x' * 500}\n\n".encode() for i in range(400)]
    received = bytearray()

    async def read_all() -> None:
        while True:
            data = await theirs.recv(65536)
            if not data:
                return
            received.extend(data)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            partial = 0
            for piece in pieces:
                assert writer.ready()
                rest = writer.write_now(piece)
                if rest:  # the kernel is full: finish this frame the slow way, as the route does
                    partial += 1
                    if partial == 1:
                        nursery.start_soon(read_all)
                    await writer.send_rest(rest)
            await writer.send_rest(connection.send(h11.EndOfMessage()))
            ours.close()
            if not partial:
                nursery.start_soon(read_all)
    assert partial >= 1, "the small send buffer must have filled at least once"
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/e", headers=[("host", "x")]))
    client.receive_data(head + bytes(received))
    body = bytearray()
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            body.extend(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            assert isinstance(event, h11.Response)
    assert bytes(body) == b"".join(pieces)


async def test_under_the_reference_server_live_events_take_the_direct_path(monkeypatch, tmp_path):
    """In-process, so that the fast path can be counted: else a silent fallback would pass all tests."""
    from reference_server import _stream

    offered: list[int] = []
    original = _LiveDelivery.offer

    def counting_offer(self, encoded: bytes) -> None:
        offered.append(1)
        original(self, encoded)

    monkeypatch.setattr(_stream._LiveDelivery, "offer", counting_offer)
    config = ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path, keepalive_seconds=5.0, retry_ms=1000,
                          time_scale=0.1, max_concurrent_jobs=2, diagnostics=False, progress_interval=0.04)
    with trio.fail_after(60):  # a whole job, real ffmpeg work included
        async with trio.open_nursery() as nursery:
            base, stop = await start_in_process(nursery, config)
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                job = (await http.post("/api/jobs", json={"topic": "direct", "stageSeconds": {"script": 1}})).json()
                received: list[bytes] = []
                async with http.stream("GET", f"/api/jobs/{job['jobId']}/events") as response:
                    async for chunk in response.aiter_bytes():
                        received.append(chunk)
            stop.set()
    got = ids(received)
    assert got == list(range(1, len(got) + 1)) and b"job-completed" in b"".join(received)
    assert len(offered) > len(got) / 2, f"only {len(offered)} of {len(got)} events went the direct way"


async def test_a_burst_of_connections_is_accepted_in_one_step():
    """Everything the kernel has queued is accepted before the accept loop yields: with one accept
    per pass of the scheduler (trio's serve_listeners), new streams waited minutes past saturation."""
    from reference_server._serving import _accept_batches

    listening = socket.create_server(("127.0.0.1", 0), backlog=64)
    listening.setblocking(False)
    clients = [socket.create_connection(listening.getsockname(), timeout=5) for _ in range(40)]
    passes = 0
    spawned: list[int] = []  # the pass in which each connection's handler was started
    streams: list[trio.SocketStream] = []

    class Recorder:
        def start_soon(self, fn, handler, stream) -> None:
            spawned.append(passes)
            streams.append(stream)

    async def count_passes() -> None:
        nonlocal passes
        while True:
            await trio.lowlevel.checkpoint()
            passes += 1

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(count_passes)
                nursery.start_soon(_accept_batches, listening, None, Recorder())
                while len(spawned) < len(clients):
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert len(set(spawned)) == 1, spawned
    finally:
        for stream in streams:
            await stream.aclose()
        for client in clients:
            client.close()
        listening.close()


async def test_a_busy_subscriber_is_never_woken_by_its_keep_alive_timer(autojump_clock):
    """Events every 0.3 s, keep-alive 1 s: the subscriber's task sleeps throughout. Its timer used
    to fire once per interval anyway (set when it began to listen), and on a busy job every
    subscriber woke at once, only to go back to sleep: 4,000 of them held the loop for 0.4 s."""
    steps = {"count": 0}
    subscriber: dict[str, object] = {}

    class CountSteps(trio.abc.Instrument):
        def before_task_step(self, task) -> None:
            if task is subscriber.get("task"):
                steps["count"] += 1

    log = EventLog()
    writer = FakeWriter()
    live = _LiveDelivery(log, writer, 0, trio.current_time())

    async def follow(task_status=trio.TASK_STATUS_IGNORED) -> None:
        subscriber["task"] = trio.lowlevel.current_task()
        task_status.started()
        await live.run(1.0)

    instrument = CountSteps()
    trio.lowlevel.add_instrument(instrument)
    try:
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                await nursery.start(follow)
                await trio.testing.wait_all_tasks_blocked()
                asleep = steps["count"]
                for _ in range(20):
                    await trio.sleep(0.3)
                    log.append("e", {})
                assert live.cursor == 20 and steps["count"] == asleep
                log.append("end", {}, terminal=True)
    finally:
        trio.lowlevel.remove_instrument(instrument)
    assert live.cursor == 21
