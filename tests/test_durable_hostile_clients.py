"""The reference server endures hostile clients: slowloris senders and idle sockets are closed after
--idle-connection-seconds without stopping normal clients, an oversized request head gets 431 and
a close, and clients that stop reading cost a bounded amount of memory each."""

import socket
import time
from pathlib import Path

import httpx
import trio

from conftest import reference_args
from harness import record

TERMINAL = {"job-completed", "job-failed", "job-cancelled"}
QUICK = {s: 0.05 for s in ("script", "tts", "visuals", "compose", "render")}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _connect(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def test_slowloris_and_idle_connections_are_closed_and_do_not_stop_a_normal_client(fresh_server):
    server = fresh_server(reference_args("--idle-connection-seconds", "2"))
    before = _rss_kib(server.process.pid)
    slow = _connect(server.port, 1000)  # headers a byte at a time
    idle = _connect(server.port, 1000)  # never a byte
    opened = time.monotonic()
    request = b"GET /api/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            job = (await http.post("/api/jobs", json={"topic": "t", "scenes": 1, "stageSeconds": QUICK})).json()
            finished: list = []

            async def trickle() -> None:
                for i in range(6):  # one byte per connection per 0.5 s: none ever completes its head
                    for sock in slow:
                        try:
                            sock.send(request[i:i + 1])
                        except OSError:
                            pass
                    await trio.sleep(0.5)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                started = time.monotonic()
                seg = await record(f"{server.base_url}/api/jobs/{job['jobId']}/events", terminal_types=TERMINAL)
                finished.append(time.monotonic() - started)
                sent = time.monotonic()
                assert (await http.get("/api/healthz")).status_code == 200
                health_ms = (time.monotonic() - sent) * 1000
            grown_kib = (_rss_kib(server.process.pid) - before) / 2000
            assert seg.events and seg.events[-1].type == "job-completed", seg.end_detail
            assert health_ms < 500, health_ms
            await trio.sleep(max(0.0, opened + 3.5 - time.monotonic()))
            closed_slow = sum(_closed_by_server(s) for s in slow)
            closed_idle = sum(_closed_by_server(s) for s in idle)
            assert closed_slow == len(slow) and closed_idle == len(idle), (closed_slow, closed_idle)
            assert grown_kib < 40, f"{grown_kib:.1f} KiB per open connection"
            assert (await http.get("/api/healthz")).status_code == 200
            print(f"\nfollowed a job in {finished[0]:.2f} s beside 2000 hostile connections "
                  f"({grown_kib:.1f} KiB each); healthz {health_ms:.1f} ms; all closed after the timeout")
    finally:
        for sock in slow + idle:
            sock.close()


async def test_a_one_mib_request_head_gets_431_and_a_close(reference_server):
    with socket.create_connection(("127.0.0.1", reference_server.port), timeout=10) as sock:
        sock.sendall(b"GET /api/healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            sock.sendall(b"a" * (1 << 20) + b"\r\n\r\n")
        except OSError:
            pass  # the server may close before taking it all: what it answered is still ours to read
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    async with httpx.AsyncClient(base_url=reference_server.base_url) as http:
        assert (await http.get("/api/healthz")).status_code == 200


async def test_clients_that_stop_reading_cost_bounded_memory(fresh_server):
    """Their memory does not grow with what the job emits while they are stuck: no queue per client."""
    server = fresh_server(reference_args("--progress-interval", "0.005"))
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        job = (await http.post("/api/jobs", json={"topic": "t", "scenes": 1,
                                                  "stageSeconds": {**QUICK, "script": 12}})).json()
        path = f"/api/jobs/{job['jobId']}/events"
        await trio.sleep(2.0)  # a history that outgrows the stuck clients' socket buffers at once
        before = _rss_kib(server.process.pid)
        emitted_at = (await http.get(f"/api/jobs/{job['jobId']}")).json()["lastEventId"]
        stuck = []
        for _ in range(200):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())  # and never read
            stuck.append(sock)
        try:
            # Until the job has emitted well over 200 KB more (~200 bytes an event), 10 s at most: a
            # fixed 5 s once emitted 199,291 bytes, 7 s 182,146, on a busy machine (3 workers).
            with trio.move_on_after(10.0):
                while (await http.get(f"/api/jobs/{job['jobId']}")).json()["lastEventId"] < emitted_at + 1500:
                    await trio.sleep(0.5)
            later = _rss_kib(server.process.pid)
            emitted_to = (await http.get(f"/api/jobs/{job['jobId']}")).json()["lastEventId"]
            whole = await record(server.base_url + path, terminal_types=TERMINAL)  # beside them, to the end
            assert whole.events[-1].type == "job-completed", whole.end_detail
            emitted = sum(len(e.raw) for e in whole.events if emitted_at < int(e.id) <= emitted_to)
            per_client = (later - before) / len(stuck)
            # Each holds one write (at most 64 KiB, framed once more by h11) and its connection; what the
            # job emitted meanwhile (more than that, for each of them) stays in the log, shared.
            assert emitted > 200_000, f"only {emitted} bytes emitted while they were stuck: proves nothing"
            assert per_client < 200, (per_client, emitted)
            print(f"\n200 clients that stopped reading: {per_client:.1f} KiB each while the job emitted "
                  f"{emitted // 1024} KiB more")
        finally:
            for sock in stuck:
                sock.close()
