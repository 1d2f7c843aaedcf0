"""Family 10's waits and whose fault, without a browser: the rule that ends a page's wait on the
target (``job_stream_overdue``) on hand-built tap records, and the cases' verdicts on hand-built
recordings (run_case): what the target did or failed to deliver is a fail, the harness's own
trouble an error that says it was the harness."""

import dataclasses
import json

import pytest

import harness.browser as browser
import scenarios.browser  # noqa: F401  (registers family 10's cases)
from harness import Segment, load_profile
from harness.browser import Exchange, Observation, PageTrace
from scenarios._core import REGISTRY, Context, Finding, run_case
from tracebuild import ev, good_job

PATH = "/api/jobs/job1/events"
TERMINAL = frozenset({"job-completed", "job-failed", "job-cancelled"})


def queued(event) -> bool:
    return event.type == "job-status" and json.loads(event.data).get("status") == "queued"


def connection(chunks, *, start, ended=None, end="client-closed", status=200, lei=None) -> Exchange:
    """One connection as the tap records it; ``ended`` None: still open."""
    x = Exchange(1, "GET", PATH, (("last-event-id", lei),) if lei else (), start, "HTTP/1.1", status=status)
    x.chunks = list(chunks)
    x.size = sum(len(d) for _, d in chunks)
    if ended is not None:
        x.ended_at, x.end = ended, end
    return x


def overdue(exchanges, now, tries=(), deadline=5.0, reconnect_within=5.0):
    return browser.job_stream_overdue([x.segment() for x in exchanges], tries, now, deadline=deadline,
                                      reconnect_within=reconnect_within, terminal=TERMINAL, patient=queued)


JOB = good_job()
KEEPALIVES = [(3.0 + i, b": keepalive\n\n") for i in range(5)]  # one a second, 3 to 7


def test_an_open_stream_with_only_keepalives_is_overdue_at_the_events_deadline():
    stream = connection([(1.0, b"retry: 200\n\n"), (1.5, JOB[0]), (2.0, JOB[1]), *KEEPALIVES], start=1.0)
    assert overdue([stream], now=6.9) is None  # 4.9 s since the last event
    kind, finding = overdue([stream], now=7.1)
    assert kind == "silent" and isinstance(finding, Finding)
    assert "5.0s (the events deadline)" in finding.message and "next event" in finding.message
    assert "5.10s of open stream since event 2 (step-status)" in finding.observed
    assert "no event, 5 comment(s)" in finding.observed and "still open" in finding.observed


def test_nothing_is_owed_while_queued_before_a_request_or_after_the_end():
    waiting = ev(1, "job-status", status="queued", percent=0, message="queued")
    assert overdue([connection([(1.0, waiting), *KEEPALIVES], start=1.0)], now=60.0) is None
    assert overdue([], now=60.0) is None  # no request yet: the browser's own queue, not the target
    ended = connection([(1.0, b"".join(JOB))], start=1.0, ended=1.1, end="server-closed")
    assert overdue([ended], now=60.0) is None


def test_time_between_connections_is_not_the_targets_silence():
    first = connection([(1.0, JOB[0]), (2.0, JOB[1])], start=1.0, ended=3.0)  # cut at 3.0
    second = connection([(5.0, b": keepalive\n\n")], start=4.5, lei="2")  # reconnected 1.5 s later
    assert overdue([first, second], now=8.4) is None  # open 1.0 + 3.9 s since event 2
    kind, finding = overdue([first, second], now=8.6)
    assert kind == "silent" and "over 2 connection(s)" in finding.observed


def test_a_reconnect_that_does_not_come_is_overdue_and_names_the_streams_retry():
    cut = connection([(1.0, b"retry: 3600000\n\n"), (1.5, JOB[0])], start=1.0, ended=2.0)
    assert overdue([cut], now=6.9) is None
    kind, finding = overdue([cut], now=7.1)
    assert kind == "reconnect" and "reconnect" in finding.message
    assert "no request for 5.10s since the connection ended" in finding.observed and "retry: 3600000 ms (the browser waits 3600s)" in finding.observed
    # A try refused at the harness's proxy (its outage) is the browser trying: the clock restarts there.
    assert overdue([cut], now=7.1, tries=[4.0]) is None
    assert overdue([cut], now=7.1, reconnect_within=8.0) is None  # a long retry that healthz advertised


