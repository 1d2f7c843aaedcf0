"""Family 10 against the faults only a browser feels: each is caught by exactly its cases, as
`fail`, never `error`; and against faults that keep a browser session from doing its part (a stream
the browser refuses, held open, buffered): the target's `fail`, or a `skip` that names the case
owning the finding, never `error`. Needs a browser (system Chromium); without one these skip."""

import pytest

from harness.browser import BrowserUnavailable, find_browser
from test_variants import outcomes, run_against

# Chromium, locust and whole-suite runs take a core each: one at a time, on one xdist worker.
pytestmark = pytest.mark.xdist_group("heavy")

try:
    find_browser()
    NO_BROWSER = ""
except BrowserUnavailable as exc:
    NO_BROWSER = str(exc)

# fault -> the family-10 cases that must fail
DETECTION = {
    "after-end-200": {"10.4"},  # a finished job's reconnect answered 200: the browser reconnects for ever
    "reconnect-503": {"10.2", "10.7"},  # a 503 on the first reconnect: the browser gives up for good
    "no-retry": {"10.3"},  # (from the main corpus) no retry field: the browser waits its own default
    "id-skip": {"10.1", "10.2", "10.5", "10.7"},  # (main corpus) an id skipped: what the browser delivers has a gap
    # Waits on the target end at the contract's deadlines, as fails, never at the job time limit:
    "retry-hour": {"10.2", "10.3", "10.4", "10.7"},  # retry: one hour: after a cut the browser waits an hour
    # (main corpus) job-completed withheld, keep-alives only after the job's other events
    "no-terminal-event": {"10.1", "10.2", "10.4", "10.5", "10.7"},
    # Where the target keeps a session from doing its part, the case says so as the target's fail
    # (or a skip naming the case that owns the finding), never as the harness's error:
    # (main corpus) served as text/plain: the browser gives up on the stream at once (CLOSED)
    "wrong-content-type": {"10.1", "10.2", "10.4", "10.5", "10.7"},
    # (main corpus) held open after the terminal event: six such connections leave a seventh
    # stream none, and the wait ends at the close-after-terminal deadline, not the job time limit
    "stream-open-after-terminal": {"10.4", "10.5"},
    "buffered": set(),  # each job reaches the browser in one burst at its end: no room to cut (2.3's finding)
    "garbage-lei-500": set(),  # (main corpus) a browser never sends a garbage Last-Event-ID: 4.5's finding
    "stage-backwards": set(),  # (main corpus) what the browser delivers is what was sent: 3.2's finding
}
# What the finding of a wait that ended at its deadline must say (case -> words), per fault.
SAYS = {
    "retry-hour": {"10.3": ("reconnect", "3600000 ms")},
    "no-terminal-event": {"10.1": ("events deadline", "comment(s)"), "10.4": ("events deadline", "comment(s)")},
    "wrong-content-type": {"10.2": ("readyState CLOSED", "text/plain"), "10.7": ("readyState CLOSED", "text/plain")},
    "stream-open-after-terminal": {"10.5": ("kept the connection open after the job's terminal event",
                                            "never requested")},
}
# The skips a fault causes, each naming the case that owns the finding (case -> that case's id).
SKIPS = {
    "wrong-content-type": {"10.3": "10.2"},  # no reconnect to time: the browser gave up before any cut
}
# The skips a fault may cause: a job slower than the buffer's period (a busy machine) comes in two
# bursts, and the cut lands between them; then the case judges (pass).
MAY_SKIP = {
    "buffered": {"10.2": "2.3", "10.3": "2.3", "10.7": "2.3"},  # nothing to cut between
}


@pytest.mark.skipif(bool(NO_BROWSER), reason=NO_BROWSER)
@pytest.mark.parametrize("fault", sorted(DETECTION))
async def test_browser_fault_is_caught_by_its_cases(fault):
    targets = DETECTION[fault]
    report = await run_against(fault, only=["10"])
    got = outcomes(report)
    details = {r.id: (r.outcome, r.reason, [f.message for f in r.findings][:2]) for r in report.results}
    assert {c for c in targets if got.get(c) == "fail"} == targets, f"{fault}: {details}"
    skips = {**SKIPS.get(fault, {}), **MAY_SKIP.get(fault, {})}
    errors = {r.id: r.reason for r in report.results if r.outcome == "error" or (r.outcome == "skip" and (
        r.id not in skips or f"{skips[r.id]} " not in r.reason + " "))}
    assert not errors, f"{fault}: the harness erred or skipped instead of judging: {errors}"
    assert set(SKIPS.get(fault, {})) <= {r.id for r in report.results if r.outcome == "skip"}, f"{fault}: {details}"
    for case_id, words in SAYS.get(fault, {}).items():
        text = [f"{f.message} {f.expected} {f.observed}" for r in report.results if r.id == case_id for f in r.findings]
        assert any(all(w in t for w in words) for t in text), f"{fault}, {case_id} should say {words}: {text}"
    # The waits ended at the contract's deadlines (what SAYS checks), never at the job time limit
    # (60 s) a wait once ran to.
    limit = [f.message for r in report.results for f in r.findings if "job time limit" in f.message]
    assert not limit, f"{fault}: a wait ran to the job time limit: {limit}"
    others = sorted(c for c, o in got.items() if o == "fail" and c not in targets)
    print(f"\n{fault}: caught by {sorted(targets)}; also failing: {others}")
