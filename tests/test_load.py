"""Load on locust: the incremental judge, `sse-harness load` against the reference server and broken
ones, a user's own locustfile in locust's distributed mode. Short runs, few users: locust and the
servers are separate processes on 127.0.0.1, stopped by pid."""

from __future__ import annotations

import concurrent.futures
import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, RunningServer
from harness import load_profile
from harness._invariants import StreamJudge, TerminalWatch, silence_breach
from harness._load_report import read_result
from tracebuild import JOB, ev, good_job, segment

# Chromium, locust and whole-suite runs take a core each: one at a time, on one xdist worker.
pytestmark = pytest.mark.xdist_group("heavy")

PROFILE = load_profile()
CLI = [sys.executable, "-c", "import sys; from harness._cli import main; sys.exit(main(sys.argv[1:]))", "load"]
QUICK_JOBS = ["--stage-seconds", "0.2", "--scenes", "1", "--cancel-share", "0", "--cut-share", "0"]


def judged(blocks: list[bytes], job: str = JOB) -> list[str]:
    judge = StreamJudge(PROFILE, job)
    kinds = []
    for event in segment([(i * 0.1, b) for i, b in enumerate(blocks)]).events:
        kinds += [b.kind for b in judge.see(event, json.loads(event.data))]
    return kinds


# -- the incremental judge (pure) ------------------------------------------------------------------

def test_judge_passes_a_correct_job_and_names_each_breakage():
    job = good_job()
    assert judged(job) == []
    assert judged(job[:5] + job[6:]) == ["id gap"]
    # A replay from the start after a cut: one "id repeat", the replayed events not judged again.
    assert judged(job[:8] + job[:8] + job[8:]) == ["id repeat"]
    other = job[6].replace(f'"{JOB}"'.encode(), b'"job2"')
    assert judged(job[:6] + [other] + job[6:]) == ["other job's event"]
    assert judged(job + [ev(len(job) + 1, "warning", stage="render", code="c", message="m")]) == ["event after terminal"]
    backwards = ev(8, "step-progress", stage="script", stagePercent=0, percent=20, message="m", elapsedMs=1, etaMs=1)
    assert "stage backwards" in judged(job[:7] + [backwards])
    ahead = ev(8, "step-progress", stage="tts", stagePercent=50, percent=30, message="m", elapsedMs=1, etaMs=1)
    regress = ev(9, "step-progress", stage="tts", stagePercent=60, percent=16, message="m", elapsedMs=1, etaMs=1)
    assert judged(job[:7] + [ahead, regress]) == ["percent regress"]


def test_terminal_watch_and_silence():
    watch = TerminalWatch(PROFILE.terminal_events)
    assert [b.kind for b in watch.end(server_closed=True, ended_at=1.0, close_within=1.0)] == ["no terminal event"]
    for event in segment([(0.0, b) for b in good_job()]).events:
        watch.see(event)
    assert watch.end(server_closed=True, ended_at=0.5, close_within=1.0) == []
    assert [b.kind for b in watch.end(server_closed=True, ended_at=1.5, close_within=1.0)] == ["not closed after terminal"]
    assert [b.kind for b in watch.end(server_closed=False, ended_at=1.0, close_within=1.0)] == ["not closed after terminal"]
    assert silence_breach(1.3, 0.0, interval=1.0, tolerance=0.25).kind == "keep-alive silence"
    assert silence_breach(1.3, 0.0, interval=1.0, tolerance=0.25, own=0.2) is None  # our own delay, not the server's