# -- the cases' verdicts on hand-built recordings --------------------------------------------

def _reference() -> Segment:
    return connection([(0.5, b"".join(JOB))], start=0.5, ended=0.6, end="server-closed").segment()


def _trace(exchanges, observations=()) -> PageTrace:
    return PageTrace(tuple(observations), tuple(exchanges), (PATH,), ())


def _context(session_name: str, session: browser.Session) -> Context:
    ctx = Context(load_profile(base_url="http://127.0.0.1:9"), None, same_host=True)
    ctx.health = {"retryMs": 200}
    sessions = {name: session if name == session_name else RuntimeError("not recorded")
                for name in ("plain", "cut", "outage", "seven")}
    ctx._shared["browser-family"] = ("ok", browser.Recording("chromium (test)", sessions))
    return ctx


async def _verdict(case_id: str, session_name: str, session: browser.Session):
    case_ = next(c for c in REGISTRY if c.id == case_id)
    return await run_case(case_, _context(session_name, session))


def _cut_session(notes) -> browser.Session:
    before_cut = connection([(1.0, b"retry: 3600000\n\n" + b"".join(JOB[:8]))], start=1.0, ended=2.0)
    seen = [Observation("ev", 0, 1.0, "OPEN", "job-status", "1", "{}", True), Observation("error", 0, 2.0, "CONNECTING")]
    return browser.Session("cut", _trace([before_cut], seen), ("job1",), _reference(), (), notes)


@pytest.mark.parametrize("case_id", ["10.2", "10.3"])
async def test_a_browser_that_never_reconnects_after_a_cut_is_the_targets_fail(case_id):
    finding = Finding("waited 5.0s for the browser to reconnect after its connection ended mid-job; it did not",
                      "a reconnect within 5.0s", "no request for 5.1s ...; the stream's retry: 3600000 ms")
    told = await _verdict(case_id, "cut", _cut_session({"cuts": 1, "cutTimes": (2.0,), "overdue": finding,
                                                        "overdueKind": "reconnect"}))
    assert told.outcome == "fail" and told.findings[0] == finding, told
    # Without the session's own deadline finding the case still sees the cut and no reconnect.
    bare = await _verdict(case_id, "cut", _cut_session({"cuts": 1, "cutTimes": (2.0,)}))
    assert bare.outcome == "fail", bare
    assert "never reconnected after a cut" in bare.findings[0].message and "3600000" in bare.findings[0].observed


@pytest.mark.parametrize("case_id", ["10.2", "10.3"])
async def test_no_cut_by_the_harnesss_proxy_while_the_stream_left_room_is_an_error_that_says_so(case_id):
    # Eight events over 0.7 s on an open stream, and no cut: the harness's proxy did not do its part.
    spread = connection([(1.0 + i / 10, e) for i, e in enumerate(JOB[:8])], start=1.0)
    session = browser.Session("cut", _trace([spread]), ("job1",), _reference(), (), {"cuts": 0, "cutTimes": ()})
    result = await _verdict(case_id, "cut", session)
    assert result.outcome == "error", result
    assert result.reason.startswith("the harness's proxy made no cut while the job ran"), result.reason
    assert "8 event(s) before the job's end, in 8 burst(s); no terminal event came" in result.reason


# -- whose fault when a session could not do its part ---------------------------------------

def test_the_room_a_stream_left_for_a_cut_is_read_from_the_tap():
    burst = connection([(1.0, b"retry: 200\n\n"), (4.0, b"".join(JOB))], start=1.0, ended=4.0, end="server-closed")
    room = browser.cut_room([burst.segment()], TERMINAL)
    assert (room.seconds, room.events, room.together) == (0.0, 0, len(JOB)), room
    assert room.describe() == f"all {len(JOB)} event(s) reached the tap at once, with the terminal event"
    two = connection([(1.0, b"".join(JOB[:5])), (1.2, b"".join(JOB[5:10])), (3.0, b"".join(JOB[10:]))], start=1.0,
                     ended=3.0, end="server-closed")
    room = browser.cut_room([two.segment()], TERMINAL)
    assert room.seconds == pytest.approx(2.0) and (room.events, room.bursts, room.together) == (10, 2, 17), room
    assert room.describe() == "10 event(s) before the job's end, in 2 burst(s); the terminal event 2.00s after the first"
    assert browser.cut_room([], TERMINAL).describe() == "no event reached the tap"


