"""Family 11 against the embedded reference server (restarted in place by the harness), the skip
where no restart is possible, and the profile's [restart] section."""

import time

import pytest

from harness import ProfileError, load_profile
from harness._restart import restart_for
from harness._runner import run_suite
from harness._server_process import server_process


async def test_embedded_reference_server_passes_family_11():
    async with server_process() as server:
        profile = load_profile(base_url=server.base_url)
        first_pid = server.pid
        started = time.monotonic()
        report = await run_suite(profile, only=["11"], restart=restart_for(profile, server))
        took = time.monotonic() - started
        assert server.pid != first_pid and server.process.returncode is None
    bad = {r.id: (r.outcome, r.reason, [f.message for f in r.findings][:2]) for r in report.results
           if r.outcome != "pass"}
    assert not bad, bad
    assert [r.id for r in report.results] == ["11.1", "11.2", "11.3", "11.4", "11.5"]
    print(f"\nfamily 11 against the embedded server: {took:.1f} s")


async def test_family_11_skips_with_a_reason_without_a_restart(reference_server):
    report = await run_suite(load_profile(base_url=reference_server.base_url), only=["11"])
    assert {r.outcome for r in report.results} == {"skip"}
    assert all("[restart] command" in r.reason for r in report.results)


def test_restart_section_of_a_profile(tmp_path):
    assert load_profile().restart_command == "" and restart_for(load_profile()) is None
    good = tmp_path / "good.toml"
    good.write_text('[restart]\ncommand = "systemctl restart my-sse --signal={signal}"\ntimeout_seconds = 12\n')
    profile = load_profile(good)
    assert profile.restart_command.endswith("{signal}") and profile.restart_timeout == 12.0
    assert restart_for(profile) is not None
    for text in ('[restart]\ncommand = 3\n', '[restart]\ntimeout_seconds = 0\n', '[restart]\nsignal = "x"\n'):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ProfileError, match="restart"):
            load_profile(bad)
