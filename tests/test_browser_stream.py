"""Family 14 (scenarios/browser_stream.py), the browser on any GET stream: its pure helpers on
hand-built records; the family in the system Chromium against the notification channel example
(broadcast, ids, replay), Litestar's export (per request, ends, a reconnect after the end runs it
again) and the reference server's job stream described as a GET stream profile (per request, ends,
204, an `error` event type); who skips and why (a POST stream, the contract profile)."""

from __future__ import annotations

import dataclasses
import shutil

import httpx
import pytest

from conftest import ROOT, example_server
from harness import End, load_profile
from harness.browser import canonical, stream_overdue
from harness._registry import load_cases
from harness._runner import run_suite
from scenarios import browser_stream as bs
from tracebuild import ev, segment

FAMILY = ["14.1", "14.2", "14.3", "14.4"]
needs_browser = pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on PATH")


def _events(chunks):
    return [canonical(e) for e in segment(chunks).events]


# -- pure -----------------------------------------------------------------------------------------
def test_same_events_in_order_each_once_without_relying_on_ids():
    ref = _events([(0.1, b"data: a\n\n" + b"data: b\n\n" + b"data: c\n\n")])
    assert bs.check_same_events(ref, ref) == []
    a, b, c = ref
    assert [f.message for f in bs.check_same_events([a, c], ref)] == ["an event the browser did not deliver"]
    assert [f.message for f in bs.check_same_events([a, b, b, c], ref)] == [
        "an event delivered more times than the other reader got it"]
    assert "out of order" in bs.check_same_events([a, c, b], ref)[0].message
    other = _events([(0.1, b"data: z\n\n")])
    assert [f.message for f in bs.check_same_events([a, b, c, *other], ref)] == [
        "an event the other reader did not get"]


def test_overlap_is_where_both_readers_were_there():
    stream = _events([(0.1, b"".join(ev(n, "x") for n in range(1, 9)))])
    browser, python = stream[2:8], stream[0:6]  # the browser joined later, the reader left sooner
    mine, theirs = bs.overlap(browser, python)
    assert [e.id for e in mine] == [e.id for e in theirs] == ["3", "4", "5", "6"]
    assert bs.overlap(stream[:2], stream[4:]) == ([], [])


def test_overdue_silence_on_an_open_connection_and_no_reconnect():
    def is_end(event):
        return event.type == "done"

    quiet = dataclasses.replace(segment([(0.5, ev(1, "x"))]), end="open")
    assert stream_overdue([quiet], 4.0, silence=5.0, reconnect_within=3.0, is_end=is_end) is None
    found = stream_overdue([quiet], 6.0, silence=5.0, reconnect_within=3.0, is_end=is_end)
    assert found.message.startswith("the browser's open stream brought no byte") and found.measured == 5.5
    kept = dataclasses.replace(segment([(0.5, ev(1, "x")), (4.0, b": keepalive\n\n")]), end="open")
    assert stream_overdue([kept], 6.0, silence=5.0, reconnect_within=3.0, is_end=is_end) is None
    cut = segment([(0.5, ev(1, "x"))], end=End.CLIENT_CLOSED, ended_at=1.0)
    assert stream_overdue([cut], 3.5, silence=5.0, reconnect_within=3.0, is_end=is_end) is None
    late = stream_overdue([cut], 4.5, silence=5.0, reconnect_within=3.0, is_end=is_end)
    assert late.message.startswith("the browser did not reconnect") and "no retry" in late.observed
    ended = segment([(0.5, ev(1, "done"))], ended_at=1.0)
    assert stream_overdue([ended], 60.0, silence=5.0, reconnect_within=3.0, is_end=is_end) is None



def test_overdue_waits_on_while_the_machines_starvation_explains_the_excess():
    """As family 10's: a deadline is extended by the starvation measured in its window (the
    target's for a silence, the browser's for a reconnect), and ends when it no longer explains it."""
    def is_end(event):
        return event.type == "done"

    asked = []

    def allowance(role, start, end):
        asked.append((role, start, end))
        return 1.0

    quiet = dataclasses.replace(segment([(0.5, ev(1, "x"))]), end="open")
    assert stream_overdue([quiet], 6.0, silence=5.0, reconnect_within=3.0, is_end=is_end,
                             allowance=allowance) is None
    assert asked == [("target", 0.5, 6.0)]
    found = stream_overdue([quiet], 7.0, silence=5.0, reconnect_within=3.0, is_end=is_end, allowance=allowance)
    assert found.role == "target" and found.measured == 6.5 and (found.start, found.end) == (0.5, 7.0)
    cut = segment([(0.5, ev(1, "x"))], end=End.CLIENT_CLOSED, ended_at=1.0)
    asked.clear()
    assert stream_overdue([cut], 4.5, silence=5.0, reconnect_within=3.0, is_end=is_end,
                             allowance=allowance) is None
    assert asked == [("browser", 1.0, 4.5)]
    late = stream_overdue([cut], 5.5, silence=5.0, reconnect_within=3.0, is_end=is_end, allowance=allowance)
    assert late.role == "browser" and late.message.startswith("the browser did not reconnect")

