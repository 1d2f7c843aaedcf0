"""Load on locust: the incremental judge, `sse-harness load` against the reference server and broken
ones, a user's own locustfile in locust's distributed mode. Short runs, few users: locust and the
servers are separate processes on 127.0.0.1, stopped by pid."""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, RunningServer
from harness import load_profile
from harness._invariants import Breach, Excused, StreamJudge, TerminalWatch, judge_timing, silence_breach
from harness._load_report import read_result, to_markdown
from harness._load_starvation import TargetProcess, WorkerStarvation
from tracebuild import JOB, ev, good_job, segment

# Chromium, locust and whole-suite runs take a core each: one at a time, on one xdist worker.
pytestmark = pytest.mark.xdist_group("busy")

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
    assert silence_breach(1.2, 0.0, interval=1.0, tolerance=0.25) is None
    # Our own delay, not the server's: excused, not a breach.
    assert silence_breach(1.3, 0.0, interval=1.0, tolerance=0.25, own=0.2) == Excused("keep-alive silence", 1.3, 1.25,
                                                                                      0.2)


# -- timings judged against the machine's starvation (pure, hand-built samples) ------------------------

def starved(*, target: TargetProcess | None, own=(), waits=(), pressure=()) -> WorkerStarvation:
    samples = WorkerStarvation(probe_period=0.05)
    if target is not None:
        samples.observe(target)
    samples.delays.extend(own)
    samples.target_waits.extend(waits)
    samples.pressure.extend(pressure)
    return samples


SAME_HOST = TargetProcess(4242, "pid 4242", remote=False)


def silence_verdict(samples: WorkerStarvation, began: float, ended: float, limit: float = 1.25):
    explained = samples.explained(began, ended, now=ended)
    return silence_breach(ended - began, began, interval=limit, tolerance=0.0, own=explained.total,
                          starvation=explained.describe()), explained


def test_a_silence_the_target_waiting_for_a_core_explains_is_excused():
    """A 2.0 s silence against a 1.25 s limit: the worker's loop stalled 0.3 s at its end and the
    same-host target waited 0.5 s for a core in it; together they explain the 0.75 s excess."""
    waits = [(9.9, 1.0), (10.5, 1.2), (11.0, 1.5), (11.5, 1.6), (12.1, 1.7)]
    own = [(10.05, 0.0), (12.0, 0.3)]
    verdict, explained = silence_verdict(starved(target=SAME_HOST, own=own, waits=waits), 10.0, 12.0)
    assert explained.own == pytest.approx(0.3) and explained.process == pytest.approx(0.7)  # widened to samples
    assert isinstance(verdict, Excused) and verdict.kind == "keep-alive silence"
    # Our own delay alone (what the load tool subtracted before) does not explain it.
    assert isinstance(silence_breach(2.0, 10.0, interval=1.25, tolerance=0.0, own=0.3), Breach)


def test_a_silence_starvation_cannot_explain_stays_the_targets_breach():
    """Same silence, the target hardly waited (asleep, not starved): a breach, the figures beside it."""
    waits = [(9.9, 1.0), (11.0, 1.05), (12.1, 1.1)]
    verdict, explained = silence_verdict(starved(target=SAME_HOST, own=[(12.0, 0.3)], waits=waits), 10.0, 12.0)
    assert isinstance(verdict, Breach) and verdict.kind == "keep-alive silence"
    assert "the target waited 100 ms for a core" in verdict.observed and "not enough to explain it" in verdict.observed
    assert explained.total == pytest.approx(0.4)


def test_what_stands_for_the_target_where_its_pid_is_unknown_or_it_is_remote():
    pressure = [(9.9, 5.0), (12.1, 5.9)]  # the machine: 0.9 s of CPU pressure in the window
    own = [(12.0, 0.3)]
    unknown = TargetProcess(None, "pid not found", remote=False)
    verdict, explained = silence_verdict(starved(target=unknown, own=own, pressure=pressure), 10.0, 12.0)
    assert isinstance(verdict, Excused) and explained.total == pytest.approx(1.2)
    # On another host neither this machine's pressure nor any process here says anything of it.
    remote = TargetProcess(None, "not visible", remote=True)
    verdict, explained = silence_verdict(starved(target=remote, own=own, pressure=pressure), 10.0, 12.0)
    assert isinstance(verdict, Breach) and explained.total == pytest.approx(0.3)


