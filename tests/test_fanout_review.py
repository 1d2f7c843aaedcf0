"""Review of the Fanout task, offer_many and batched accepts: interleavings that could lose, repeat
or reorder an event, or leave a subscriber hanging, driven through the real stream route."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from conftest import start_in_process
from reference_server import _eventlog
from reference_server._config import ServerConfig
from reference_server._eventlog import EventLog, Fanout
from reference_server._stream import EventStreamRoute


class Conn:
    """One subscriber's connection as both of its write paths see it: the route's ASGI ``send``
    and the BodyWriter face the live delivery writes through. What the client received is
    ``out`` (up to a disconnect); a write that waits holds the connection (not ``ready``)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.out = bytearray()
        self.arrivals: list[tuple[float, int]] = []  # (when, len(out) after) for each write
        self.busy = False
        self.gone = False
        self.disconnected = trio.Event()

    def ready(self) -> bool:
        return not self.busy

    def write_now(self, data: bytes) -> bytes:
        assert not self.busy, "written while another write was under way"
        if self.gone:
            return data
        taken = len(data) if self.rng.random() < 0.85 else self.rng.randrange(0, len(data) + 1)
        self._received(data[:taken])
        return data[taken:]

    async def _waiting_write(self, data: bytes) -> None:
        self.busy = True
        try:
            await trio.sleep(self.rng.choice([0, 0, 0.001, 0.02]))
            if not self.gone:
                self._received(data)
        finally:
            self.busy = False

    def _received(self, data: bytes) -> None:
        self.out += data
        self.arrivals.append((trio.current_time(), len(self.out)))

    def arrived(self) -> dict[int, float]:
        """When each complete event arrived, by id."""
        when: dict[int, float] = {}
        offset, writes = 0, iter(self.arrivals)
        at, upto = 0.0, -1
        for block in bytes(self.out).split(b"\n\n")[:-1]:
            offset += len(block) + 2
            while upto < offset:
                at, upto = next(writes)
            for line in block.split(b"\n"):
                if line.startswith(b"id: "):
                    when[int(line[4:])] = at
        return when

    async def send_rest(self, rest: bytes) -> None:
        await self._waiting_write(rest)

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            await self._waiting_write(message["body"])

    async def receive(self) -> dict:
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    def disconnect(self) -> None:
        self.gone = True
        self.disconnected.set()


def complete_ids(data: bytes) -> list[int]:
    """Ids of the complete events in ``data`` (an incomplete last one is dropped, as a client does)."""
    ids = []
    for block in data.split(b"\n\n")[:-1]:
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                ids.append(int(line[4:]))
    return ids


def make_route(keepalive: float) -> tuple[EventStreamRoute, dict]:
    conns: dict[str, Conn] = {}
    config = ServerConfig(keepalive_seconds=keepalive, max_write_bytes=700)
    manager = SimpleNamespace(config=config, jobs={})
    connections = SimpleNamespace(for_scope=lambda scope: conns[scope["client"]])
    return EventStreamRoute(None, manager, connections), conns