def test_missing_events_placed_on_the_taps_record():
    cut = segment([(0.1, ev(1, "x") + ev(2, "x"))], end=End.CLIENT_CLOSED, ended_at=1.0)
    resumed = dataclasses.replace(segment([(2.0, ev(4, "x"))]), last_event_id_sent="1", started_at=1.5)
    target, harness = bs.place_missing(["2", "3"], [cut, resumed], cut_times=[0.98])
    assert "which the harness cut" in target["2"] and "'1'" in target["2"]
    assert "none of the browser's 2 connection(s)" in target["3"] and harness == []
    uncut = dataclasses.replace(cut, end=End.SERVER_CLOSED)
    assert bs.place_missing(["2"], [uncut, resumed], cut_times=[0.98]) == ({}, ["2"])


def test_restarts_after_the_end():
    def is_end(event):
        return event.type == "done"

    run = segment([(0.1, ev(1, "x") + ev(2, "done"))])
    again = segment([(3.1, ev(1, "x") + ev(2, "done"))])
    assert bs.restarts_after_end([run, again, again], is_end) == (0, [again, again])
    assert bs.restarts_after_end([segment([(0.1, ev(1, "x"))])], is_end) == (-1, [])


# -- who runs the family ------------------------------------------------------------------------
def test_a_post_stream_and_the_contract_profile_skip_naming_why():
    cases = {c.id: c for c in load_cases() if c.id.startswith("14.")}
    assert sorted(cases) == FAMILY
    post = load_profile(ROOT / "examples" / "token_stream" / "profile.toml")
    contract = load_profile()
    get = load_profile(ROOT / "examples" / "notify_channel" / "profile.toml")
    for case in cases.values():
        assert "GET, no custom headers" in case.unmet(post)
        assert "family 10" in case.unmet(contract)
    assert [c.id for c in cases.values() if c.unmet(get)] == ["14.3"]  # a channel does not end
    assert "ends by itself" in cases["14.3"].unmet(get)


# -- in Chromium ---------------------------------------------------------------------------------
def _why(report) -> dict:
    return {r.id: (r.outcome, r.reason, [(f.message, str(f.observed)[:160]) for f in r.findings][:3])
            for r in report.results}


async def _family_14(example, base_url: str):
    """Family 14 against a served example (its folder's profile.toml)."""
    return await run_suite(load_profile(example / "profile.toml", base_url=base_url), only=["14"], parallel=8)


@needs_browser
@pytest.mark.xdist_group("heavy")
async def test_notification_channel_broadcast_in_the_browser():
    with example_server("notify_channel") as server:
        report = await _family_14(ROOT / "examples" / "notify_channel", server.base_url)
    got = {r.id: r for r in report.results}
    assert {i: r.outcome for i, r in got.items()} == {"14.1": "pass", "14.2": "pass", "14.3": "skip", "14.4": "pass"}, \
        _why(report)
    assert got["14.1"].evidence["overlap"] >= 3, got["14.1"].evidence  # compared with the Python reader
    assert got["14.2"].evidence["cuts"] >= 2 and len(got["14.2"].evidence["connections"]) >= 3, got["14.2"].evidence


@needs_browser
@pytest.mark.xdist_group("heavy")
async def test_litestar_export_restarts_forever_in_the_browser():
    pytest.importorskip("litestar")
    import serving

    with serving.example("litestar") as server:
        report = await _family_14(serving.REAL / "litestar", server.base_url)
    got = {r.id: r for r in report.results}
    assert {i: r.outcome for i, r in got.items()} == {"14.1": "pass", "14.2": "skip", "14.3": "fail", "14.4": "pass"}, \
        _why(report)
    assert "replay" in got["14.2"].reason
    assert got["14.1"].evidence["compared"].startswith("per request")
    restart = got["14.3"].findings[0]
    assert "restarted the stream" in restart.message and got["14.3"].evidence["restarts"] >= 1, _why(report)


# The reference server's job as a GET stream profile: a fixed job path (no set-up), ends, ids,
# replay, 204 after the end; the job fails at its last stage, so its stream has an `error` event.
JOB_PROFILE = """
[stream]
path = "/api/jobs/{job}/events"
[meaning]
end_types = ["job-completed", "job-failed", "job-cancelled"]
[claims]
ids = true
replay = true
finished = "204"
"""


@needs_browser
@pytest.mark.xdist_group("heavy")
async def test_a_job_stream_as_a_get_profile_in_the_browser(reference_server, tmp_path):
    # Long enough that a cut lands mid-stream even when Chromium starts slowly (at 0.9 s a stage, a
    # busy start once found the job ended: its replay came in one burst, and 14.2 skipped)
    stages = {s: 1.6 for s in ("script", "tts", "visuals", "compose", "render")}
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.post(reference_server.base_url + "/api/jobs",
                                json={"topic": "family 14", "scenes": 1, "stageSeconds": stages, "failAt": "render"})
    path = tmp_path / "job.toml"
    path.write_text(JOB_PROFILE.replace("{job}", reply.json()["jobId"]))
    profile = load_profile(path, base_url=reference_server.base_url)
    report = await run_suite(profile, only=["14"], parallel=8)
    got = {r.id: r for r in report.results}
    assert {i: r.outcome for i, r in got.items()} == {"14.1": "pass", "14.2": "pass", "14.3": "pass",
                                                      "14.4": "non-strict"}, _why(report)
    assert got["14.4"].evidence["typesColliding"] == ["error"]
    assert got["14.4"].evidence["serverEventsOfThoseTypes"]["error"] >= 1
    assert got["14.3"].evidence["reconnectsAfterEnd"][0]["status"] == 204
