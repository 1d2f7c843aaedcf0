"""The whole suite against the reference server: every case passes; the reports are sound."""

import json
from xml.etree import ElementTree as ET

import pytest

from conftest import acceptable
from harness import load_profile
from harness._reports import write_reports
from harness._runner import run_suite


@pytest.mark.xdist_group("heavy")
async def test_reference_server_passes_every_case(reference_server, tmp_path):
    report = await run_suite(load_profile(base_url=reference_server.base_url), parallel=8)
    bad = {r.id: (r.outcome, r.reason, [f.message for f in r.findings][:3]) for r in report.results
           if not acceptable(r)}
    assert not bad, bad
    assert len(report.results) >= 50 and report.exit_code() == 0

    written = write_reports(report, tmp_path)
    data = json.loads(written["json"].read_text())
    assert data["schemaVersion"] == 1
    summary = data["summary"]
    assert summary["total"] == len(report.results) and summary["failed"] == summary["errors"] == 0
    assert summary["passed"] + summary["nonStrict"] + summary["skipped"] == summary["total"]
    assert set(data["cases"][0]) >= {"id", "title", "invariants", "outcome", "durationMs", "findings", "evidence",
                                     "figures", "origin"}
    by_id = {c["id"]: c for c in data["cases"]}
    assert by_id["6.1"]["figures"]["cancel latency"]["value"] == by_id["6.1"]["evidence"]["cancelLatencyMs"]
    assert set(by_id["2.3"]["figures"]) == {"lateness p50", "lateness p95", "lateness max"}
    suite = ET.parse(written["junit"]).getroot()
    assert suite.get("tests") == str(len(report.results)) and suite.get("failures") == "0"
    page = written["html"].read_text()
    assert "<svg" in page and 'src="http' not in page and "<link" not in page  # self-contained
    assert "| 3.1 |" in written["md"].read_text()