def test_a_stall_still_going_on_counts_and_buffers_are_bounded():
    samples = starved(target=TargetProcess(None, "", remote=True))
    samples.probe_asked = 11.0  # the probe's 50 ms sleep began at 11.0 and has not woken by 12.0
    assert samples.explained(10.0, 12.0, now=12.0).own == pytest.approx(0.95)
    bounded = WorkerStarvation(probe_period=0.05, keep=10)
    bounded.delays.extend((t, 0.0) for t in range(100))
    assert len(bounded.delays) == 10
    # A window's samples are picked from the newest back (the one before it kept for the cumulative series).
    samples = starved(target=SAME_HOST, waits=[(float(t), t / 10) for t in range(1000)])
    assert samples.explained(990.0, 995.0, now=995.0).process == pytest.approx(0.5)


def test_late_close_and_cancel_are_judged_the_same_way():
    assert judge_timing("cancel", "", measured=1.4, limit=1.0, explained=0.5) == Excused("cancel", 1.4, 1.0, 0.5)
    late = judge_timing("not closed after terminal", "response ended too late after the terminal event",
                        measured=1.4, limit=1.0, explained=0.1, starvation="the harness's loop stalled 100 ms",
                        observed="1.400s")
    assert isinstance(late, Breach) and late.observed.startswith("1.400s; the harness's loop stalled 100 ms")
    assert judge_timing("cancel", "", measured=0.9, limit=1.0, explained=0.0) is None


def test_the_targets_wait_is_read_as_the_conformance_cases_read_it():
    """From /proc, this process standing for the target: a cumulative series that never drops, its
    growth logged per reading; the readings stop with the target's pid unknown."""
    samples = WorkerStarvation(probe_period=0.05)
    samples.observe(TargetProcess(os.getpid(), "this test", remote=False))
    for now in (1.0, 1.1, 1.2):
        samples.read_proc(now)
    waits = list(samples.target_waits)
    assert [t for t, _ in waits] == [1.0, 1.1, 1.2] and all(b[1] >= a[1] for a, b in zip(waits, waits[1:]))
    assert "target wait" not in samples.growth()  # the first call notes where the series is
    samples.read_proc(1.25)
    assert samples.growth()["target wait"] == pytest.approx(samples.target_waits[-1][1] - waits[-1][1])
    assert samples.observe(TargetProcess(None, "gone", remote=False))
    samples.read_proc(1.3)
    assert list(samples.target_waits) == []


def test_target_process_is_looked_up_only_on_loopback():
    assert TargetProcess.find("http://example.com:8080", 1).remote
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        found = TargetProcess.find(f"http://127.0.0.1:{port}")
    assert found.pid == os.getpid() and not found.remote


STATS_HEADER = ("Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
                "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
                "99.99%,100%")


def stats_row(kind: str, name: str, count: int, ms: float, failures: int = 0) -> str:
    return f"{kind},{name},{count},{failures},{ms},{ms},{ms},{ms},0,1,0" + f",{ms}" * 11


