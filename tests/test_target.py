"""harness._target: one set-up of the target for every command (profile, whose server, same host,
effective timing, restart hook, browser), and the one pass/fail rule (harness._outcomes.gate)
that the runner, the diff and the baseline apply alike."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import trio

from conftest import ROOT
from harness import load_profile
from harness._baseline import apply_baseline
from harness._diff import fails_gate
from harness._errors import ProfileError, UsageError
from harness._outcomes import OUTCOMES, CaseResult, Outcome, gate
from harness._runner import RunReport
from harness._target import (KEEPALIVE_SECONDS, REFERENCE, effective_timing, is_loopback, is_same_host, plan_target,
                             resolve_profile,
                             start_target, users_target)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- whose server ------------------------------------------------------------------------------------

def test_the_target_is_named_by_the_url_else_the_profile_else_it_is_the_embedded_server(tmp_path):
    named = write(tmp_path, "named.toml", '[target]\nbase_url = "http://127.0.0.1:9011"\n')
    unnamed = write(tmp_path, "lib.toml", '[timing]\nkeepalive_seconds = 2\n')
    stream = write(tmp_path, "stream.toml", '[stream]\npath = "/events"\n')
    assert plan_target().embedded and plan_target(REFERENCE).embedded
    assert plan_target(REFERENCE).profile.name == "contract"
    assert not plan_target(None, "http://127.0.0.1:9012").embedded
    assert plan_target(None, "http://127.0.0.1:9012").profile.base_url == "http://127.0.0.1:9012"
    assert not plan_target(named).embedded and plan_target(named).profile.base_url == "http://127.0.0.1:9011"
    assert plan_target(unnamed).embedded and plan_target(unnamed).profile.timing["keepalive_seconds"] == 2
    assert plan_target(stream).embedded  # the same rule for a stream profile: nothing names its server
    assert plan_target(named, "http://127.0.0.1:9013").profile.base_url == "http://127.0.0.1:9013"


def test_a_bad_profile_or_slack_is_the_users_mistake(tmp_path):
    with pytest.raises(ProfileError, match="cannot read profile"):
        plan_target(str(tmp_path / "missing.toml"))
    with pytest.raises(UsageError, match="--timing-slack must be a factor >= 1"):
        plan_target(timing_slack=0.5)
    assert isinstance(ProfileError("x"), ValueError)  # callers that catch ValueError still do


def test_the_local_host_rule():
    for url in ("http://127.0.0.1:8080", "http://localhost/x", "http://[::1]:9000", "http://127.0.0.2:80"):
        assert is_loopback(url) and is_same_host(url), url
    for url in ("http://example.com:8080", "http://10.0.0.5:80", "https://[2001:db8::1]/"):
        assert not is_loopback(url) and not is_same_host(url), url
    assert is_same_host("http://example.com", "yes") and not is_same_host("http://127.0.0.1", "no")
    assert is_same_host("http://example.com", True)


def test_a_users_target_restarts_by_its_command_only_and_keeps_a_browser_named_for_the_cases(tmp_path):
    restartable = write(tmp_path, "r.toml", '[target]\nbase_url = "http://127.0.0.1:9014"\n'
                                            '[restart]\ncommand = "true {signal}"\n')
    target = users_target(plan_target(restartable, browser=str(tmp_path / "no-such-browser")))
    assert target.restart is not None and target.server is None and target.target_pid is None
    assert target.same_host and target.browser == str(tmp_path / "no-such-browser")  # the cases say why not
    assert users_target(plan_target(None, "http://example.com:1")).restart is None
    assert target.suite_options() == {"same_host": True, "restart": target.restart, "browser": target.browser,
                                      "target_pid": None}
    with pytest.raises(ValueError):
        users_target(plan_target())


async def test_the_embedded_server_is_started_and_stopped_by_its_pid():
    async with start_target(plan_target(same_host="no")) as target:
        pid = target.target_pid
        assert target.embedded and pid and target.restart is not None and not target.same_host
        assert target.base_url.startswith("http://127.0.0.1:") and target.profile.base_url == target.base_url
    with trio.fail_after(5):
        while target.server.process.returncode is None:
            await trio.sleep(0.05)


# -- the effective timing: one keep-alive fallback ---------------------------------------------------

def test_the_keepalive_falls_back_to_the_contracts_default_for_the_suite_and_for_load(tmp_path):
    contract = load_profile()
    assert KEEPALIVE_SECONDS == 10.0  # shared/contract.md: keepaliveSeconds (default 10)
    assert effective_timing(contract, {}).keepalive == KEEPALIVE_SECONDS
    assert effective_timing(contract, {"keepaliveSeconds": 2}).keepalive == 2.0
    assert effective_timing(contract, {"keepaliveSeconds": True}).keepalive == KEEPALIVE_SECONDS
    own = load_profile(write(tmp_path, "k.toml", "[timing]\nkeepalive_seconds = 3\ncancel_deadline_ms = 500\n"))
    assert effective_timing(own, {"keepaliveSeconds": 2}).keepalive == 3.0
    assert effective_timing(own, {}).cancel_deadline == 0.5
    assert effective_timing(contract, {}).cancel_deadline == 1.0
    # The load user (gevent, its own process) judges silences by the same fallback.
    code = ("from harness.load import LoadPlan; from harness import load_profile\n"
            "p = load_profile(); t = p.timing\n"
            "plan = LoadPlan.from_options(None, p, {})\n"
            "print(plan.keepalive_limit - max(t['tolerance_fraction'] * 10, t['tolerance_min_seconds']), "
            "plan.cancel_deadline)")
    assert _in_a_load_process(code).split() == ["10.0", "1.0"]


def _in_a_load_process(code: str) -> str:
    """What ``code`` prints, run in a process of its own (harness.load imports locust: gevent)."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_load_users_judge_timings_by_the_suites_rules_timing_slack_included():
    """--timing-slack (--sse-timing-slack) widens the load users' keep-alive, close and cancel
    limits exactly as it widens the cases' (harness._target.Timing), for both kinds of profile."""
    suite = effective_timing(load_profile().with_timing_slack(2.5), {"keepaliveSeconds": 4, "cancelDeadlineMs": 800})
    code = ("import json, types; from harness.load import LoadPlan; from harness._target import resolve_profile\n"
            "options = types.SimpleNamespace(sse_timing_slack=2.5)\n"
            "plans = [LoadPlan.from_options(options, resolve_profile(None, 'http://127.0.0.1:9', 2.5),"
            " {'keepaliveSeconds': 4, 'cancelDeadlineMs': 800}),\n"
            "         LoadPlan.from_options(options, resolve_profile('examples/real/sse-starlette/profile.toml', None, 2.5), {})]\n"
            "print(json.dumps([[p.keepalive_limit, p.close_within, p.cancel_limit] for p in plans]))")
    contract, stream = json.loads(_in_a_load_process(code).strip().splitlines()[-1])
    assert contract == [4 + suite.tolerance(4), suite.close_within, suite.cancel_limit]
    assert suite.tolerance(4) == 2.5 * max(0.2 * 4, 0.25) and suite.close_within == 2.5 * 1.0  # the contract's [timing]
    assert suite.cancel_limit == 0.8 + 0.25
    claimed = resolve_profile(ROOT / "examples/real/sse-starlette/profile.toml", None, 2.5)
    keepalive = claimed.claims.keepalive_seconds
    assert keepalive and stream[:2] == [keepalive + effective_timing(claimed).tolerance(keepalive),
                                        effective_timing(claimed).close_within]