def test_a_connection_held_open_after_the_terminal_event_is_found_past_the_close_deadline():
    held = connection([(1.0, b"".join(JOB)), (2.0, b": keepalive\n\n")], start=1.0)
    assert browser.connection_held([held.segment()], 3.9, close_within=3.0, terminal=TERMINAL) is None
    segment, seconds = browser.connection_held([held.segment()], 4.1, close_within=3.0, terminal=TERMINAL)
    assert seconds == pytest.approx(3.1) and len(segment.comments) == 1
    closed = connection([(1.0, b"".join(JOB))], start=1.0, ended=1.1, end="server-closed")
    running = connection([(1.0, b"".join(JOB[:5]))], start=1.0)
    assert browser.connection_held([closed.segment(), running.segment()], 60.0, close_within=3.0,
                                   terminal=TERMINAL) is None


def _refused_as_text_plain(name: str, notes) -> browser.Session:
    """Served as text/plain: the browser takes nothing and is CLOSED at once (no terminal delivered)."""
    plain = connection([(1.0, b"retry: 200\n\n" + b"".join(JOB[:8]))], start=1.0, ended=1.5)
    plain.response_headers = (("content-type", "text/plain"),)
    seen = [Observation("state", 0, 0.9, "CONNECTING"), Observation("error", 0, 1.01, "CLOSED"),
            Observation("state", 0, 1.01, "CLOSED")]
    return browser.Session(name, _trace([plain], seen), ("job1",), _reference(), (), notes)


@pytest.mark.parametrize("case_id, name", [("10.2", "cut"), ("10.7", "outage")])
async def test_a_browser_that_gives_up_on_the_targets_answer_is_the_targets_fail(case_id, name):
    # Before: 10.2 "the harness's proxy made no cut" and 10.7 "never took the network down" (error).
    for notes in ({"cuts": 0, "cutTimes": ()}, {"cuts": 1, "cutTimes": (1.3,), "outageSeconds": 1.0,
                                                 "outageAt": 1.3}):
        result = await _verdict(case_id, name, _refused_as_text_plain(name, notes))
        assert result.outcome == "fail", result
        finding = result.findings[0]
        assert "gave up on the stream for good (readyState CLOSED) before the job's end" in finding.message
        assert "HTTP 200, content-type text/plain, on request 1" in finding.observed, finding


async def test_no_delay_to_time_when_the_browser_gave_up_is_a_skip_that_names_10_2():
    for notes in ({"cuts": 0, "cutTimes": ()}, {"cuts": 1, "cutTimes": (1.3,)}):
        result = await _verdict("10.3", "cut", _refused_as_text_plain("cut", notes))
        assert result.outcome == "skip" and "10.2 reports it" in result.reason, result


def _burst(name: str, notes) -> browser.Session:
    """Buffered: the whole job reaches the tap in one read at its end; the browser's only reconnect
    follows the end (answered 204), timed from an error event the page saw late, behind the burst."""
    whole = connection([(1.0, b"retry: 200\n\n"), (4.0, b"".join(JOB))], start=1.0, ended=4.0, end="server-closed")
    after = connection([], start=4.1, ended=4.1, end="status", status=204, lei=str(len(JOB)))
    seen = [Observation("ev", 0, 4.05, "OPEN", "job-completed", str(len(JOB)), "{}", True),
            Observation("error", 0, 4.08, "CONNECTING")]
    return browser.Session(name, _trace([whole, after], seen), ("job1",), _reference(), (), notes)


