"""Hold N concurrent event streams on the reference server and on a Starlette/uvicorn peer, in
one run; print deliveries/s, delivery lateness p50/p99 (receive time minus ts), server RSS and
CPU per delivered event.

    python benchmarks/streams.py [N ...] [--jobs J] [--rate R]   (default 100 1000 4000, 20 jobs,
                                                                 5 events/s each; needs '.[bench]')
    python benchmarks/streams.py --loop-trace FILE [N ...]  (the reference server's scheduler passes
                                                             to FILE.N: benchmarks/loop_passes.py)
    python benchmarks/streams.py --hostile            (slowloris, idle sockets, a 1 MiB head, stuck readers)

With --jobs 1 every stream follows one job: each event is one fan-out to all N subscribers.

While the streams are measured, a probe in its own process times what else the server must
keep answering: healthz, a job's snapshot, a job created and cancelled (reference server), and
the first bytes of a new stream (both). Lateness spread: p99/p50 and the share of deliveries
more than 5 s late (past saturation lateness should grow evenly, not starve a few), and the same
over the window's second half only ("steady"): a burst of thousands of connects leaves a backlog
that a server may still be working off when the window opens.

Lateness over deliveries cannot see a subscriber that gets nothing, so each stream is also
judged at the end of the window: how far behind it is, in seconds = the end time minus the ts
of the newest event it has received (before any, the time its response head arrived). A job
emits on a fixed cadence, so this is the events it is owed, divided by RATE (an up-to-date
stream is 0 to 1/RATE s behind). Printed: p50/p99/max over streams (dropped ones included),
how many are more than 5 s behind, and events received per stream in the window, min/p50/max.

The load client is one thread over plain non-blocking sockets and epoll (not httpx, not even
an event loop): on a 2-core machine it shares the CPU with the server, so it must cost far
less per event than the server does, or it measures itself. Every loop is bounded: WINDOW
seconds of measurement per server and size, and a deadline on every wait.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

JOBS = 20
RATE = 5.0  # events per second per job
LOOP_TRACE: str | None = None  # --loop-trace: run the reference server under benchmarks/loop_passes.py
WINDOW = 10.0
SETTLE = 1.0
ROOT = Path(__file__).resolve().parent.parent
TS = re.compile(rb'"ts":(\d+)[,}]')  # the terminator: a number cut by a read boundary is not a ts


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("listening on http://"):
            return proc, line.split(" ", 2)[2].strip()
    proc.kill()
    raise RuntimeError(f"{args[:3]} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def open_streams(port: int, paths: list[str], live_only: bool) -> dict[int, socket.socket]:
    """Connect and send every request; sockets left non-blocking. Refused ones are left out."""
    header = "Last-Event-ID: 999999999\r\n" if live_only else ""  # past the end: live events, no replay
    socks = {}
    for path in paths:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{header}\r\n".encode())
        except OSError:
            continue
        sock.setblocking(False)
        socks[sock.fileno()] = sock
    return socks


def pump(socks: dict[int, socket.socket], poller: select.epoll, until: float, on_data) -> int:
    """Read whatever arrives until ``until`` (monotonic); returns how many streams the server dropped."""
    dropped = 0
    while (left := until - time.monotonic()) > 0 and socks:
        for fd, _ in poller.poll(left):
            try:
                data = socks[fd].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                socks.pop(fd).close()
                dropped += 1
                continue
            on_data(fd, data)
    return dropped


PROBE_PERIOD = 0.1


def _ttfb(port: int, path: str) -> float:
    """Seconds from connecting to the first bytes of a new stream's response."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 999999999\r\n\r\n".encode())
        sock.recv(1)
    return time.perf_counter() - started


def probe_child(base: str, stream_path: str, job_path: str, seconds: float) -> None:
    """Run in its own process: every PROBE_PERIOD until ``seconds`` pass, time each request (ms);
    print the samples as JSON. job_path "-": a peer with only streams."""
    port = int(base.rsplit(":", 1)[1])
    samples: dict[str, list[float]] = {"healthz": [], "snapshot": [], "cancel": [], "stream-open": []}
    try:
        os.nice(-5)  # ahead of the load client for the CPU: we time the server, not our own wait for a core
    except OSError:
        pass
    print("ready", flush=True)
    sys.stdin.readline()  # go
    until = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=10) as http:
        while time.monotonic() < until:
            due = time.monotonic() + PROBE_PERIOD
            try:
                if job_path != "-":
                    for name, call in (("healthz", lambda: http.get("/api/healthz")),
                                       ("snapshot", lambda: http.get(job_path))):
                        started = time.perf_counter()
                        call().raise_for_status()
                        samples[name].append((time.perf_counter() - started) * 1000)
                    job = http.post("/api/jobs", json={"topic": "probe", "stallSeconds": {"script": 600}}).json()
                    started = time.perf_counter()
                    http.post(f"/api/jobs/{job['jobId']}/cancel").raise_for_status()
                    samples["cancel"].append((time.perf_counter() - started) * 1000)
                samples["stream-open"].append(_ttfb(port, stream_path) * 1000)
            except (httpx.HTTPError, OSError) as exc:
                samples.setdefault("errors", []).append(repr(exc)[:200])
            time.sleep(max(0.0, due - time.monotonic()))
    print(json.dumps(samples), flush=True)