def test_report_counts_excused_timings_apart_from_failures(tmp_path):
    """Excused timings are neither invariant failures nor operations: exit 0, and the report says
    how many and by what; the target's wait is shown beside the worker's own delay."""
    (tmp_path / "locust_final_stats.csv").write_text("\n".join([
        STATS_HEADER, stats_row("SSE", "job", 4, 3000), stats_row("SSE", "cancel", 1, 300),
        stats_row("worker", "own delay", 100, 20), stats_row("worker", "target wait", 50, 40),
        stats_row("confounded", "keep-alive silence", 3, 1900),
        stats_row("confounded", "keep-alive silence / own delay", 3, 300),
        stats_row("confounded", "keep-alive silence / target wait", 3, 700),
        stats_row("confounded", "cancel", 1, 1400)]))
    (tmp_path / "locust_final_failures.csv").write_text("Method,Name,Error,Occurrences\n")
    result = read_result(tmp_path / "locust", target="t", profile="p", started_at="", duration_s=5.0,
                         settings={"targetPid": 4242}, max_lag_p99_ms=None, max_failure_ratio=0.0,
                         min_completed_jobs=None)
    figures = result.figures()
    assert result.exit_code == 0 and result.invariant_failures == {}
    assert figures["cancelMs"]["max"] == 300 and figures["failureRatio"] == 0.0  # the SSE row, not the excused one
    assert figures["confounded"] == {
        "cancel": {"count": 1, "maxMs": 1400.0},
        "keep-alive silence": {"count": 3, "maxMs": 1900.0, "ownDelayMaxMs": 300.0, "targetWaitMaxMs": 700.0}}
    assert figures["targetWaitMs"] == {"totalMs": 2000, "samples": 50, "p99": 40.0, "max": 40.0}
    text = to_markdown(result)
    assert "excused, not the target's: keep-alive silence 3x (longest 1900 ms; explained by own delay up to 300 ms, " \
           "the target's wait up to 700 ms)" in text
    assert "the target's run-queue wait (pid 4242): 2.0 s in all" in text


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


# -- the mix's options: declared once (harness._load_options) ---------------------------------------

# `sse-harness load`'s own flags, beside the mix: the run's shape, the target, the thresholds.
COMMAND_FLAGS = {"-h", "--help", "--target", "--profile", "--users", "--spawn-rate", "--run-time", "--processes",
                 "--web", "--report-dir", "--max-lag-p99-ms", "--max-failure-ratio", "--min-completed-jobs",
                 "--locustfile"}
LOCUST_SIDE = """
import json, sys
import harness.load  # registers the --sse-* options with locust
from harness._load_options import option_values
from locust.argument_parser import get_parser

parser = get_parser()
flags = {o: {"default": a.default, "help": a.help} for a in parser._actions for o in a.option_strings
         if o.startswith("--sse-")}
parsed = option_values(parser.parse_args(["-f", "x.py", *sys.argv[1:]]))
print(json.dumps({"flags": flags, "parsed": parsed}))
"""


def test_the_load_options_are_declared_once_for_the_command_locust_and_the_docs():
    """One table makes `sse-harness load --NAME`, locust's `--sse-NAME` and what LoadPlan reads: a
    mix option added in one place only (the command, locust or the docs) fails here."""
    import argparse

    from harness._cli import _parser
    from harness._load_cli import locust_command
    from harness._load_options import LOAD_OPTIONS

    load = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["load"]
    command = {o: a for a in load._actions for o in a.option_strings}
    mix = {o.flag: o for o in LOAD_OPTIONS if o.command}
    assert set(command) - COMMAND_FLAGS == set(mix), "an option of the mix that is not in harness._load_options"
    for flag, option in mix.items():
        assert (command[flag].default, command[flag].help) == (option.default, option.help), flag
    args = load.parse_args(["--cut-share", "0.5", "--stage-seconds", "0.3", "--scenes", "2", "--job-id", "j7",
                            "--job-timeout", "40", "--subscribers", "3"])
    forwarded = locust_command(args, "http://127.0.0.1:1", Path("/tmp/x"))
    forwarded = forwarded[forwarded.index("--only-summary") + 1:]
    done = subprocess.run([sys.executable, "-c", LOCUST_SIDE, *forwarded], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    locust = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(locust["flags"]) == {o.locust_flag for o in LOAD_OPTIONS}, "a --sse-* option declared apart"
    for option in LOAD_OPTIONS:
        assert locust["flags"][option.locust_flag] == {"default": option.default, "help": option.help}
    assert {k: v for k, v in locust["parsed"].items() if v != next(o.default for o in LOAD_OPTIONS if o.name == k)} \
        == {"cut-share": 0.5, "stage-seconds": 0.3, "scenes": 2, "job-id": "j7", "job-timeout": 40.0, "subscribers": 3}
    docs = (ROOT / "docs" / "load.md").read_text()
    for option in LOAD_OPTIONS:
        assert f"`{option.locust_flag}" in docs, f"docs/load.md does not name {option.locust_flag}"
        if option.command:
            assert f"`{option.flag}" in docs, f"docs/load.md does not name {option.flag}"


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