@pytest.mark.parametrize("case_id, name", [("10.2", "cut"), ("10.3", "cut"), ("10.7", "outage")])
async def test_a_job_delivered_in_one_burst_leaves_no_room_to_cut_a_skip_that_names_2_3(case_id, name):
    # Before: 10.2 and 10.7 an error (no cut, no outage); 10.3 a fail timing the reconnect after the
    # end (0.02 s) from an error event the page saw only after the burst.
    result = await _verdict(case_id, name, _burst(name, {"cuts": 0, "cutTimes": ()}))
    assert result.outcome == "skip", result
    assert "could land mid-job" in result.reason and f"all {len(JOB)} event(s) reached the tap at once" \
        in result.reason and "2.3" in result.reason, result.reason
    # An outage that came only after the job's end is no outage mid-job either.
    if case_id == "10.7":
        late = await _verdict(case_id, name, _burst(name, {"outageSeconds": 1.0, "outageAt": 4.5}))
        assert late.outcome == "skip" and "2.3" in late.reason, late
    # The job created long before the browser asked for its stream: the burst was the replay of
    # what the job did meanwhile, and the lateness the harness's own.
    slow = await _verdict(case_id, name, _burst(name, {"cuts": 0, "cutTimes": (), "jobCreatedAt": -2.0}))
    assert slow.outcome == "error" and "3.00s after the job was created" in slow.reason, slow


async def test_an_outage_session_whose_wait_ended_at_a_deadline_is_a_fail_not_an_error():
    finding = Finding("waited 5.0s (the events deadline) for the job's next event on the browser's stream; "
                      "it did not come", "an event within 5.0s", "6.0s of open stream since event 8")
    stalled = connection([(1.0, b"".join(JOB[:8])), *KEEPALIVES], start=1.0)
    session = browser.Session("outage", _trace([stalled]), ("job1",), _reference(), (),
                              {"overdue": finding, "overdueKind": "silent"})
    result = await _verdict("10.7", "outage", session)
    assert result.outcome == "fail" and result.findings == (finding,), result
    plain = await _verdict("10.1", "plain", dataclasses.replace(session, name="plain"))
    assert plain.outcome == "fail" and plain.findings == (finding,), plain



@pytest.mark.parametrize("case_id", ["10.2", "10.3"])
async def test_a_stream_that_fell_silent_after_a_cut_is_reported_as_such_not_as_no_reconnect(case_id):
    """The session's wait ended at the events deadline soon after the cut: nobody watched for a
    reconnect for a retry's length, so "never reconnected" would be a claim; the silence is what was seen."""
    finding = Finding("waited 5.0s (the events deadline) for the job's next event on the browser's stream; "
                      "it did not come", "an event within 5.0s", "5.1s of open stream since event 8")
    told = await _verdict(case_id, "cut", _cut_session({"cuts": 1, "cutTimes": (2.0,), "overdue": finding,
                                                        "overdueKind": "silent"}))
    assert told.outcome == "fail" and told.findings == (finding,), told


def test_what_a_stream_brought_is_read_from_the_tap_for_the_job_time_limit_finding():
    from types import SimpleNamespace

    queued_only = connection([(1.0, ev(1, "job-status", status="queued", percent=0, message="queued")),
                              *KEEPALIVES], start=1.0)
    page = SimpleNamespace(streams=(PATH, "/api/jobs/never/events"),
                           rig=SimpleNamespace(tap=SimpleNamespace(exchanges=[queued_only])))
    assert browser.SessionRecorder.brought(page, 0) == "stream 1: 1 request(s), 1 event(s) (last: 1:job-status), 5 comment(s)"
    assert browser.SessionRecorder.brought(page, 1) == "stream 2: 0 request(s), no event, 0 comment(s)"


