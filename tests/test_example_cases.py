"""The example package of a team's own cases (examples/custom-cases): one case of each kind, written
with public names only, passes the reference server and catches a server broken its way."""

import os
import subprocess
import sys

import httpx
import pytest

from conftest import ROOT
from harness import ApiClient, load_profile
from harness._registry import REGISTRY, load_cases
from harness._restart import restart_for
from harness._runner import run_suite
from test_restart_faults import RestartableVariant
from test_variants import variant

PACKAGE = ROOT / "examples" / "custom-cases"
SSE_HARNESS = str(ROOT / ".venv" / "bin" / "sse-harness") if (ROOT / ".venv").exists() else "sse-harness"


@pytest.fixture
def example_cases():
    """The package's cases, loaded for one test: the registry is the process's, shared with every
    other test this worker runs, so they go again afterwards (with the modules, so that the next
    load registers them afresh)."""
    sys.path.insert(0, str(PACKAGE))
    try:
        yield [c for c in load_cases(["sse_example_cases"]) if c.id.startswith("100.")]
    finally:
        sys.path.remove(str(PACKAGE))
        REGISTRY.unregister("sse_example_cases")
        for name in [m for m in sys.modules if m.split(".")[0] == "sse_example_cases"]:
            del sys.modules[name]


def test_the_example_cases_leave_the_registry_as_they_found_it(example_cases):
    assert example_cases and all(c in REGISTRY for c in example_cases)
    REGISTRY.unregister("sse_example_cases")
    assert not any(c.id.startswith("100.") for c in REGISTRY)


def test_the_examples_are_one_case_of_each_kind(example_cases):
    assert [c.id for c in example_cases] == ["100.1", "100.2", "100.3", "100.4"]


def test_every_example_case_passes_the_embedded_reference_server(tmp_path):
    """As a team runs them: `sse-harness run --cases` on the embedded server (which it can restart)."""
    out = subprocess.run([SSE_HARNESS, "run", "--cases", "sse_example_cases", "--only", "100.*", "--report-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(PACKAGE), "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "4 passed, 0 failed" in out.stdout, out.stdout[-3000:]


async def _outcome(server, case_id: str, example_cases, restart=None):
    profile = load_profile(base_url=server.base_url)
    report = await run_suite(profile, only=[case_id], cases=example_cases, restart=restart)
    (result,) = report.results
    return result


@pytest.mark.parametrize("fault,case_id", [("cross-job-leak", "100.1"), ("lei-ignored", "100.2"), ("lei-ignored", "100.4")])
async def test_an_example_case_catches_a_server_broken_its_way(fault, case_id, example_cases):
    server = variant(fault)
    try:
        if fault == "cross-job-leak":  # it leaks another job's latest event into a stream: make one
            async with httpx.AsyncClient() as http:
                assert (await ApiClient(load_profile(base_url=server.base_url), http).create()).status == 202
        result = await _outcome(server, case_id, example_cases)
    finally:
        server.stop()
    assert result.outcome == "fail", (result.outcome, result.reason, [f.message for f in result.findings])


async def test_the_restart_example_catches_a_server_that_forgets_finished_jobs(example_cases):
    server = RestartableVariant("restart-loses-history")
    try:
        profile = load_profile(base_url=server.base_url)
        profile = profile.__class__(**{**profile.__dict__, "restart_command": server.restart_command(),
                                       "restart_timeout": 30.0})
        report = await run_suite(profile, only=["100.3"], cases=example_cases, restart=restart_for(profile))
    finally:
        server.stop()
    (result,) = report.results
    assert result.outcome == "fail", (result.outcome, result.reason, [f.message for f in result.findings])
    assert any("missing" in f.message for f in result.findings), [f.message for f in result.findings]
