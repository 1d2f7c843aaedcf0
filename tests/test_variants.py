"""Proving the verdicts: each broken variant is caught by exactly the cases aimed at its fault
(as `fail`, not `error`); the correct and the legal variants pass everything."""

import sys

import pytest

from conftest import ROOT, RunningServer, acceptable
from harness import load_profile
from harness._runner import run_suite


def _why(result) -> tuple:
    """Enough of a result to diagnose a failure from the test log alone (CI keeps nothing else)."""
    evidence = {k: v for k, v in result.evidence.items() if k not in ("idTimeline", "timelineMarks")}
    return (result.outcome, result.reason, [f"{f.message} (observed {f.observed!r:.100})" for f in result.findings][:3],
            repr(evidence)[:600])


# fault -> (the families or cases run against it, the cases that must fail). A fault of one case
# of family 4 runs that case alone: the family's 4.3 (cuts at the target's pace) takes 13 s, and
# lei-ignored (the whole family) already shows that the rest of the family judges replay.
DETECTION = {
    "id-skip": (["3"], {"3.1"}),
    "id-repeat": (["3"], {"3.1"}),
    "percent-regress": (["3"], {"3.2"}),
    "snapshot-ahead": (["3.7"], {"3.7"}),
    "stage-backwards": (["3"], {"3.2"}),
    "lei-ignored": (["4", "12.7"], {"4.1", "4.2", "4.3", "4.4", "4.9", "12.7"}),
    "replay-off-by-one": (["4.1", "4.4", "4.9", "12.7"], {"4.1", "4.4", "4.9", "12.7"}),
    "replay-race": (["4.3"], {"4.3"}),
    "no-keepalive": (["5", "12.5"], {"5.1", "5.2", "12.5"}),
    "keepalive-slow": (["5", "12.5"], {"5.1", "5.2", "12.5"}),
    "cancel-ignored-in-compose": (["6.4"], {"6.4"}),
    "cancel-slow": (["6"], {"6.1", "6.2", "6.3", "6.4", "6.5", "6.7"}),
    "cancel-leaves-folder": (["6", "8"], {"6.1", "6.2", "6.3", "6.4", "6.5", "6.7", "8.1", "8.2", "8.3", "8.4", "8.5"}),
    "cancel-leaves-process": (["6"], {"6.2", "6.3", "6.4", "6.5"}),
    "event-after-terminal": (["3"], {"3.4"}),
    "stream-open-after-terminal": (["3", "4.8"], {"3.4", "4.8"}),
    "cross-job-leak": (["7.1", "7.2"], {"7.1", "7.2"}),
    "batched": (["2", "12.3", "12.4"], {"2.3", "12.3", "12.4"}),
    "wrong-content-type": (["1", "12.1"], {"1.2", "12.1"}),
    "cancel-finished-202": (["6.9", "6.10"], {"6.9"}),
    "malformed-json-500-html": (["9"], {"9.1"}),
    "empty-200-not-204": (["4.7", "12.9"], {"4.7", "12.9"}),
    "garbage-lei-500": (["4.5"], {"4.5"}),
    "no-retry": (["1", "12.10"], {"1.5", "12.10"}),
    "failure-no-remediation": (["8"], {"8.1", "8.2", "8.3", "8.4", "8.5"}),
    "cadence-slow": (["3"], {"3.5"}),
    "hostile-id-500": (["1"], {"1.4"}),
    "artifact-not-mp4": (["3.6"], {"3.6"}),
    "unknown-job-stream": (["1.3"], {"1.3"}),
    "bad-filter-200": (["7.6"], {"7.6"}),
    "wrong-method-404": (["9.6"], {"9.6"}),
    "queue-stats-wrong": (["7.4"], {"7.4"}),
    "not-object-422": (["9.2"], {"9.2"}),
    "wrong-type-400": (["9.3"], {"9.3"}),
    "big-body-500": (["9.4"], {"9.4"}),
    "unknown-field-accepted": (["9.5"], {"9.5"}),
    "warn-missing": (["8.6"], {"8.6"}),
    "stage-skipped": (["3"], {"3.8"}),
    "multiline-data": (["2.1"], {"2.1"}),
    "per-connection-bytes": (["7.3", "4.8"], {"7.3", "4.8"}),
    "past-end-replays-all": (["4.6"], {"4.6"}),
    "invalid-utf8": (["2.2", "12.2"], {"2.2", "12.2"}),
    "ts-backwards": (["3.3"], {"3.3"}),
    "healthz-missing-settings": (["1.1"], {"1.1"}),
    "cancel-unknown-500": (["6.10"], {"6.10"}),
    "cancel-twice-409": (["6.8"], {"6.8"}),
    "filter-ignored": (["7.5"], {"7.5"}),
    # What the target owes and never delivers: each wait ends at its deadline as a fail, never
    # at a case's safety limit as an error.
    "queued-events-held": (["5.2", "6.6"], {"6.6"}),
    "cancelled-event-lost": (["6", "7.2"], {"6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7", "6.8", "7.2"}),
    "no-terminal-event": (["3.4", "4.8", "7.1"], {"3.4", "4.8", "7.1"}),
    "cancel-202-keeps-running": (["6", "7.2"], {"6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7", "6.8", "7.2"}),
    "finished-reconnect-200-open": (["4.7", "12.9"], {"4.7", "12.9"}),
    # Family 12 (any stream) on the contract profile: a Last-Event-ID resumes another job; CORS a browser refuses.
    "lei-other-stream": (["12.8"], {"12.8"}),
    "cors-star-credentials": (["12.1"], {"12.1"}),
    # Browser faults (faults_browser.py; family 10 in test_variants_browser.py) a Python client sees too.
    "retry-hour": (["1.5", "12.10"], {"1.5", "12.10"}),
    "buffered": (["2", "12.4"], {"2.3", "12.4"}),  # family 10 skips its cuts naming 2.3: the finding is caught here
}
# Legal oddities may earn these non-strict outcomes (documented client hazards), nothing worse.
LEGAL_NON_STRICT = {"legal-crlf": set(), "legal-cr": {"2.2", "2.4", "12.2"}, "legal-misc": {"5.3", "12.2"}}