def test_a_deadline_is_extended_by_the_starvation_measured_in_its_window():
    """A silence or a missing reconnect that the machine's measured starvation explains is not
    overdue yet: the wait goes on (to the job time limit at most), so it ends at the target's
    deadline, not the machine's."""
    stream = connection([(1.0, b"retry: 200\n\n"), (1.5, JOB[0]), (2.0, JOB[1]), *KEEPALIVES], start=1.0)
    cut = connection([(1.0, b"retry: 200\n\n"), (1.5, JOB[0])], start=1.0, ended=2.0)
    starved = {"target": 1.0, "browser": 1.0}

    def allowance(role, start, end):
        return starved[role]

    def late(exchanges, now):
        return browser.job_stream_overdue([x.segment() for x in exchanges], (), now, deadline=5.0,
                                          reconnect_within=5.0, terminal=TERMINAL, patient=queued,
                                          allowance=allowance)

    assert late([stream], now=7.9) is None and late([stream], now=8.1)[0] == "silent"   # 5 s + the 1 s it took
    assert late([cut], now=7.9) is None and late([cut], now=8.1)[0] == "reconnect"


# -- 10.5: seven streams from one page ---------------------------------------------------------

SEVEN = tuple(f"/api/jobs/job{i}/events" for i in range(1, 8))


def _seven(spans, *, delivered=range(7), notes=None) -> browser.Session:
    """Seven streams, one connection each over ``spans`` (start, end) as the tap saw them; the
    page delivered the terminal event of the streams in ``delivered``."""
    exchanges, seen = [], []
    for s, (start, end) in enumerate(spans):
        x = Exchange(s + 1, "GET", SEVEN[s], (), start, "HTTP/1.1", status=200)
        x.chunks, x.ended_at, x.end = [(start + 0.01, b"".join(JOB))], end, "server-closed"
        exchanges.append(x)
        if s in delivered:
            seen.append(Observation("ev", s, end, "OPEN", "job-completed", "1", "{}", True))
    trace = PageTrace(tuple(seen), tuple(exchanges), SEVEN, ())
    return browser.Session("seven", trace, tuple(f"job{i}" for i in range(1, 8)), None, (),
                           {"jobsCreatedAt": 0.0, **(notes or {})})


async def test_seven_streams_open_at_once_pass_and_a_seventh_that_waited_for_the_six_is_non_strict():
    together = await _verdict("10.5", "seven", _seven([(1.0 + s / 100, 5.0) for s in range(7)]))
    assert together.outcome == "pass", together
    waited = await _verdict("10.5", "seven", _seven([*((1.0 + s / 100, 5.0) for s in range(6)), (5.1, 9.0)]))
    assert waited.outcome == "non-strict", waited
    assert "at most 6 of 7 streams were open at once" in waited.findings[0].message
    assert waited.evidence["mostOpenAtOnce"] == 6 and waited.evidence["firstRequestAfterJobsCreatedSeconds"] == 1.0


@pytest.mark.parametrize("spans", [
    # Three jobs over before the other four were asked for: at most four open, nobody waited
    # (the fresh-clone CI run's error: "the harness's seven jobs ended too soon ...").
    [*((1.0, 1.2) for _ in range(3)), *((1.3 + s / 100, 3.0) for s in range(4))],
    # At most four open, and later streams asked for after others ended: the browser was slow,
    # not at its limit (six per origin), so nothing waited for a connection.
    [*((1.0 + s / 100, 1.5) for s in range(4)), *((1.6 + s / 100, 2.0) for s in range(3))],
])
async def test_jobs_over_before_six_streams_were_open_at_once_skip_saying_so(spans):
    result = await _verdict("10.5", "seven", _seven(spans))
    assert result.outcome == "skip", result
    assert result.reason.startswith("the browser's connection limit was never reached"), result.reason
    assert "at most 4" in result.reason and "the first 1.00s after the jobs were created" in result.reason
    # What the target failed to deliver stays its fail, whatever the limit.
    failed = await _verdict("10.5", "seven", _seven(spans, delivered=range(6)))
    assert failed.outcome == "fail" and "job 7 (job7)" in failed.findings[0].message, failed