async def _random_run(seed: int, logs_count: int = 3, subscribers: int = 24, events: int = 40) -> None:
    rng = random.Random(seed)
    fanout = Fanout(budget=0.0)  # a checkpoint every 16 listeners
    logs = [EventLog(fanout=fanout) for _ in range(logs_count)]
    keepalive = rng.choice([0.005, 0.05, 5.0, 5.0])
    route, conns = make_route(keepalive=keepalive)
    appended: dict[tuple[int, int], float] = {}  # (log, id) -> when
    problems: list[str] = []
    finished: list[tuple[int, int]] = []

    async def job(n: int, log: EventLog) -> None:
        for _ in range(events):
            await trio.sleep(rng.choice([0, 0, 0.001, 0.003, 0.01]))
            for _ in range(rng.choice([1, 1, 1, 3])):  # bursts: several events per turn
                appended[n, log.append("e", {"pad": "x" * rng.randrange(0, 200)})] = trio.current_time()
        await trio.sleep(rng.choice([0, 0.001]))
        appended[n, log.append("end", {}, terminal=True)] = trio.current_time()

    async def subscriber(n: int, index: int, log: EventLog) -> None:
        last_id = None if rng.random() < 0.5 else 0
        got = 0
        for attempt in range(200):
            conn = Conn(random.Random(rng.random()))
            name = f"{n}-{index}-{attempt}"
            conns[name] = conn
            ended = False
            opened = trio.current_time()
            async with trio.open_nursery() as nursery:
                if rng.random() < 0.4:
                    async def cut() -> None:
                        await trio.sleep(rng.choice([0, 0.001, 0.004, 0.02]))
                        conn.disconnect()
                    nursery.start_soon(cut)
                await route._stream(SimpleNamespace(log=log), last_id, False, conn.receive, conn.send,
                                    {"client": name})
                ended = not conn.gone
                nursery.cancel_scope.cancel()
            closed_at = trio.current_time()
            ids = complete_ids(bytes(conn.out))
            start = got + 1
            if ids != list(range(start, start + len(ids))):
                problems.append(f"subscriber {n}/{index} connection {attempt} from {got}: ids {ids}")
                return
            if keepalive >= 5.0:
                # Delivery without waiting for a keep-alive timer: an event appended while this
                # connection was open (and well before it closed) arrived within 2 s (virtual), far under the 5 s timer.
                for event_id, at in conn.arrived().items():
                    born = appended[n, event_id]
                    if born >= opened and born + 2.0 <= closed_at and at - born > 2.0:
                        problems.append(f"subscriber {n}/{index}: event {event_id} {at - born:.2f} s late")
                        return
                if ended and closed_at - max(opened, appended[n, len(log.encoded)]) > 2.0:
                    problems.append(f"subscriber {n}/{index}: stream ended {closed_at - opened:.2f} s after opening")
                    return
            if ids:
                got = ids[-1]
            if ended:
                if got != len(log.encoded) or not log.closed:
                    problems.append(f"subscriber {n}/{index} ended at {got} of {len(log.encoded)}")
                finished.append((n, index))
                return
            last_id = got
            await trio.sleep(rng.choice([0, 0.001]))
        problems.append(f"subscriber {n}/{index}: too many reconnects")

    with trio.fail_after(120):  # virtual seconds: a subscriber never woken shows as this
        async with trio.open_nursery() as outer:
            outer.start_soon(fanout.run)
            async with trio.open_nursery() as nursery:
                for n, log in enumerate(logs):
                    for index in range(subscribers):
                        nursery.start_soon(subscriber, n, index, log)
                for log in logs:
                    nursery.start_soon(job, logs.index(log), log)
            outer.cancel_scope.cancel()
    assert not problems, problems[:5]
    assert len(finished) == logs_count * subscribers


@pytest.mark.parametrize("seed_block", range(4))
async def test_random_interleavings_deliver_every_event_once_in_order(seed_block, autojump_clock, monkeypatch):
    """Appends in bursts, subscribers that come, go and come back with Last-Event-ID, clients
    that take only part of a write, keep-alive timers firing, three logs in one Fanout, the
    listener count crossing INLINE_LISTENERS both ways, runs split by MAX_JOINED: every
    subscriber gets every event exactly once, in order, and its stream ends after the terminal
    event."""
    monkeypatch.setattr(_eventlog, "INLINE_LISTENERS", 12)
    monkeypatch.setattr(_eventlog, "MAX_JOINED", 400)
    for seed in range(seed_block * 10, seed_block * 10 + 10):
        await _random_run(seed)


