"""Facing a server that is down, sends garbage or closes early, the harness records `error`
outcomes with the reason and exits 2; one that answers healthz and then hangs is judged (its
fail, exit 1); every report is written either way."""

import functools
import json

import trio

from harness import load_profile
from harness._cli import main
from harness._reports import write_reports
from harness._runner import run_suite


def test_unreachable_target_exits_2_with_a_report(tmp_path):
    code = main(["run", "--target", "http://127.0.0.1:9", "--report-dir", str(tmp_path), "--only", "1"])
    assert code == 2
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["error"] and "unreachable" in data["error"]
    assert {c["outcome"] for c in data["cases"]} == {"error"}
    assert (tmp_path / "junit.xml").exists() and (tmp_path / "report.html").exists()


def test_bad_profile_exits_2(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[paths]\nnope = '/x'\n")
    assert main(["run", "--target", "http://127.0.0.1:9", "--profile", str(bad), "--report-dir", str(tmp_path)]) == 2


async def _garbage(stream):
    await stream.receive_some(4096)
    await stream.send_all(b"\x00\xffnot http at all\r\n\r\n" * 10)
    await stream.aclose()


async def _closes_early(stream):
    await stream.receive_some(4096)
    await stream.aclose()


async def _healthy_then_hangs(stream):
    request = await stream.receive_some(4096)
    if b"/api/healthz" in request:
        body = b'{"status":"ok","version":"x","keepaliveSeconds":1,"retryMs":100,"cancelDeadlineMs":1000}'
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                              b"Connection: close\r\n\r\n%s" % (len(body), body))
        return
    await trio.sleep(30)  # accepts and never answers


async def _judge(nursery, handler, only, tmp_path):
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    report = await run_suite(load_profile(base_url=f"http://127.0.0.1:{port}"), only=only)
    written = write_reports(report, tmp_path)
    return report, written


async def test_garbage_and_early_close_are_errors_not_crashes(nursery, tmp_path):
    for handler in (_garbage, _closes_early):
        report, written = await _judge(nursery, handler, ["1.1", "9.1"], tmp_path)
        assert report.exit_code() == 2
        data = json.loads(written["json"].read_text())
        assert data["error"] or all(c["outcome"] == "error" and c["reason"] for c in data["cases"])


async def test_a_hanging_server_is_its_fail_within_the_timeouts(nursery, tmp_path):
    """It answered healthz, then accepted and never answered: the target owed an answer, so
    each case fails (a finding naming the request and the timeout), never a harness error."""
    with trio.fail_after(60):
        report, written = await _judge(nursery, _healthy_then_hangs, ["1.3", "3.1"], tmp_path)
    outcomes = {r.id: (r.outcome, [f.message for f in r.findings]) for r in report.results}
    assert all(outcome == "fail" for outcome, _ in outcomes.values()), outcomes
    assert all("transport level" in messages[0] and "Timeout" in messages[0] for _, messages in outcomes.values())
    assert report.exit_code() == 1 and written["html"].exists()