# -- one pass/fail rule ------------------------------------------------------------------------------

def _result(outcome: Outcome) -> CaseResult:
    return CaseResult("1.1", "t", (), outcome, 1, (), {}, ())


@pytest.mark.parametrize("outcome, strict, listed", [
    (o, s, listed) for o, s, listed in itertools.product(OUTCOMES, (False, True), (None, Outcome.FAIL,
                                                                                    Outcome.NON_STRICT))])
def test_the_runner_the_baseline_and_the_diff_gate_alike(outcome, strict, listed):
    report = RunReport("t", "p", "", 0, (_result(outcome),), {})
    if listed is not None:
        report = apply_baseline(report, {"1.1": (listed, "known")})
    expected, stale = "1.1" in report.expected, "1.1" in report.stale
    verdict = gate(outcome, strict=strict, expected=expected, stale=stale)
    assert report.exit_code(strict) == verdict
    case = {"id": "1.1", "outcome": str(outcome), **({"expected": "known"} if expected else {}),
            **({"stale": report.stale["1.1"]} if stale else {})}
    assert fails_gate(case, strict) == (verdict != 0)


def test_the_gate_rule_itself():
    assert [gate(o) for o in OUTCOMES] == [0 if o != Outcome.FAIL and o != Outcome.ERROR else 1 if o == Outcome.FAIL
                                          else 2 for o in OUTCOMES]
    assert gate(Outcome.NON_STRICT, strict=True) == 1 and gate(Outcome.NON_STRICT) == 0
    assert gate(Outcome.FAIL, expected=True) == 0 and gate(Outcome.PASS, stale=True) == 1
    assert gate(Outcome.ERROR, expected=True) == 2
    assert RunReport("t", "p", "", 0, (_result(Outcome.PASS),), {}, error="no target").exit_code() == 2
