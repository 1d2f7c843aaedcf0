"""A stream profile that does not fit its stream (a pointer that matches nothing in the first
events, ids claimed where none come) is the user's error naming the key, exit 2, before any
verdict; one that fits runs."""

from __future__ import annotations

import json
import subprocess

import pytest

from harness import load_profile
from harness._preflight import check_profile_against
from tracebuild import good_job, segment

from conftest import ROOT, RunningServer, reference_args


def write_profile(tmp_path, meaning: str, claims: str = "ids = true") -> str:
    path = tmp_path / "p.toml"
    path.write_text(f"""
[stream]
path = "/api/jobs/{{job}}/events"

[[setup]]
path = "/api/jobs"
json = {{ topic = "preflight", scenes = 1 }}
capture = {{ job = "json:/jobId" }}

[meaning]
{meaning}

[claims]
{claims}
""")
    return str(path)


def test_pointers_and_claims_checked_against_the_first_events(tmp_path):
    events = segment([(i * 0.1, b) for i, b in enumerate(good_job())]).events
    fits = load_profile(write_profile(tmp_path, 'progress = "data:/percent"\ntimestamp = "data:/ts"\nend_types = ["job-completed"]'))
    assert check_profile_against(fits, events) == []
    wrong = load_profile(write_profile(tmp_path, 'progress = "data:/pct"\njob_id = "data:/job"'))
    problems = check_profile_against(wrong, events)
    assert len(problems) == 2
    assert any("[meaning].progress = 'data:/pct' matches nothing" in p for p in problems)
    assert any("[meaning].job_id = 'data:/job' matches nothing" in p for p in problems)
    text_ts = load_profile(write_profile(tmp_path, 'timestamp = "data:/message"\ntimestamp_format = "epoch_ms"'))
    assert "holds no epoch_ms time" in check_profile_against(text_ts, events)[0]
    no_ids = segment([(0.0, b"data: x\n\n"), (0.1, b"data: y\n\n")]).events
    assert any("[claims].ids = true, but none of" in p for p in check_profile_against(fits, no_ids))
    assert check_profile_against(wrong, []) == []  # a quiet channel: nothing to say


def test_a_profile_that_does_not_fit_is_exit_2_naming_the_key(tmp_path):
    server = RunningServer(reference_args())
    try:
        bad = write_profile(tmp_path, 'progress = "data:/nowhere"\nend_types = ["job-completed"]')
        done = subprocess.run([str(ROOT / ".venv" / "bin" / "sse-harness"), "run", "--target", server.base_url, "--profile",
                               bad, "--only", "12.1", "--report-dir", str(tmp_path / "r"), "--format", "json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        report = json.loads((tmp_path / "r" / "report.json").read_text())
        assert report["error"].startswith("bad profile: ") and "[meaning].progress = 'data:/nowhere'" in report["error"]
        assert [c["outcome"] for c in report["cases"]] == ["error"]  # not judged: no verdict on a bad profile
    finally:
        server.stop()


async def test_a_claimed_health_endpoint_that_is_absent_is_a_bad_profile(tmp_path):
    """[claims].health names a path the server does not have: the run is not done (exit 2)."""
    from harness._runner import run_suite

    server = RunningServer(reference_args())
    try:
        path = write_profile(tmp_path, 'end_types = ["job-completed"]', 'ids = true\nhealth = "/no/such/health"')
        report = await run_suite(load_profile(path, base_url=server.base_url), only=["12.1"])
        assert report.exit_code() == 2
        assert report.error.startswith("bad profile: [claims].health = '/no/such/health' is claimed, but")
        good = write_profile(tmp_path, 'end_types = ["job-completed"]', 'ids = true\nhealth = "/api/healthz"')
        assert not (await run_suite(load_profile(good, base_url=server.base_url), only=["12.1"])).error
    finally:
        server.stop()