def test_harness_imports_without_locust():
    code = ("import sys; sys.modules['locust'] = sys.modules['gevent'] = None\n"
            "import harness, harness._invariants, harness._load_cli, harness._load_report, scenarios.checks\n"
            "from harness._cli import main; sys.exit(main(['load', '--profile', '/nonexistent.toml']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "locust is not installed" in done.stdout


def test_bad_input_is_exit_2(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[paths]\nnope = 1\n")
    assert subprocess.run([*CLI, "--profile", str(bad)], cwd=tmp_path, capture_output=True, timeout=60).returncode == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once closed
    done = subprocess.run([*CLI, "--target", f"http://127.0.0.1:{closed}", "--report-dir", str(tmp_path / "r")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unreachable" in done.stdout


# -- runs ---------------------------------------------------------------------------------------------

def stats(prefix: Path) -> dict[str, dict]:
    """The end state harness.load writes as locust quits (locust's own files lag by up to 1 s)."""
    with open(f"{prefix}_final_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def failures(prefix: Path) -> dict[str, int]:
    with open(f"{prefix}_final_failures.csv", newline="") as f:
        return {row["Name"]: int(row["Occurrences"]) for row in csv.DictReader(f)}


def test_reference_server_every_request_type_no_failure(tmp_path):
    """The embedded reference server: every SSE request type with plausible values, thresholds met
    (exit 0), and the same figures missing a threshold give exit 1."""
    report = tmp_path / "report"
    done = subprocess.run([*CLI, "--users", "4", "--spawn-rate", "10", "--run-time", "4s", "--subscribers", "2",
                           "--cancel-share", "1", "--cut-share", "1", "--cut-within", "0.4",
                           "--stage-seconds", "0.3", "--scenes", "1", "--report-dir", str(report),
                           "--max-lag-p99-ms", "2000", "--max-failure-ratio", "0", "--min-completed-jobs", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = stats(report / "locust")
    for name in ("create", "connect", "first event", "lag", "gap", "job", "reconnect", "cancel request", "cancel",
                 "own delay"):
        assert name in rows and int(rows[name]["Request Count"]) > 0, (name, sorted(rows))
    assert failures(report / "locust") == {}
    assert 0 <= float(rows["lag"]["50%"]) < 1000
    assert float(rows["gap"]["50%"]) < 1000
    assert float(rows["reconnect"]["50%"]) >= 150  # resumes wait the server's retry (200 ms) as EventSource does
    assert float(rows["job"]["Average Content Size"]) > 1000  # the job's stream bytes
    assert float(rows["cancel"]["Max Response Time"]) <= 1000  # the reference's cancel deadline
    summary = json.loads((report / "load.json").read_text())
    assert summary["exitCode"] == 0 and all(t["met"] for t in summary["thresholds"])
    for name in ("report.md", "report.html", "junit.xml", "locust.html", "locust_stats.csv", "locust_failures.csv",
                 "locust_stats_history.csv"):
        assert (report / name).stat().st_size > 0
    assert "lag p99 over time" in (report / "report.html").read_text()
    # The thresholds flip the exit code: the same figures against limits they miss.
    missed = read_result(report / "locust", target="t", profile="p", started_at="", duration_s=4, settings={},
                         max_lag_p99_ms=0.0, max_failure_ratio=None, min_completed_jobs=10_000)
    assert missed.exit_code == 1 and [t.met for t in missed.thresholds] == [False, False]


BROKEN = {  # fault: (the failure's name, what the mix needs to meet the fault)
    "id-skip": ("id gap", []),
    "cross-job-leak": ("other job's event", []),
    "stream-open-after-terminal": ("not closed after terminal", []),
    "keepalive-slow": ("keep-alive silence", ["--stall-seconds", "1.8"]),
    "lei-ignored": ("id repeat", ["--cut-share", "1", "--cut-within", "0.3"]),
}


def test_broken_servers_fail_by_name(tmp_path):
    """Each broken server (run side by side) fails the load run (exit 1) under the right name."""
    servers, runs = {}, {}
    try:
        with concurrent.futures.ThreadPoolExecutor(len(BROKEN)) as pool:  # started side by side, too
            starting = {fault: pool.submit(RunningServer, [
                sys.executable, "tests/variants/server.py", fault, "--port", "0", "--data-dir", "{data_dir}",
                "--keepalive", "1", "--time-scale", "0.25", "--retry-ms", "200", "--diagnostics"]) for fault in BROKEN}
            for fault, future in starting.items():
                servers[fault] = future.result()
        for fault, (_, mix) in BROKEN.items():
            runs[fault] = subprocess.Popen(
                [*CLI, "--target", servers[fault].base_url, "--users", "2", "--spawn-rate", "10", "--run-time", "2s",
                 *QUICK_JOBS, *mix, "--report-dir", str(tmp_path / fault), "--", "--stop-timeout", "20"],
                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for fault, (name, _) in BROKEN.items():
            output, _ = runs[fault].communicate(timeout=90)
            found = failures(tmp_path / fault / "locust")
            assert runs[fault].returncode == 1 and name in found, (fault, found, output[-6000:])
            assert json.loads((tmp_path / fault / "load.json").read_text())["invariantFailures"][name] >= 1
    finally:
        for process in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for server in servers.values():
            server.stop()


OUTSIDE_LOCUSTFILE = '''
import os

from harness.load import SSEUser


class MyFollowers(SSEUser):
    def on_start(self):
        self.environment.events.request.fire(request_type="pid", name=f"process {os.getpid()}", response_time=0,
                                             response_length=0, exception=None, context={})
'''


def test_own_locustfile_outside_the_repo_in_distributed_mode(tmp_path, reference_server):
    """A user's locustfile (outside the repo) imports SSEUser; locust's master and two workers on
    loopback: the master's statistics hold the SSE request types, from both workers."""
    (tmp_path / "locustfile.py").write_text(OUTSIDE_LOCUSTFILE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    locust = [sys.executable, "-m", "locust", "-f", "locustfile.py"]
    master = subprocess.Popen(
        [*locust, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--expect-workers", "2",
         "--headless", "-u", "4", "-r", "10", "--run-time", "6s", "--host", reference_server.base_url, "--csv", "dist",
         "--only-summary", "--stop-timeout", "0", "--sse-stage-seconds", "0.2", "--sse-scenes", "1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = [subprocess.Popen([*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        output, _ = master.communicate(timeout=60)
        for worker in workers:
            worker.wait(30)
    finally:
        for process in (master, *workers):
            if process.poll() is None:
                process.kill()
                process.wait()
    rows = stats(tmp_path / "dist")
    assert len([n for n, r in rows.items() if r["Type"] == "pid"]) == 2, output[-2000:]
    for name in ("connect", "first event", "lag", "gap", "job"):
        assert int(rows[name]["Request Count"]) > 0, (name, output[-2000:])
    assert failures(tmp_path / "dist") == {}
