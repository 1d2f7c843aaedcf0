"""The pytest plugin as a team uses it: its fixtures in their own tests, the suite as pytest items.

Each test runs pytest in a subprocess (pytester), where the plugin loads through its pytest11
entry point as it would in another repository."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from harness._registry import load_cases

pytest_plugins = ["pytester"]

# The in-process runs below load the cases; pytester restores sys.modules after each test, so
# modules first imported inside one would be imported (and their cases registered) again later.
# Loaded here, at collection, they are older than any pytester snapshot and stay.
load_cases()

# Cases of our own, one per outcome, as a team writes them (a module for --sse-cases, or its
# conftest). They do nothing on the wire beyond the runner's healthz, so the runs stay short.
OWN_CASES = '''
import trio
from harness import HarnessError, Skip, case

state = {"running": 0, "made": 0, "overlapped": False}


async def busy():
    state["running"] += 1
    try:
        await trio.sleep(0.3)
    finally:
        state["running"] -= 1


@case("98.1", "runs alone", exclusive=True)
async def alone(ctx, judge):
    judge.expect(state["running"] == 0, "another case ran beside an exclusive one", 0, state["running"])
    await busy()


@case("99.1", "always fails")
async def fails(ctx, judge):
    await busy()
    judge.fail("the rule was broken", expected=1, observed=2)


@case("99.2", "legal but unwise")
async def unwise(ctx, judge):
    await busy()
    judge.non_strict("against the contract's advice", expected="a", observed="b")


@case("99.3", "only measures")
async def measures(ctx, judge):
    judge.informational = True
    judge.evidence["figure"] = 1.5


@case("99.4", "the harness's own trouble")
async def trouble(ctx, judge):
    raise HarnessError("our own trouble")


@case("99.5", "does not apply")
async def not_here(ctx, judge):
    raise Skip("not for this target")


async def make():
    state["made"] += 1
    await trio.sleep(0.2)
    return state["made"]


@case("99.6", "shares a recording, first")
async def shares_first(ctx, judge):
    await busy()
    judge.expect(await ctx.shared("once", make) == 1, "made twice")


@case("99.7", "shares a recording, second")
async def shares_second(ctx, judge):
    await busy()
    judge.expect(await ctx.shared("once", make) == 1, "made twice")


@case("99.8", "must be deselected")
async def deselected(ctx, judge):
    judge.fail("ran although -k left it out")


@case("99.10", "takes long")
async def slow(ctx, judge):
    await trio.sleep(30)
'''

FAST = ["-p", "no:cacheprovider", "-p", "no:locust"]


def _junit(path) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in ET.parse(path).getroot().iter("testcase")}


def test_suite_cases_are_items_with_the_runners_outcomes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(own_cases=OWN_CASES)
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        *FAST, "--sse-cases", "own_cases.py", "--sse-only", "98.*", "--sse-only", "99.*", "-k", "not 99.8 and not 99.10", "-v",
        f"--junitxml={junit}", "--sse-report-dir", "reports", timeout=60)
    result.assert_outcomes(passed=5, failed=1, errors=1, skipped=1, deselected=2)
    out = result.stdout.str()
    # Node ids carry the case id; notes for passes that are not plain passes.
    result.stdout.fnmatch_lines([
        "sse-suite::98.1 PASSED*", "sse-suite::99.1 FAILED*", "sse-suite::99.2 PASSED (non-strict)*",
        "sse-suite::99.3 PASSED (info)*", "sse-suite::99.4 ERROR*", "sse-suite::99.5 SKIPPED*",
        "sse-suite::99.6 PASSED*", "sse-suite::99.7 PASSED*"])
    result.stdout.fnmatch_lines(["*99.1 fail: always fails*", "*[[]fail[]] the rule was broken: expected 1, observed 2*"])
    result.stdout.fnmatch_lines(["*99.4 error (the harness's own trouble): our own trouble*"])
    result.stdout.fnmatch_lines(["*= sse-harness =*", "*embedded reference server: pid * (stopped)",
                                 "99.2 non-strict: against the contract's advice", "99.3 info: measured, no verdict",
                                 "suite run: 8 cases against http://127.0.0.1:*"])
    assert "ran although -k left it out" not in out
    cases = _junit(junit)
    assert cases["99.1"].find("failure") is not None
    assert cases["99.4"].find("error") is not None
    assert cases["99.5"].find("skipped") is not None
    props = {p.get("name"): p.get("value") for p in cases["99.2"].iter("property")}
    assert props["sse_outcome"] == "non-strict" and props["sse_note"] == "against the contract's advice"
    assert props["sse_origin"] == "file own_cases.py"
    assert cases["99.2"].find("failure") is None
    # The harness's own reports of the same run.
    written = json.loads((pytester.path / "reports" / "report.json").read_text())
    assert [(c["id"], c["outcome"]) for c in written["cases"]] == [
        ("98.1", "pass"), ("99.1", "fail"), ("99.2", "non-strict"), ("99.3", "info"), ("99.4", "error"),
        ("99.5", "skip"), ("99.6", "pass"), ("99.7", "pass")]


def test_strict_a_baseline_and_an_early_end(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(OWN_CASES)  # registered by the team's conftest this time
    pytester.makefile(".toml", baseline='''
        [[expected]]
        case = "99.1"
        reason = "known, fixed next sprint"

        [[expected]]
        case = "99.6"
        reason = "fixed since"
    ''')
    result = pytester.runpytest_subprocess(*FAST, "--sse-only", "99.1", "--sse-only", "99.2", "--sse-only", "99.3",
                                           "--sse-only", "99.6", "--sse-only", "99.10", "--sse-strict",
                                           "--sse-baseline", "baseline.toml", "--maxfail", "2", "-rfx", timeout=60)
    result.assert_outcomes(passed=1, failed=2, xfailed=1)
    result.stdout.fnmatch_lines(["99.2 non-strict: legal but unwise"])  # strict: a failure
    result.stdout.fnmatch_lines(["99.6 is listed in the baseline but listed as fail, now pass: remove it from the baseline"])
    result.stdout.fnmatch_lines(["XFAIL sse-suite::99.1 - 99.1 fail, expected by the baseline: known, fixed next sprint"])
    # --maxfail ended the session before 99.10's item: its 30 s case was cancelled, not awaited.
    result.stdout.fnmatch_lines(["suite run incomplete: the suite run was stopped"])


def test_selection_by_pattern_keyword_and_marker_without_running(pytester: pytest.Pytester) -> None:
    # Collection only, so in this process (the cases were loaded at import, see above).
    result = pytester.runpytest_inprocess("--co", "-q", "--sse-suite", "--sse-only", "4.*", "-k", "not 4.3")
    result.stdout.fnmatch_lines(["sse-suite::4.1", "sse-suite::4.2", "sse-suite::4.4"])
    assert "sse-suite::4.3" not in result.stdout.str() and "sse-suite::5.1" not in result.stdout.str()
    result = pytester.runpytest_inprocess("--co", "-q", "--sse-suite", "-m", "sse_exclusive",
                                          "-k", "queue")  # words of a title match too
    lines = [line for line in result.stdout.lines if line.startswith("sse-suite::")]
    assert lines == ["sse-suite::5.2", "sse-suite::6.6"], result.stdout.str()
    result = pytester.runpytest_inprocess("--co", "--sse-only", "no-such-case")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no case matches --sse-only*"])


def test_a_teams_own_tests_use_the_fixtures_beside_the_suite(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_team='''
        async def test_job_completes(sse_api, sse_record, sse_target):
            reply = await sse_api.create(stageSeconds={s: 0.05 for s in sse_target.stages})
            assert reply.status == 202, reply.describe()
            trace = await sse_record.follow(reply.json["jobId"])
            assert [e.type for e in trace.events][-1] == "job-completed"

        async def test_a_cut_is_resumed(sse_api, sse_record, sse_proxy, sse_target):
            reply = await sse_api.create(stageSeconds={s: 0.05 for s in sse_target.stages})
            sse_proxy.cut_after(1500)  # bytes: a few events into the first connection
            trace = await sse_record.follow(reply.json["jobId"], via=sse_proxy)
            sent = [s.last_event_id_sent for s in trace.segments]
            assert len(sent) >= 2 and sent[1], sent
            ids = [int(e.id) for e in trace.events]
            assert ids == list(range(1, len(ids) + 1))
    ''')
    # The team's own package of cases, found through its entry point as if pip had installed
    # it: its metadata lies on sys.path (the run's working directory).
    package = pytester.mkpydir("team_cases")
    (package / "__init__.py").write_text(
        "from harness import case\n\n"
        "@case('100.2', 'our healthz names the service')\n"
        "async def named(ctx, judge):\n"
        "    judge.expect(ctx.health.get('status') == 'ok', 'healthz has no status ok', 'ok', ctx.health)\n")
    dist = pytester.mkdir("team_cases-0.1.dist-info")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: team-cases\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sse_harness.cases]\nteam = team_cases\n")
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(*FAST, "--sse-only", "1.1", "--sse-only", "1.3", "--sse-only", "100.*",
                                           "-v", f"--junitxml={junit}", timeout=90)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["sse-suite::100.2 PASSED*"])
    props = {p.get("name"): p.get("value") for p in _junit(junit)["100.2"].iter("property")}
    assert props["sse_origin"] == "team-cases (entry point team)"
    # One server for the session, shared by the team's tests and the suite.
    assert result.stdout.str().count("embedded reference server: pid") == 1
    result.stdout.fnmatch_lines(["suite run: 3 cases against http://127.0.0.1:*"])


def test_an_unreachable_target_is_an_error_not_a_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_team='''
        import pytest

        @pytest.mark.trio
        async def test_health(sse_api):
            await sse_api.healthz()
    ''')
    # Port 9 (discard) on this host: nothing listens there.
    result = pytester.runpytest_subprocess(*FAST, "--sse-target", "http://127.0.0.1:9", "--sse-only", "1.1",
                                           timeout=60)
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["*1.1 error (the harness's own trouble): *target unreachable*"])
    result.stdout.fnmatch_lines(["the run could not be done: target unreachable at http://127.0.0.1:9/*"])
    result = pytester.runpytest_subprocess(*FAST, "--sse-profile", "missing.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sse-harness: bad profile: cannot read profile missing.toml*"])
