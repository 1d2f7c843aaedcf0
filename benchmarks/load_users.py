"""How many concurrent streaming users one locust worker process sustains against the reference
server: harness.load.SSEUser (Decoder + every invariant judged) against a plain httpx-sse user,
in the same run. Figures, not a test.

    python benchmarks/load_users.py [USERS ...] [--jobs J] [--progress-interval S] [--window S] [--repeat R]
    (default 500 1000 1500 2000; needs '.[load]')

For each user kind and size: a fresh reference server (progress every --progress-interval s,
jobs of 5 x --stage-seconds), one headless locust process (no --processes: it is the worker)
with USERS users fanned out over J jobs; statistics reset when all users are spawned
(--reset-stats), then --window seconds are measured. Printed: events/s delivered to the
worker, lag p50/p99 (receive time minus ts, every live event), the worker's own loop delay
p99 (SSE user only: its probe), worker CPU share and CPU µs per event, whether the worker
sustained it (own delay p99 < 250 ms, or lag p99 for the peer which has no probe, and CPU < 90%),
the machine's load average and the share of the window the worker was ready to run but waited
for a CPU (/proc/PID/schedstat): a starved worker's delays are the machine's, not its own work.
Last, the ratio of events per worker CPU second, SSE user / httpx-sse user, size by size.

The machine has two cores shared by the server, the worker and everything else running: the
figures move between runs; compare the two kinds within one run. Every process is stopped by
its pid; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = {
    "sse-harness": (ROOT / "harness" / "_locustfile.py", "--sse-subscribers", "--sse-stage-seconds",
                    ["--sse-scenes", "1", "--sse-cancel-share", "0", "--sse-cut-share", "0"]),
    "httpx-sse": (ROOT / "benchmarks" / "peers" / "httpx_sse_locustfile.py", "--peer-subscribers",
                  "--peer-stage-seconds", []),
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_seconds(pid: int) -> float:
    """Time the process spent runnable but waiting for a CPU (schedstat, all its threads' leader)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def start_server(data_dir: str, progress_interval: float, jobs: int) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "reference_server", "--port", "0", "--data-dir", data_dir, "--keepalive", "5",
            "--retry-ms", "1000", "--progress-interval", str(progress_interval),
            "--max-concurrent-jobs", str(jobs + 4)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("listening on http://"):
            return proc, line.split(" ", 2)[2].strip()
        if not line and proc.poll() is not None:
            break
    stop(proc)
    raise RuntimeError("the reference server did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rows(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def one(kind: str, users: int, args) -> dict:
    locustfile, subscribers_flag, stage_flag, extra = KINDS[kind]
    jobs = max(1, min(args.jobs, users))
    ramp = users / args.spawn_rate
    run_time = int(ramp + args.window + 3)
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        server, url = start_server(os.path.join(tmp, "data"), args.progress_interval, jobs)
        prefix = Path(tmp) / "s"
        command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users),
                   "-r", str(args.spawn_rate), "--run-time", f"{run_time}s", "--host", url, "--reset-stats",
                   "--csv", str(prefix), "--csv-full-history", "--only-summary", "--stop-timeout", "0",
                   "--loglevel", "ERROR", subscribers_flag, str(-(-users // jobs)), stage_flag,
                   str(args.stage_seconds), *extra]
        log = open(os.path.join(tmp, "worker.log"), "w+")
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        samples = []  # (epoch s, worker CPU s, worker run-queue wait s)
        deadline = time.monotonic() + run_time + 60
        try:
            while worker.poll() is None and time.monotonic() < deadline:
                try:
                    samples.append((time.time(), cpu_seconds(worker.pid), runqueue_wait_seconds(worker.pid)))
                except (OSError, IndexError):
                    pass
                time.sleep(0.5)
        finally:
            stop(worker)
            stop(server)
        log.seek(0)
        tail = log.read()[-1500:]
        log.close()
        stats = {r["Name"]: r for r in rows(prefix.with_name("s_stats.csv"))}
        failed = {}
        for r in rows(prefix.with_name("s_failures.csv")):
            failed[r["Name"]] = failed.get(r["Name"], 0) + int(r["Occurrences"])
        history = [r for r in rows(prefix.with_name("s_stats_history.csv")) if r["Name"] == "lag"]
    # The measured window: from when every user was up (plus 2 s) to the last history row.
    full = [r for r in history if int(r["User Count"]) >= users]
    if len(full) < 3 or "lag" not in stats:
        return {"kind": kind, "users": users, "error": "no steady window (users never all up, or no events)",
                "tail": tail}
    t0, t1 = float(full[1]["Timestamp"]), float(full[-1]["Timestamp"])
    n0, n1 = int(full[1]["Total Request Count"]), int(full[-1]["Total Request Count"])
    cpu = [sample for sample in samples if t0 <= sample[0] <= t1 + 1]
    if len(cpu) < 2 or t1 <= t0:
        return {"kind": kind, "users": users, "error": "window too short"}
    cpu_used = cpu[-1][1] - cpu[0][1]
    cpu_span = cpu[-1][0] - cpu[0][0]
    waited = (cpu[-1][2] - cpu[0][2]) / cpu_span  # share of the window it was ready to run but had no CPU
    events = (n1 - n0) / (t1 - t0)
    lag = stats["lag"]
    own = stats.get("own delay")
    result = {
        "kind": kind, "users": users, "events_s": events, "lag_p50": float(lag["50%"]), "lag_p99": float(lag["99%"]),
        "own_p99": float(own["99%"]) if own else None, "cpu": cpu_used / cpu_span,
        "us_per_event": cpu_used / cpu_span / events * 1e6 if events else float("nan"),
        "failures": sum(int(r["Failure Count"]) for n, r in stats.items() if n != "Aggregated"),
        "failed": ", ".join(f"{n} {c}" for n, c in sorted(failed.items())),
        "loadavg": os.getloadavg()[0],  # the machine's 1-minute load at the window's end (2 cores)
        "runqueue": waited,
    }
    delay = result["own_p99"] if result["own_p99"] is not None else result["lag_p99"]
    result["sustained"] = delay < 250 and result["cpu"] < 0.9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="locust worker capacity: SSE user against an httpx-sse user")
    parser.add_argument("users", nargs="*", type=int, default=[500, 1000, 1500, 2000])
    parser.add_argument("--jobs", type=int, default=10, help="jobs the users are fanned out over")
    parser.add_argument("--progress-interval", type=float, default=0.2, help="server: seconds between progress events")
    parser.add_argument("--stage-seconds", type=float, default=8.0)
    parser.add_argument("--spawn-rate", type=float, default=200.0)
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured once every user is up")
    parser.add_argument("--kinds", default="sse-harness,httpx-sse")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every size and kind (medians compared)")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    results: dict[tuple[str, int], list[dict]] = {}
    print("| user | users | events/s | lag p50 ms | lag p99 ms | own delay p99 ms | worker CPU | µs CPU/event | "
          "failures | sustained | load avg | waited for a CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for _ in range(args.repeat):
        for users in args.users:
            for kind in kinds:  # the two kinds alternate, so that both see the same machine
                r = one(kind, users, args)
                results.setdefault((kind, users), []).append(r)
                if "error" in r:
                    print(f"| {kind} | {users} | {r['error']} |||||||| no | | |", flush=True)
                    continue
                own = "—" if r["own_p99"] is None else f"{r['own_p99']:.0f}"
                print(f"| {kind} | {users} | {r['events_s']:.0f} | {r['lag_p50']:.0f} | {r['lag_p99']:.0f} | {own} | "
                      f"{r['cpu'] * 100:.0f}% | {r['us_per_event']:.0f} | {r['failures']}"
                      f"{' (' + r['failed'] + ')' if r['failed'] else ''} | "
                      f"{'yes' if r['sustained'] else 'no'} | {r['loadavg']:.1f} | {r['runqueue'] * 100:.0f}% |", flush=True)
    if len(kinds) == 2:
        print("\nevents per worker CPU second, sse-harness / httpx-sse (medians of the runs):")
        for users in args.users:
            a = [r["us_per_event"] for r in results.get((kinds[0], users), []) if "us_per_event" in r]
            b = [r["us_per_event"] for r in results.get((kinds[1], users), []) if "us_per_event" in r]
            if a and b:
                ma, mb = statistics.median(a), statistics.median(b)
                print(f"  {users} users: {mb / ma:.2f}x ({ma:.0f} against {mb:.0f} µs per event, {len(a)} run(s) each)")


if __name__ == "__main__":
    main()