def start_probe(base: str, stream_path: str, job_path: str, seconds: float) -> subprocess.Popen:
    """Started before the streams are opened (its imports out of the way); it waits for ``go``."""
    proc = subprocess.Popen([sys.executable, __file__, "--probe-child", base, stream_path, job_path, str(seconds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    proc.stdout.readline()  # ready
    return proc


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


def probe_result(proc: subprocess.Popen) -> dict:
    try:
        out = proc.stdout.read()
        proc.wait(timeout=30)
        samples = json.loads(out or b"{}")
    except (subprocess.TimeoutExpired, ValueError):
        proc.kill()
        proc.wait()
        return {}
    result = {}
    for name, values in samples.items():
        if name == "errors":
            result["probe_errors"] = len(values)
        elif values:
            values.sort()
            result[f"{name}_p50"] = statistics.median(values)
            result[f"{name}_p99"] = values[min(len(values) - 1, int(len(values) * 0.99))]
    return result


def hold_streams(port: int, paths: list[str], window: float, server_pid: int,
                 probe: tuple[str, str] | None = None) -> dict:
    prober = start_probe(f"http://127.0.0.1:{port}", paths[0], probe[1], SETTLE + window) if probe else None
    socks = open_streams(port, paths, live_only=True)
    connected = len(socks)
    poller = select.epoll()
    answered: set[int] = set()
    lateness: list[float] = []
    steady: list[float] = []  # lateness of what arrived in the window's second half
    counts = {"events": 0, "half": float("inf")}  # half: when the window's second half opens (ms)
    newest: dict[int, float] = {}  # per stream: ts (ms) of the newest event received, or when it was answered
    received = dict.fromkeys(socks, 0)  # per stream: events received in the window
    tails: dict[int, bytes] = {}  # per stream: an event cut by a read boundary, until its end arrives
    measuring = False

    def on_data(fd: int, data: bytes) -> None:
        now = time.time() * 1000
        answered.add(fd)
        newest.setdefault(fd, now)
        data = tails.pop(fd, b"") + data
        cut = data.rfind(b"\n\n") + 2
        if cut < 2:
            tails[fd] = data[-65536:]
            return
        if cut < len(data):
            data, tails[fd] = data[:cut], data[cut:][-65536:]
        matches = TS.findall(data)
        if matches:
            newest[fd] = int(matches[-1])
            if measuring:
                received[fd] += len(matches)
                counts["events"] += len(matches)
                if len(lateness) < 2_000_000:
                    lateness.extend(now - int(ts) for ts in matches)
                    if now >= counts["half"]:
                        steady.extend(now - int(ts) for ts in matches)

    try:
        for fd in socks:
            poller.register(fd, select.EPOLLIN)
        deadline = time.monotonic() + 60
        dropped = 0
        while len(answered) < len(socks) and time.monotonic() < deadline:
            dropped += pump(socks, poller, min(deadline, time.monotonic() + 0.5), on_data)
        if prober:
            go(prober)
        dropped += pump(socks, poller, time.monotonic() + SETTLE, on_data)
        measuring = True
        counts["half"] = time.time() * 1000 + window * 500
        cpu_before, client_before, started = cpu_seconds(server_pid), time.process_time(), time.monotonic()
        dropped += pump(socks, poller, started + window, on_data)
        ended = time.time() * 1000
        elapsed = time.monotonic() - started
        server_cpu = (cpu_seconds(server_pid) - cpu_before) / elapsed
        client_cpu = (time.process_time() - client_before) / elapsed
    except BaseException:
        if prober:
            prober.kill()  # it may still wait for "go"
            prober.wait()
        raise
    finally:
        for sock in socks.values():
            sock.close()
        poller.close()
    probed = probe_result(prober) if prober else {}
    lateness.sort()
    steady.sort()
    deliveries = counts["events"] / window
    p50 = statistics.median(lateness) if lateness else float("nan")
    # A stream never answered counts as behind since the window opened (a lower bound: it waited longer).
    behind = sorted((ended - newest.get(fd, ended - 1000 * window)) / 1000 for fd in received)
    per_stream = sorted(received.values())
    return {
        **probed,
        "behind_p50_s": statistics.median(behind) if behind else float("nan"),
        "behind_p99_s": behind[int(len(behind) * 0.99)] if behind else float("nan"),
        "behind_max_s": behind[-1] if behind else float("nan"),
        "behind_over_5s": sum(1 for x in behind if x > 5),
        "unanswered": sum(1 for fd in received if fd not in answered),  # not a byte, not even a response head
        "received_min_p50_max": (per_stream[0], statistics.median(per_stream), per_stream[-1]) if per_stream else (0, 0, 0),
        "client_cpu": client_cpu,
        "spread": (lateness[int(len(lateness) * 0.99)] / max(p50, 0.1)) if lateness else float("nan"),
        "over_5s": sum(1 for x in lateness if x > 5000) / len(lateness) if lateness else float("nan"),
        "steady_p50_ms": statistics.median(steady) if steady else float("nan"),
        "steady_p99_ms": steady[int(len(steady) * 0.99)] if steady else float("nan"),
        "steady_over_5s": sum(1 for x in steady if x > 5000) / len(steady) if steady else float("nan"),
        "connected": connected,
        "resets": dropped,
        "deliveries_per_s": deliveries,
        "p50_ms": statistics.median(lateness) if lateness else float("nan"),
        "p99_ms": lateness[int(len(lateness) * 0.99)] if lateness else float("nan"),
        "server_cpu": server_cpu,
        "us_per_event": 1e6 * server_cpu / deliveries if deliveries else float("nan"),
    }


def hold_idle(port: int, paths: list[str]) -> int:
    """Open idle streams (a stalled job), wait until each has its response head, then let them go."""
    socks = open_streams(port, paths, live_only=False)
    poller = select.epoll()
    answered: set[int] = set()
    try:
        for fd in socks:
            poller.register(fd, select.EPOLLIN)
        deadline = time.monotonic() + 60
        while len(answered) < len(socks) and time.monotonic() < deadline:
            pump(socks, poller, min(deadline, time.monotonic() + 0.5), lambda fd, data: answered.add(fd))
        time.sleep(1.0)
    finally:
        for sock in socks.values():
            sock.close()
        poller.close()
    return len(answered)


def reference(n: int) -> dict:
    data_dir = tempfile.mkdtemp(prefix="bench-")
    server = ([sys.executable, str(ROOT / "benchmarks" / "loop_passes.py"), f"{LOOP_TRACE}.{n}"] if LOOP_TRACE
              else [sys.executable, "-m", "reference_server"])
    proc, base = start([*server, "--port", "0", "--data-dir", data_dir,
                        "--progress-interval", str(1 / RATE), "--max-concurrent-jobs", str(JOBS),
                        "--keepalive", "10"])
    try:
        with httpx.Client(base_url=base) as http:
            # Jobs that tick at RATE for a long time: a long first stage with trivial work.
            ids = [http.post("/api/jobs", json={"topic": "bench", "stageSeconds": {"script": 600}}).json()["jobId"]
                   for _ in range(JOBS)]
            idle = http.post("/api/jobs", json={"topic": "idle", "stallSeconds": {"script": 600}}).json()["jobId"]
        port = int(base.rsplit(":", 1)[1])
        time.sleep(0.5)
        before = rss_kib(proc.pid)
        idle_opened = hold_idle(port, [f"/api/jobs/{idle}/events"] * n)
        idle_rss = (rss_kib(proc.pid) - before) / n
        result = hold_streams(port, [f"/api/jobs/{ids[i % JOBS]}/events" for i in range(n)], WINDOW, proc.pid,
                              probe=("reference", f"/api/jobs/{ids[0]}"))
        result["rss_mib"] = rss_kib(proc.pid) / 1024
        result["idle_kib_per_stream"] = idle_rss
        result["idle_connected"] = idle_opened
        return result
    finally:
        stop(proc)
        subprocess.run(["rm", "-rf", data_dir], check=False)


def peer(n: int) -> dict:
    proc, base = start([sys.executable, str(ROOT / "benchmarks" / "peers" / "starlette_peer.py"), "0", str(JOBS), str(RATE)])
    port = int(base.rsplit(":", 1)[1])
    try:
        time.sleep(0.5)
        result = hold_streams(port, [f"/jobs/{i % JOBS}/events" for i in range(n)], WINDOW, proc.pid,
                              probe=("peer", "-"))
        result["rss_mib"] = rss_kib(proc.pid) / 1024
        return result
    finally:
        stop(proc)


# -- hostile clients (--hostile) ------------------------------------------------------------------
HOSTILE_IDLE_SECONDS = 5.0  # the reference server's --idle-connection-seconds for this run (default 30)


def _connect_many(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            continue
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _until_closed(socks: list[socket.socket], limit: float) -> tuple[float, int]:
    """Seconds until the server has closed them all (or ``limit``), and how many it closed."""
    started, open_ = time.monotonic(), list(socks)
    while open_ and time.monotonic() - started < limit:
        open_ = [s for s in open_ if not _closed(s)]
        time.sleep(0.1)
    return time.monotonic() - started, len(socks) - len(open_)


def _timed_get(port: int, path: str) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        sock.recv(1)
    return (time.perf_counter() - started) * 1000


def hostile(name: str, proc: subprocess.Popen, port: int, normal_path: str) -> None:
    """Print one line per hostile-client figure for a server that is up on ``port``."""
    pid = proc.pid
    # 1. slowloris: 2000 connections sending a request head one byte per second.
    before = rss_kib(pid)
    slow = _connect_many(port, 2000)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    latencies, started, i = [], time.monotonic(), 0
    while time.monotonic() - started < 4.0:
        for sock in slow:
            try:
                sock.send(head[i:i + 1])
            except OSError:
                pass
        i += 1
        for _ in range(10):
            latencies.append(_timed_get(port, normal_path))
            time.sleep(0.1)
    latencies.sort()
    per_conn = (rss_kib(pid) - before) / max(1, len(slow))
    took, closed = _until_closed(slow, 60)
    print(f"  {name:<10} slowloris x{len(slow)}: normal requests p50/p99 {statistics.median(latencies):.1f}/"
          f"{latencies[int(len(latencies) * 0.99)]:.1f} ms; {per_conn:.1f} KiB each; {closed} closed by the "
          f"server {took + 4.0:.1f} s after opening", flush=True)
    for sock in slow:
        sock.close()
    # 2. 5000 idle TCP connections that never send a byte.
    time.sleep(0.5)
    before = rss_kib(pid)
    idle = _connect_many(port, 5000)
    time.sleep(1.0)
    per_conn = (rss_kib(pid) - before) / max(1, len(idle))
    took, closed = _until_closed(idle, 60)
    print(f"  {name:<10} idle x{len(idle)}: {per_conn:.1f} KiB each; {closed} closed by the server "
          f"{took + 1.0:.1f} s after opening; RSS after {rss_kib(pid) / 1024:.1f} MiB", flush=True)
    for sock in idle:
        sock.close()
    # 3. a request head of 1 MiB.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            sock.sendall(b"a" * (1 << 20) + b"\r\n\r\n")
        except OSError:
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
            how = "closed"
        except ConnectionResetError:
            how = "reset"
        except socket.timeout:
            how = "still open after 10 s"
    status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(nothing)"
    print(f"  {name:<10} 1 MiB request head: {status_line}, connection {how}", flush=True)


def hostile_stuck(proc: subprocess.Popen, base: str) -> None:
    """200 clients that open a live stream and stop reading: memory each, and its growth while the job emits."""
    port = int(base.rsplit(":", 1)[1])
    with httpx.Client(base_url=base) as http:
        job = http.post("/api/jobs", json={"topic": "stuck", "stageSeconds": {"script": 600}}).json()["jobId"]
    time.sleep(3.0)
    before = rss_kib(proc.pid)
    stuck = []
    for _ in range(200):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET /api/jobs/{job}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stuck.append(sock)
    time.sleep(2.0)
    at = rss_kib(proc.pid)
    time.sleep(5.0)
    later = rss_kib(proc.pid)
    latency = sorted(_timed_get(port, "/api/healthz") for _ in range(20))
    print(f"  reference  200 clients stopped reading (their job emitting {1 / 0.005:.0f} events/s): "
          f"{(at - before) / 200:.1f} KiB each once stuck, {(later - at) / 200:+.1f} KiB each over the next 5 s; "
          f"healthz p50 {statistics.median(latency):.1f} ms", flush=True)
    for sock in stuck:
        sock.close()


def run_hostile() -> None:
    print(f"hostile clients (reference: --idle-connection-seconds {HOSTILE_IDLE_SECONDS:g}; "
          "peer: uvicorn's defaults)")
    data_dir = tempfile.mkdtemp(prefix="bench-")
    proc, base = start([sys.executable, "-m", "reference_server", "--port", "0", "--data-dir", data_dir,
                        "--idle-connection-seconds", str(HOSTILE_IDLE_SECONDS), "--progress-interval", "0.005"])
    try:
        hostile("reference", proc, int(base.rsplit(":", 1)[1]), "/api/healthz")
        hostile_stuck(proc, base)
    finally:
        stop(proc)
        subprocess.run(["rm", "-rf", data_dir], check=False)
    proc, base = start([sys.executable, str(ROOT / "benchmarks" / "peers" / "starlette_peer.py"), "0", "1", "5"])
    try:
        hostile("starlette", proc, int(base.rsplit(":", 1)[1]), "/nothing-here")
    finally:
        stop(proc)


def _ms(r: dict, key: str) -> str:
    return f"{r[key + '_p50']:.1f}/{r[key + '_p99']:.1f}" if key + "_p99" in r else "-"


def main() -> None:
    global JOBS, RATE, LOOP_TRACE
    if len(sys.argv) == 6 and sys.argv[1] == "--probe-child":
        probe_child(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
        return
    if sys.argv[1:] == ["--hostile"]:
        run_hostile()
        return
    parser = argparse.ArgumentParser(description="stream benchmark: reference server against a peer")
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000, 4000])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--rate", type=float, default=RATE, help="events per second per job (2 to 20)")
    parser.add_argument("--loop-trace", metavar="FILE",
                        help="trace the reference server's scheduler passes to FILE.N (benchmarks/loop_passes.py)")
    args = parser.parse_args()
    if not 2 <= args.rate <= 20:
        parser.error("--rate must be in [2, 20] (the reference server's progress interval is at most 0.5 s)")
    sizes, JOBS, RATE, LOOP_TRACE = args.sizes, args.jobs, args.rate, args.loop_trace
    print(f"{JOBS} jobs at {RATE:g} events/s each; {WINDOW:g} s measured per run; client: one thread on epoll")
    print(f"{'streams':>7} {'server':<10} {'deliv/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU':>5} {'us/event':>8} "
          f"{'RSS MiB':>8} {'idle KiB/stream':>15}")
    for n in sizes:
        ours = reference(n)
        theirs = peer(n)
        for name, r in (("reference", ours), ("starlette", theirs)):
            idle = f"{r['idle_kib_per_stream']:.1f}" if "idle_kib_per_stream" in r else "-"
            print(f"{n:>7} {name:<10} {r['deliveries_per_s']:>9.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                  f"{r['server_cpu']:>5.2f} {r['us_per_event']:>8.1f} {r['rss_mib']:>8.1f} {idle:>15}"
                  + (f"  ({r['connected']} connected, {r['resets']} dropped)" if r['connected'] < n or r['resets'] else ""))
        for name, r in (("reference", ours), ("starlette", theirs)):
            print(f"{n:>7} {name:<10} probe ms p50/p99: healthz {_ms(r, 'healthz')}, snapshot {_ms(r, 'snapshot')}, "
                  f"cancel {_ms(r, 'cancel')}, stream open {_ms(r, 'stream-open')}"
                  + (f" ({r['probe_errors']} probe errors)" if r.get("probe_errors") else "")
                  + f"; lateness p99/p50 {r['spread']:.1f}, over 5 s {100 * r['over_5s']:.2f}%"
                  + f"; steady (second half) p50/p99 {r['steady_p50_ms']:.1f}/{r['steady_p99_ms']:.1f} ms, "
                    f"over 5 s {100 * r['steady_over_5s']:.2f}%")
        for name, r in (("reference", ours), ("starlette", theirs)):
            low, mid, high = r["received_min_p50_max"]
            print(f"{n:>7} {name:<10} behind at the window's end, s p50/p99/max: {r['behind_p50_s']:.2f}/"
                  f"{r['behind_p99_s']:.2f}/{r['behind_max_s']:.2f} (p99/p50 {r['behind_p99_s'] / max(r['behind_p50_s'], 0.01):.1f}), "
                  f"{r['behind_over_5s']} of {r['connected']} streams over 5 s ({r['unanswered']} never answered); "
                  f"events received per stream "
                  f"min/p50/max {low}/{mid:.0f}/{high} (offered {RATE * WINDOW:.0f}); load client CPU {r['client_cpu']:.2f}")
        print(f"{n:>7} ratio ref/peer: deliveries {ours['deliveries_per_s'] / max(1, theirs['deliveries_per_s']):.2f}, "
              f"p99 {ours['p99_ms'] / max(0.1, theirs['p99_ms']):.2f}, "
              f"CPU per event {ours['us_per_event'] / theirs['us_per_event']:.2f}; "
              f"offered deliveries/s {n * RATE:.0f}", flush=True)


if __name__ == "__main__":
    main()
