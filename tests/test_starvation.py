"""Timing verdicts against the machine's measured starvation, on injected samples (no real hogs):
a breach that starvation explains is confounded, tried again (bounded), then `error`; one it
cannot explain is the target's `fail` at once."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import trio

from harness import Severity, Starvation, load_profile
from harness._context import Context
from harness._outcomes import Judge, Outcome
from harness._registry import Case, Registry
from harness._run_case import run_case
from harness._starvation import (ProcessSeries, StarvationMonitor, find_listening_pid, machine_pressure_seconds,
                                 process_wait_seconds)
from harness import checks
from tracebuild import ev, good_job, segment

PROFILE = load_profile()


def waits(*points: tuple[float, float]) -> tuple[ProcessSeries, ...]:
    return (ProcessSeries("target", "pid 1 (test)", tuple(points)),)


# -- the pure view --------------------------------------------------------------------------
def test_explained_sums_own_stall_and_the_targets_wait_in_the_window():
    starved = Starvation(own=((2.0, 0.3), (9.0, 1.0)), processes=waits((0.0, 0.0), (1.0, 0.0), (2.0, 0.5), (3.0, 0.5)))
    window = starved.explained(1.0, 2.0)
    assert window.own == pytest.approx(0.3)  # the stall at 9.0 is outside
    assert window.process == pytest.approx(0.5)
    assert window.total == pytest.approx(0.8)
    assert starved.explained(2.0, 3.0).process == pytest.approx(0.0)
    assert starved.explained(1.0, 2.0, own=False).total == pytest.approx(0.5)


def test_a_chain_of_our_own_steps_counts_as_many_of_our_stalls():
    """A read and then a request (a cancel aimed at an event) can each be held up by a stall of
    our own: two steps count the two longest stalls in the window, never more."""
    starved = Starvation(own=((1.2, 0.1), (1.5, 0.3), (1.8, 0.2), (9.0, 1.0)))
    assert starved.explained(1.0, 2.0).own == pytest.approx(0.3)
    assert starved.explained(1.0, 2.0, own_steps=2).own == pytest.approx(0.5)
    assert starved.explained(1.0, 2.0, own_steps=5).own == pytest.approx(0.6)  # the stall at 9.0 is outside
    assert starved.explained(1.0, 2.0, own=False, own_steps=2).own == 0.0


def test_a_same_host_target_not_seen_is_bounded_by_the_machines_pressure_a_remote_one_by_nothing():
    machine = ((0.0, 10.0), (1.0, 10.9), (2.0, 11.0))
    assert Starvation(machine=machine).explained(0.0, 1.0).total == pytest.approx(0.9)
    assert Starvation(machine=machine, remote=True).explained(0.0, 1.0).total == 0.0
    # Seen: its own wait is the bound, however busy the machine.
    seen = Starvation(machine=machine, processes=waits((0.0, 0.0), (1.0, 0.01)))
    assert seen.explained(0.0, 1.0).total == pytest.approx(0.01)


def test_a_window_outside_the_samples_is_not_measured():
    starved = Starvation(processes=waits((10.0, 0.0), (11.0, 1.0)))
    assert starved.explained(0.0, 1.0).process is None
    assert starved.explained(10.0, 11.0).process == pytest.approx(1.0)


def test_over_limit_names_who():
    tight = Starvation(processes=waits((0.0, 0.0), (2.0, 0.05)))
    starved = Starvation(processes=waits((0.0, 0.0), (2.0, 0.6)))
    assert checks.over_limit("late", measured=0.5, limit=1.0, explained=None, expected="", observed="") == []
    [fail] = checks.over_limit("late", measured=1.5, limit=1.0, explained=tight.explained(0, 2), expected="<= 1s",
                               observed="1.5s")
    assert fail.severity == Severity.FAIL and "waited 50 ms" in fail.observed and "not enough" in fail.observed
    [maybe] = checks.over_limit("late", measured=1.5, limit=1.0, explained=starved.explained(0, 2), expected="<= 1s",
                                observed="1.5s")
    assert maybe.severity == Severity.CONFOUNDED and "waited 600 ms" in maybe.observed


def test_lateness_net_of_starvation_in_each_events_window():
    blocks = good_job()
    # Every event arrives 0.6 s after its ts (ts of event n is 1000 + n/10 s on this clock).
    late = segment([(1000.0 + (i + 1) * 0.1 + 0.6, b) for i, b in enumerate(blocks)])
    raw = checks.check_lateness(late, p50_limit_ms=250, p95_limit_ms=1000)
    assert [f.severity for f in raw] == [Severity.FAIL]
    # The target waited for a core half of all the time: enough to explain 0.6 s late in 0.6 s? No
    # (0.3 s net late > 250 ms)...
    half = Starvation(processes=waits(*((1000.0 + t / 10, t / 20) for t in range(0, 40))))
    assert [f.severity for f in checks.check_lateness(late, p50_limit_ms=250, p95_limit_ms=1000,
                                                      starvation=half)] == [Severity.FAIL]
    # ... but waiting all of it is.
    full = Starvation(processes=waits(*((1000.0 + t / 10, t / 10) for t in range(0, 40))))
    assert [f.severity for f in checks.check_lateness(late, p50_limit_ms=250, p95_limit_ms=1000,
                                                      starvation=full)] == [Severity.CONFOUNDED]


def test_buffered_delivery_stays_the_targets_fail_on_a_busy_machine():
    blocks = good_job()
    batched = segment([(1000.0 + ((i + 1) // 10 + 1) * 1.0 + 0.02, b) for i, b in enumerate(blocks)])
    # A target that waited 10% of the time for a core: still 0.5 s+ late net of it.
    busy = Starvation(own=((1001.0, 0.05),), processes=waits(*((1000.0 + t / 10, t / 100) for t in range(0, 80))))
    found = checks.check_lateness(batched, p50_limit_ms=250, p95_limit_ms=1000, starvation=busy)
    # The median is late by far more than the starvation (a fail decides the case); the p95, just
    # over its limit, alone would have been confounded.
    assert {f.expected: f.severity for f in found} == {"p50 <= 250 ms": Severity.FAIL,
                                                       "p95 <= 1000 ms": Severity.CONFOUNDED}


def test_cadence_gap_explained_by_the_targets_wait_only():
    blocks = [ev(1, "step-status", stage="tts", status="running", percent=15), ev(2, "step-progress", stage="tts",
              stagePercent=1, percent=16, message="m", elapsedMs=1, etaMs=1),
              ev(10, "step-progress", stage="tts", stagePercent=2, percent=17, message="m", elapsedMs=1, etaMs=1)]
    seg = segment([(1000.0 + i * 0.1, b) for i, b in enumerate(blocks)])  # ts 1000.2 -> 1001.0: 0.8 s gap
    assert [f.severity for f in checks.check_cadence(seg.events, PROFILE, interval=0.5, tolerance=0.1)] == [Severity.FAIL]
    waited = Starvation(processes=waits((1000.0, 0.0), (1000.5, 0.25), (1001.1, 0.3)))
    found = checks.check_cadence(seg.events, PROFILE, interval=0.5, tolerance=0.1, starvation=waited)
    assert [f.severity for f in found] == [Severity.CONFOUNDED]
    # Our own stalls do not touch the target's ts.
    ours = Starvation(own=((1000.9, 0.5),), processes=waits((1000.0, 0.0), (1001.1, 0.0)))
    found = checks.check_cadence(seg.events, PROFILE, interval=0.5, tolerance=0.1, starvation=ours)
    assert [f.severity for f in found] == [Severity.FAIL]


def test_late_close_after_terminal():
    chunks = [(i * 0.1, b) for i, b in enumerate(good_job())]
    last = chunks[-1][0]
    seg = segment(chunks, ended_at=last + 1.5)
    [plain] = checks.check_terminal(seg, PROFILE, close_within=1.0)
    assert plain.severity == Severity.FAIL and "too late" in plain.message
    starved = Starvation(own=((last + 1.4, 0.6),))
    [maybe] = checks.check_terminal(seg, PROFILE, close_within=1.0, starvation=starved)
    assert maybe.severity == Severity.CONFOUNDED and "too late" in maybe.message
    never = segment(chunks, end="client-closed")  # not closed at all: no timing to confound
    assert checks.check_terminal(never, PROFILE, close_within=1.0, starvation=starved)[0].severity == Severity.FAIL


def test_outside_range_both_ways():
    assert checks.outside_range("d", measured=1.0, low=0.9, high=1.5, uncertainty=0.0, explained=None, expected="",
                                observed="") == []
    [short] = checks.outside_range("d", measured=0.24, low=0.9, high=1.5, uncertainty=0.772, explained=None,
                                   expected="", observed="")
    assert short.severity == Severity.CONFOUNDED
    [wrong] = checks.outside_range("d", measured=3.0, low=0.9, high=1.5, uncertainty=0.1, explained=None,
                                   expected="", observed="")
    assert wrong.severity == Severity.FAIL


# -- tried again, bounded -------------------------------------------------------------------
class _Scripted:
    """A case whose tries end as scripted: 'confounded', 'fail' or 'pass'."""

    def __init__(self, script: list[str]) -> None:
        self.script, self.tries = list(script), 0

    async def __call__(self, ctx: Context, judge: Judge) -> None:
        self.tries += 1
        await ctx.shared("recording", self._record)  # a retry must not reuse an earlier try's recording
        verdict = self.script.pop(0)
        if verdict == "confounded":
            judge.add(checks.over_limit("late", measured=2.0, limit=1.0,
                                        explained=Starvation(own=((1.0, 1.5),)).explained(0.0, 2.0),
                                        expected="<= 1s", observed="2.0s"))
        elif verdict == "fail":
            judge.fail("late", "<= 1s", "9s")

    async def _record(self) -> int:
        self.recorded = getattr(self, "recorded", 0) + 1
        return self.recorded


def _context() -> Context:
    return Context(PROFILE, None, same_host=True)


async def _run(script: list[str]) -> tuple[object, _Scripted]:
    scripted = _Scripted(script)
    registry = Registry()
    case_ = Case("99.1", "scripted", (), scripted, module="tests")
    return await run_case(case_, _context(), registry=registry, pause=0.0), scripted


async def test_a_confounded_breach_is_tried_again_and_passes():
    result, scripted = await _run(["confounded", "pass"])
    assert result.outcome == Outcome.PASS and scripted.tries == 2
    assert scripted.recorded == 2  # the second try recorded afresh
    assert [r["try"] for r in result.retries] == [1] and "explain" in result.retries[0]["observed"]


async def test_confounded_every_time_is_an_error_that_names_the_starvation_and_is_bounded():
    result, scripted = await _run(["confounded"] * 5)
    assert scripted.tries == 3
    assert result.outcome == Outcome.ERROR and result.confounded
    assert "starvation" in result.reason and "--timing-slack" in result.reason and "loop stalled 1500 ms" in result.reason
    assert len(result.retries) == 2


async def test_an_unexplained_breach_is_the_targets_fail_at_once():
    result, scripted = await _run(["fail", "pass"])
    assert result.outcome == Outcome.FAIL and scripted.tries == 1 and not result.retries
    result, scripted = await _run(["confounded", "fail", "pass"])
    assert result.outcome == Outcome.FAIL and scripted.tries == 2 and len(result.retries) == 1


# -- the monitor, on this machine -------------------------------------------------------------
def test_proc_readings_of_this_process():
    assert process_wait_seconds(os.getpid()) is not None
    assert process_wait_seconds(2 ** 22 + 7) is None  # no such pid
    if os.path.exists("/proc/pressure/cpu"):
        assert machine_pressure_seconds() is not None


async def test_the_listening_process_is_found_by_its_port():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        port = listeners[0].socket.getsockname()[1]
        assert await trio.to_thread.run_sync(find_listening_pid, port) == os.getpid()
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_the_monitor_sees_a_stall_of_its_own_loop():
    monitor = StarvationMonitor(period=0.01, proc_period=0.02)
    monitor.observe("target", lambda: [os.getpid()], "this test")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run)
        await trio.sleep(0.1)
        before = time.monotonic()
        time.sleep(0.3)  # noqa: ASYNC251 - the stall being measured
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    starved = monitor.snapshot()
    assert starved.explained(before, before + 0.3).own >= 0.25
    assert starved.series("target") is not None and len(starved.series("target").samples) >= 3
    assert starved.figures()["targetObserved"] == "this test"


# -- what the reports say -----------------------------------------------------------------------
def test_reports_show_tries_and_starvation_and_count_retried_cases():
    from harness._outcomes import CaseResult, Finding, Severity as S
    from harness._reports import summary, to_html, to_json, to_junit, to_markdown
    from harness._runner import RunReport

    earlier = ({"try": 1, "finding": "silence longer than the keep-alive interval", "expected": "<= 1.25s",
                "observed": "1.90s; the target waited 700 ms for a core: enough to explain it", "durationMs": 3100},)
    starved = {"ownStallMs": 12.0, "targetWaitMs": 700.0, "machineStallMs": 900.0, "windowMs": 1900.0,
               "explainedMs": 712.0}
    passed = CaseResult("5.1", "keep-alive", ("5",), Outcome.PASS, 3000, (), {"starvation": starved}, (),
                        retries=earlier)
    confounded = CaseResult("6.2", "cancel", ("7",), Outcome.ERROR, 2000,
                            (Finding("the job did not end within the cancel deadline", "<= 1000 ms", "1500 ms; ...",
                                     None, S.CONFOUNDED),), {"starvation": starved}, (),
                            reason="not judged: in 3 tries the machine's measured starvation explained ...",
                            retries=earlier * 2)
    plain = CaseResult("1.1", "healthz", (), Outcome.PASS, 5, (), {}, ())
    report = RunReport("http://127.0.0.1:1", "contract", "2026-12-02T00:00:00Z", 9000, (plain, passed, confounded),
                       {"timingSlack": 1.5, "starvation": {"ownStallMaxMs": 40.0, "targetWaitMs": 900.0,
                                                           "targetObserved": "pid 7 (python3)", "windowMs": 9000.0,
                                                           "machineStallMs": 3000.0}})
    assert summary(report)["retried"] == 2 and summary(report)["confounded"] == 1
    data = to_json(report)
    by_id = {c["id"]: c for c in data["cases"]}
    assert by_id["5.1"]["retries"][0]["try"] == 1 and by_id["6.2"]["confounded"] is True
    assert by_id["1.1"]["retries"] == [] and by_id["1.1"]["confounded"] is False
    md = to_markdown(report)
    assert "2 tried again" in md and "x1.5 (--timing-slack)" in md and "target waited 900 ms" in md
    assert "pass (on try 2 of 2: 1 earlier confounded)" in md and "confounded in all 3 tries" in md
    assert "| 5.1 | pass | 2 | 12 | 700 | 900 | 1900 |" in md  # the timing table
    junit = to_junit(report).decode()
    assert "tries: on try 2 of 2" in junit and "targetWaitMs" in junit
    page = to_html(report)
    assert "Timing verdicts" in page and "Tried again" in page


def test_a_groups_wait_adds_its_three_most_waiting_threads_per_interval(monkeypatch):
    import harness._starvation as starvation

    readings = iter([{1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0},
                     {1: 0.5, 2: 0.1, 3: 0.2, 4: 0.3, 5: 0.05},   # grew 0.5, 0.3, 0.2 at the top
                     {1: 0.5, 2: 0.1, 3: 0.2, 4: 0.3, 5: 0.05}])  # nobody waited
    monkeypatch.setattr(starvation, "thread_waits", lambda pid: next(readings))
    group = starvation.ProcessGroup("browser", lambda: [42], "test", keep=10)
    for t in (0.0, 0.1, 0.2):
        group.sample(t)
    assert [round(v, 6) for _, v in group.samples] == [0.0, 1.0, 1.0]  # not 1.15: every thread summed


def test_a_stream_stopped_at_its_deadline_is_the_targets_unless_starvation_explains_it():
    from harness._timing import stopped_delivering
    from harness._client import END_NO_EVENTS, END_TIMEOUT

    chunks = [(1000.0 + i * 0.1, b) for i, b in enumerate(good_job()[:5])]
    silent = dataclasses.replace(segment(chunks, end=END_NO_EVENTS, ended_at=1005.4))  # 5 s after the last event
    assert stopped_delivering(silent, None, 0.6)[0] == Severity.FAIL
    quiet = Starvation(processes=waits((1000.0, 0.0), (1006.0, 0.5)))
    assert stopped_delivering(silent, quiet, 0.6)[0] == Severity.FAIL  # 4.5 s silent net: the target's
    starved = Starvation(processes=waits((1000.0, 0.0), (1006.0, 4.6)))
    assert stopped_delivering(silent, starved, 0.6)[0] == Severity.CONFOUNDED
    # At the total time limit, still delivering: the machine taking a quarter of the window.
    limit = dataclasses.replace(segment(chunks, end=END_TIMEOUT, ended_at=1060.0),
                                end_detail="total time limit 60.0s reached")
    busy = Starvation(processes=waits((0.0, 0.0), (1061.0, 300.0)))  # the recording began at 0 here
    assert stopped_delivering(limit, busy, 0.6)[0] == Severity.CONFOUNDED
    assert stopped_delivering(limit, quiet, 0.6)[0] == Severity.FAIL


def test_a_snapshot_ahead_of_an_event_that_came_late_by_the_machines_starvation_is_confounded():
    """3.7: a snapshot answered at 2.0 s says 50 %, and the stream's 40 % event reached us only at
    2.3 s. With the target starved 0.5 s meanwhile, the event may have been sent before the answer
    (confounded, tried again); with no starvation the snapshot ran ahead of the stream (fail)."""
    from scenarios._shared import Sample
    from scenarios.lifecycle import compare_samples

    timeline = [(1.0, 30.0), (2.3, 40.0), (3.0, 60.0)]
    samples = [Sample(1.5, 2.0, {"status": "running", "percent": 50.0}, {"status": "running", "percent": 35.0})]
    quiet = Starvation(processes=waits((0.0, 0.0), (4.0, 0.0)))
    found, checked = compare_samples(timeline, samples, quiet, {"completed", "failed", "canceled"})
    assert checked == 2 and [(f.message, f.severity) for f in found] == \
        [("snapshot percent disagrees with the stream around it", Severity.FAIL)]
    starved = Starvation(processes=waits((1.4, 0.0), (2.4, 0.5)))
    found, _ = compare_samples(timeline, samples, starved, {"completed", "failed", "canceled"})
    assert [f.severity for f in found] == [Severity.CONFOUNDED]
    # Below the last event before the request: no starvation explains that.
    behind = [Sample(1.5, 2.0, {"status": "running", "percent": 20.0}, None)]
    found, _ = compare_samples(timeline, behind, starved, {"completed"})
    assert [f.severity for f in found] == [Severity.FAIL, Severity.FAIL]  # and the progress endpoint failed