async def test_at_shutdown_fanout_subscribers_get_the_terminal_event_and_the_listener_closes(monkeypatch, tmp_path):
    """In-process server, every job's fan-out on the Fanout task (INLINE_LISTENERS 1): a stop while
    the job runs ends every stream with its terminal event, ids 1..n once each; the server returns
    promptly (the Fanout task ends with the job manager's nursery) and its listening socket is
    closed (a new connection is refused)."""
    import socket

    import httpx


    monkeypatch.setattr(_eventlog, "INLINE_LISTENERS", 1)
    runs: list[int] = []  # events per Fanout turn
    original_offer = Fanout._offer

    async def counting_offer(self, log: EventLog) -> None:
        runs.append(len(log.encoded) - log.offered)
        await original_offer(self, log)

    monkeypatch.setattr(Fanout, "_offer", counting_offer)
    config = ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path, keepalive_seconds=5.0,
                          time_scale=0.1, max_concurrent_jobs=2, progress_interval=0.02)
    streams = 6
    received: dict[int, bytearray] = {i: bytearray() for i in range(streams)}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            base, stop = await start_in_process(nursery, config)
            async with httpx.AsyncClient(base_url=base, timeout=20) as http:
                job = (await http.post("/api/jobs", json={"topic": "fanout", "stallSeconds": {"tts": 30}})).json()

                async def follow(i: int) -> None:
                    async with http.stream("GET", f"/api/jobs/{job['jobId']}/events") as response:
                        async for chunk in response.aiter_bytes():
                            received[i] += chunk

                async with trio.open_nursery() as readers:
                    for i in range(streams):
                        readers.start_soon(follow, i)
                    while not all(b"step-progress" in r for r in received.values()):
                        await trio.sleep(0.05)
                    await trio.sleep(0.3)  # some progress events through the Fanout
                    stopped_at = trio.current_time()
                    stop.set()
        took = trio.current_time() - stopped_at
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    for i, data in received.items():
        got = complete_ids(bytes(data))
        assert got == list(range(1, len(got) + 1)) and len(got) > 3, (i, got)
        assert b"event: job-cancelled" in data.split(b"\n\n")[-2], (i, bytes(data[-300:]))
    assert took < 2.0, took
    assert sum(runs) >= 3, runs  # the events did go the Fanout's way


class _FlakyListening:
    """A listening socket whose accept() fails with the given errnos first, then works."""

    def __init__(self, sock, errnos: list[int]) -> None:
        self.sock, self.errnos = sock, list(errnos)

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self):
        if self.errnos:
            import os
            code = self.errnos.pop(0)
            raise OSError(code, os.strerror(code))
        return self.sock.accept()


async def test_the_accept_loop_rides_out_capacity_and_per_connection_errors(caplog):
    """EMFILE (out of descriptors) waits and retries, ECONNABORTED (one connection's trouble) is
    skipped, as trio's serve_listeners did; the queued connection is then served. Any other
    accept error ends the loop with that error."""
    import errno
    import socket

    from reference_server._serving import _accept_batches

    listening = socket.create_server(("127.0.0.1", 0), backlog=8)
    listening.setblocking(False)
    client = socket.create_connection(listening.getsockname(), timeout=5)
    served: list[trio.SocketStream] = []

    class Nursery:
        def start_soon(self, fn, handler, stream) -> None:
            served.append(stream)

    try:
        flaky = _FlakyListening(listening, [errno.ECONNABORTED, errno.EMFILE, errno.ECONNABORTED])
        started = trio.current_time()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_accept_batches, flaky, None, Nursery())
                while not served:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert len(served) == 1 and trio.current_time() - started >= 0.1
        assert any("accept failed" in r.getMessage() for r in caplog.records)
        another = socket.create_connection(listening.getsockname(), timeout=5)  # readable again
        with pytest.raises(OSError) as raised:
            with trio.fail_after(5):
                await _accept_batches(_FlakyListening(listening, [errno.EBADF]), None, Nursery())
        assert raised.value.errno == errno.EBADF
        another.close()
    finally:
        for stream in served:
            await stream.aclose()
        client.close()
        listening.close()


async def test_a_restored_log_offers_its_first_new_event_in_append():
    """A log read back with history (Job.restore) counts its history as offered: the first event
    after a restart goes to a caught-up listener in append, not to the Fanout's queue (whose task
    never runs here), and nobody is offered the history again."""
    fanout = Fanout()
    history = [("e", f"id: {i}\nevent: e\ndata: {{}}\n\n".encode()) for i in range(1, 6)]
    log = EventLog(history=history, fanout=fanout)
    heard: list[bytes] = []
    log.listen(heard.append)
    assert log.append("error", {}) == 6
    assert heard == [log.encoded[5]] and log.offered == 6 and not fanout._due
