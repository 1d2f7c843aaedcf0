"""Hold N concurrent event streams on the reference server and on a Starlette/uvicorn peer, in
one run; print deliveries/s, delivery lateness p50/p99 (receive time minus ts), server RSS.

    python benchmarks/streams.py [N ...]        (default 100 1000 4000; needs '.[bench]')

The load client is raw trio sockets (no httpx) so that it measures the servers, not itself.
Every loop is bounded: WINDOW seconds of measurement per server and size.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

JOBS = 20
RATE = 5.0  # events per second per job
WINDOW = 10.0
ROOT = Path(__file__).resolve().parent.parent
TS = re.compile(rb'"ts":(\d+)')


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


async def hold_streams(port: int, paths: list[str], window: float) -> dict:
    counts = {"events": 0, "connected": 0}
    lateness: list[float] = []
    measuring = trio.Event()

    async def one(path: str) -> None:
        try:
            await _one(path)
        except (trio.BrokenResourceError, OSError):
            counts["reset"] = counts.get("reset", 0) + 1  # the server dropped us: counted, not fatal

    async def _one(path: str) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            # Last-Event-ID past the end: live events only, no replay of the job's history.
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                                  f"Last-Event-ID: 999999999\r\n\r\n".encode())
            counts["connected"] += 1
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                if measuring.is_set():
                    now = time.time() * 1000
                    for match in TS.finditer(chunk):
                        counts["events"] += 1
                        if len(lateness) < 2_000_000:
                            lateness.append(now - int(match[1]))

    async with trio.open_nursery() as nursery:
        for path in paths:
            nursery.start_soon(one, path)
            await trio.sleep(0)
        with trio.move_on_after(60):
            while counts["connected"] < len(paths):
                await trio.sleep(0.1)
        await trio.sleep(1.0)  # settle
        measuring.set()
        await trio.sleep(window)
        nursery.cancel_scope.cancel()
    lateness.sort()
    return {
        "connected": counts["connected"],
        "resets": counts.get("reset", 0),
        "deliveries_per_s": counts["events"] / window,
        "p50_ms": statistics.median(lateness) if lateness else float("nan"),
        "p99_ms": lateness[int(len(lateness) * 0.99)] if lateness else float("nan"),
    }


async def reference(n: int) -> dict:
    data_dir = tempfile.mkdtemp(prefix="bench-")
    proc, base = start([sys.executable, "-m", "reference_server", "--port", "0", "--data-dir", data_dir,
                        "--progress-interval", str(1 / RATE), "--max-concurrent-jobs", str(JOBS),
                        "--keepalive", "10"])
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            # Jobs that tick at RATE for a long time: a long first stage with trivial work.
            ids = [(await http.post("/api/jobs", json={"topic": "bench", "stageSeconds": {"script": 600}})).json()["jobId"]
                   for _ in range(JOBS)]
            idle = [(await http.post("/api/jobs", json={"topic": "idle", "stallSeconds": {"script": 600}})).json()["jobId"]
                    for _ in range(1)]
        port = int(base.rsplit(":", 1)[1])
        await trio.sleep(0.5)
        before = rss_kib(proc.pid)
        idle_result = await hold_idle(port, [f"/api/jobs/{idle[0]}/events"] * n)
        idle_rss = (rss_kib(proc.pid) - before) / n
        result = await hold_streams(port, [f"/api/jobs/{ids[i % JOBS]}/events" for i in range(n)], WINDOW)
        result["rss_mib"] = rss_kib(proc.pid) / 1024
        result["idle_kib_per_stream"] = idle_rss
        result["idle_connected"] = idle_result
        return result
    finally:
        stop(proc)
        subprocess.run(["rm", "-rf", data_dir], check=False)


async def peer(n: int) -> dict:
    proc, base = start([sys.executable, str(ROOT / "benchmarks" / "peers" / "starlette_peer.py"), "0", str(JOBS), str(RATE)])
    port = int(base.rsplit(":", 1)[1])
    try:
        await trio.sleep(0.5)
        result = await hold_streams(port, [f"/jobs/{i % JOBS}/events" for i in range(n)], WINDOW)
        result["rss_mib"] = rss_kib(proc.pid) / 1024
        return result
    finally:
        stop(proc)


async def hold_idle(port: int, paths: list[str]) -> int:
    """Open idle streams (a stalled job), wait until all are open, then let them go."""
    opened = 0

    async def one(path, task_status=trio.TASK_STATUS_IGNORED):
        nonlocal opened
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await stream.receive_some(4096)
            opened += 1
        except (trio.BrokenResourceError, OSError):
            pass  # counted as not opened
        task_status.started()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(60):
            for path in paths:
                await nursery.start(one, path)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    return opened


async def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 4000]
    print(f"{JOBS} jobs at {RATE:g} events/s each; {WINDOW:g} s measured per run")
    print(f"{'streams':>7} {'server':<10} {'deliv/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8} {'idle KiB/stream':>15}")
    for n in sizes:
        ours = await reference(n)
        theirs = await peer(n)
        for name, r in (("reference", ours), ("starlette", theirs)):
            idle = f"{r['idle_kib_per_stream']:.1f}" if "idle_kib_per_stream" in r else "-"
            print(f"{n:>7} {name:<10} {r['deliveries_per_s']:>9.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                  f"{r['rss_mib']:>8.1f} {idle:>15}")
        print(f"{n:>7} ratio ref/peer: deliveries {ours['deliveries_per_s'] / max(1, theirs['deliveries_per_s']):.2f}, "
              f"p99 {ours['p99_ms'] / max(0.1, theirs['p99_ms']):.2f}, "
              f"expected deliveries/s {n * RATE:.0f}", flush=True)


if __name__ == "__main__":
    trio.run(main)
