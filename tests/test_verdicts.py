"""Whose fault it is: what the target failed to deliver is a fail, the harness's own trouble an
error, and the case's safety limit is reported as a harness defect (run_case, no server needed)."""

import dataclasses

import httpx
import trio

from harness import load_profile
from scenarios._core import Case, Context, run_case


async def _closed_port() -> int:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _profile(tmp_path, port: int, **timing):
    lines = "\n".join(f"{k} = {v}" for k, v in timing.items())
    path = tmp_path / "p.toml"
    path.write_text(f"[target]\nbase_url = \"http://127.0.0.1:{port}\"\n[timing]\n{lines}\n")
    return load_profile(path)


async def _run(case_: Case, profile) -> object:
    async with httpx.AsyncClient() as http:
        return await run_case(case_, Context(profile, http, same_host=True))


async def test_a_refused_rest_call_is_the_targets_fail(tmp_path):
    async def body(ctx, judge):
        await ctx.api.snapshot("abc")

    result = await _run(Case("99.1", "t", (), body), _profile(tmp_path, await _closed_port()))
    assert result.outcome == "fail", result
    assert "transport level" in result.findings[0].message and "/api/jobs/abc" in result.findings[0].message


async def test_a_request_the_harness_could_not_make_is_an_error(tmp_path):
    async def body(ctx, judge):
        await ctx.http.get("ftp://127.0.0.1/nothing")

    result = await _run(Case("99.2", "t", (), body), _profile(tmp_path, await _closed_port()))
    assert result.outcome == "error" and "could not make its request" in result.reason


async def test_a_target_fault_inside_a_nursery_is_still_a_fail(tmp_path):
    from scenarios._core import TargetFault

    async def body(ctx, judge):
        async with trio.open_nursery():
            raise TargetFault("the stream ended early", "a terminal event", "server-closed")

    result = await _run(Case("99.3", "t", (), body), _profile(tmp_path, await _closed_port()))
    assert result.outcome == "fail"
    assert (result.findings[0].expected, result.findings[0].observed) == ("a terminal event", "server-closed")


async def test_the_safety_limit_is_reported_as_a_harness_defect(tmp_path):
    async def body(ctx, judge):
        judge.step("waiting on something unbounded")
        await trio.sleep(30)

    profile = _profile(tmp_path, await _closed_port(), job_timeout_seconds=0.2)
    result = await _run(Case("99.4", "t", (), body, timeout=0.3), profile)
    assert result.outcome == "error"
    assert "harness defect" in result.reason and "waiting on something unbounded" in result.reason


async def test_titles_show_the_values_in_force(tmp_path):
    import scenarios

    profile = _profile(tmp_path, 1, terminal_close_seconds=2.5, progress_interval_seconds=0.25)
    by_id = {c.id: c for c in scenarios.CASES}
    assert by_id["3.4"].title_for(profile).endswith("ends within 2.5 s")
    assert "every 250 ms" in by_id["3.5"].title_for(profile)
    assert "within 1 s" in by_id["3.4"].title_for(load_profile())
    assert dataclasses.replace(by_id["3.4"], title="{nonsense}").title_for(profile) == "{nonsense}"