async def test_jobs_created_at_once_and_a_refusal_leaves_as_the_targets_fault():
    """The seven jobs are asked for at once (one after the other took 1.6 s on a busy machine);
    a job the target refused is its TargetFault as itself, not a nursery's group (a harness bug)."""
    import trio

    from harness import TargetFault

    created = []

    async def create_job(**knobs):
        number = len(created) + 1
        created.append(knobs)
        await trio.sleep(0.05 * (7 - number))  # the last asked answers first
        if knobs.get("refuse") and number == 3:
            raise TargetFault("creating a job failed: HTTP 503")
        return f"job{number}"

    ctx = load_profile(base_url="http://127.0.0.1:9")
    fake = type("Ctx", (), {"profile": ctx, "create_job": staticmethod(create_job), "quick": lambda self, **s: s,
                            "knobs": lambda self, **k: dict(k)})()
    recorder = browser.SessionRecorder(fake, "seven")
    with trio.fail_after(0.5):  # seven answers of up to 0.3 s each: at once, not 1.05 s in a row
        assert sorted(await recorder.jobs(7, at_once=True)) == [f"job{i}" for i in range(1, 8)]
    assert recorder.steps[-1].startswith("created 7 job(s) at once")
    created.clear()
    fake.knobs = lambda **k: {**k, "refuse": True}
    with pytest.raises(TargetFault, match="HTTP 503"):
        await browser.SessionRecorder(fake, "seven").jobs(7, at_once=True)


def test_an_outage_the_browser_never_tried_through_says_what_the_page_and_proxy_saw():
    """10.7's harness error (no refused try) carries the page's observations, the proxy's log and
    the requests around the outage, so that whose silence it was can be read from the report."""
    from harness._proxy import ProxyLogEntry
    from scenarios.browser import _after_outage

    trace = PageTrace(observations=(Observation("ev", 0, 9.8, "OPEN", "job-status", "3", "{}", True),
                                    Observation("error", 0, 10.05, "CONNECTING")),
                      exchanges=(Exchange(1, "GET", "/api/jobs/x/events", (), 6.0, end="cut"),),
                      streams=("/api/jobs/x/events",),
                      proxy_log=(ProxyLogEntry(10.0, "refuse", "1.0s"), ProxyLogEntry(10.0, "cut", "1 connection(s)")))
    said = _after_outage(trace, outage_at=10.0)
    assert "error(CONNECTING) +0.05s" in said and "ev/job-status(OPEN) -0.20s" in said
    assert "cut 1 connection(s) +0.00s" in said and "refuse" not in said  # the windows themselves are noise
    assert "GET /api/jobs/x/events -4.00s (cut)" in said


async def test_an_outage_the_browser_never_tried_through_is_judged_over_the_time_the_network_was_down():
    """No try refused: the browser's measured wait for a core is taken over the time the network
    was really down (the session's downUntil). Over a fixed 11 s from the outage it reached past
    what was sampled, so a starved browser was never measured and always the harness's error."""
    from harness import Starvation
    from harness._starvation import ProcessSeries

    cut = connection([(1.0, b"retry: 200\n\n" + b"".join(JOB[:8]))], start=1.0, ended=2.0)
    seen = [Observation("ev", 0, 1.0, "OPEN", "job-status", "1", "{}", True), Observation("error", 0, 2.0, "CONNECTING")]
    session = browser.Session("outage", _trace([cut], seen), ("job1",), _reference(), (),
                              {"outageSeconds": 1.0, "outageAt": 2.0, "downUntil": 3.5})
    case_ = next(c for c in REGISTRY if c.id == "10.7")

    async def judged(waits):
        ctx = _context("outage", session)
        series = (ProcessSeries("browser", "chromium (test)", waits),) if waits else ()
        ctx.starved = lambda: Starvation(processes=series)
        return await run_case(case_, ctx, tries=1)

    # The browser waited 1.4 s of the 1.5 s the network was down: the machine's doing (not judged).
    starved = await judged(((1.9, 0.0), (2.6, 0.7), (3.6, 1.4)))
    assert starved.outcome == "error" and starved.reason.startswith("not judged"), starved.reason
    assert "the browser waited 1400 ms for a core in a 1.50 s window" in starved.reason, starved.reason
    # Not starved: the harness's outage did not do its part, and it says what the page saw.
    idle = await judged(((1.9, 0.0), (3.6, 0.01)))
    assert idle.outcome == "error" and idle.reason.startswith("the harness's outage refused no connection"), idle
    assert "network down (1.5s:" in idle.reason and "error(CONNECTING) +0.00s" in idle.reason, idle.reason