def variant(name: str) -> RunningServer:
    return RunningServer([sys.executable, str(ROOT / "tests" / "variants" / "server.py"), name, "--port", "0",
                          "--data-dir", "{data_dir}", "--keepalive", "1", "--time-scale", "0.25",
                          "--max-concurrent-jobs", "12", "--retry-ms", "200", "--diagnostics"])


async def run_against(name: str, only=()):
    server = variant(name)
    try:
        return await run_suite(load_profile(base_url=server.base_url), only=only, parallel=8)
    finally:
        server.stop()


def outcomes(report) -> dict[str, str]:
    return {r.id: r.outcome for r in report.results}


@pytest.mark.parametrize("fault", sorted(DETECTION))
async def test_fault_is_caught_by_its_cases(fault):
    families, targets = DETECTION[fault]
    report = await run_against(fault, only=families)
    got = outcomes(report)
    caught = {case for case in targets if got.get(case) == "fail"}
    details = {r.id: (r.outcome, r.reason, [f.message for f in r.findings][:2]) for r in report.results
               if r.id in targets - caught}
    assert caught == targets, f"{fault}: not caught as fail by {sorted(targets - caught)}: {details}"
    errors = {r.id: r.reason for r in report.results if r.outcome == "error"}
    assert not errors, f"{fault}: the harness erred instead of judging: {errors}"
    # Anything else that changed is reported by name, so the detection table stays honest.
    others = sorted(case for case, outcome in got.items() if outcome == "fail" and case not in targets)
    print(f"\n{fault}: caught by {sorted(caught)}; also failing: {others}")


@pytest.mark.xdist_group("heavy")
@pytest.mark.parametrize("name", ["correct", *sorted(LEGAL_NON_STRICT)])
async def test_correct_and_legal_variants_pass_everything(name):
    # The legal variants differ from the correct one only in how they frame events (CRLF, CR,
    # fields a client must ignore): the families that read and compare framing judge them (1-3,
    # a reconnect's replay compared byte for byte (4.1) and a cut inside an event (4.2), the
    # browser's 10, any stream's 12 and 14); the rest read the same streams through the same
    # decoder and run against the correct variant (keeps CI under 10 minutes on 2 cores).
    framing = ("1", "2", "3", "4.1", "4.2", "10", "12", "14")
    report = await run_against(name, only=() if name == "correct" else framing)
    allowed = LEGAL_NON_STRICT.get(name, set())
    bad = {r.id: _why(r) for r in report.results if not acceptable(r, allowed)}
    assert not bad, f"{name}: {bad}"


@pytest.mark.xdist_group("heavy")
async def test_a_server_nobody_here_wrote_passes():
    """The minimal Starlette implementation in examples/: the harness does not lean on the
    reference server's quirks. It shows no resources, so cleanup is judged on its claims."""
    server = RunningServer([sys.executable, str(ROOT / "examples" / "starlette_server.py"), "0"])
    try:
        report = await run_suite(load_profile(base_url=server.base_url), parallel=8)
        output = server.output_so_far()
    finally:
        server.stop()
    bad = {r.id: _why(r) for r in report.results if not acceptable(r)}
    assert not bad, f"{bad}\nthe example server's output ends:\n{output[-3000:]}"
    cancel = next(r for r in report.results if r.id == "6.3")
    assert any("not checked first-hand" in step for step in cancel.steps)
