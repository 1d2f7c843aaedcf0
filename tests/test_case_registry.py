"""Cases of one's own: ids validated and ordered, duplicates refused, cases found through the
entry point and --cases, marked with their origin in list, run and the reports; the baseline."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from harness import Outcome, load_profile
from harness._baseline import BaselineError, apply_baseline, load_baseline, write_baseline
from harness._outcomes import CaseResult
from harness._registry import Case, Registry, case_sort_key
from harness._reports import to_junit, to_markdown
from harness._runner import RunReport

SSE_HARNESS = str(ROOT / ".venv" / "bin" / "sse-harness") if (ROOT / ".venv").exists() else "sse-harness"


async def _nothing(ctx, judge):
    pass


def test_case_ids_are_validated_and_sorted_naturally():
    registry = Registry()
    for case_id in ("4.10", "10.1", "4.3b", "4.3", "4.3a", "4.2"):
        registry.add(Case(case_id, "t", (), _nothing, module="m"))
    assert [c.id for c in registry] == ["4.2", "4.3", "4.3a", "4.3b", "4.10", "10.1"]
    for bad in ("4", "4.3.1", "x.1", "4.3A", "4.-1", ""):
        with pytest.raises(ValueError, match="is not N.M"):
            registry.add(Case(bad, "t", (), _nothing))
    assert case_sort_key("4.3a") < case_sort_key("4.10")


def test_a_duplicate_id_is_refused_naming_both_modules():
    registry = Registry()
    registry.add(Case("100.1", "t", (), _nothing, module="first_pkg"))
    with pytest.raises(ValueError, match=r"duplicate case id 100.1: registered by first_pkg .* again by second_pkg"):
        registry.add(Case("100.1", "t", (), _nothing, module="second_pkg"))


def _fake_install(tmp_path):
    """The example package as an installed distribution (a dist-info with its entry point)."""
    shutil.copytree(ROOT / "examples" / "custom-cases" / "sse_example_cases", tmp_path / "sse_example_cases")
    info = tmp_path / "sse_harness_example_cases-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sse-harness-example-cases\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[sse_harness.cases]\nexample = sse_example_cases\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"}


def test_a_package_registered_by_entry_point_is_listed_with_its_origin(tmp_path):
    env = _fake_install(tmp_path)
    out = subprocess.run([SSE_HARNESS, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if "100.1" in line)
    assert "correlationId" in line and "sse-harness-example-cases (entry point example)" in line
    assert "built-in" in next(line for line in out.stdout.splitlines() if " 3.1 " in line)


def test_a_cases_file_and_a_broken_one(tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text("from harness import case\n\n@case('200.1', 'my rule')\nasync def rule(ctx, judge):\n    pass\n")
    out = subprocess.run([SSE_HARNESS, "list", "--cases", str(mine)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "200"})
    row = next((line for line in out.stdout.splitlines() if "200.1" in line), "")
    assert out.returncode == 0 and "my rule" in row and "file" in row, out.stdout + out.stderr
    clash = tmp_path / "clash.py"
    clash.write_text("from harness import case\n\n@case('3.1', 'again')\nasync def again(ctx, judge):\n    pass\n")
    out = subprocess.run([SSE_HARNESS, "list", "--cases", str(clash)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "duplicate case id 3.1" in out.stdout
    out = subprocess.run([SSE_HARNESS, "run", "--cases", "no_such_module_here", "--target", "http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cannot import it" in out.stdout


def test_a_case_of_ones_own_runs_and_is_reported_with_its_origin(tmp_path, reference_server):
    env = _fake_install(tmp_path)
    out = subprocess.run([SSE_HARNESS, "run", "--target", reference_server.base_url, "--only", "100.1", "--only", "1.1",
                          "--report-dir", str(tmp_path / "r")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    cases = {c["id"]: c for c in report["cases"]}
    assert cases["100.1"]["outcome"] == "pass" and cases["100.1"]["origin"].startswith("sse-harness-example-cases")
    assert cases["1.1"]["origin"] == "built-in"
    assert "sse-harness-example-cases" in (tmp_path / "r" / "report.md").read_text()


def _report(outcomes: dict[str, str]) -> RunReport:
    results = tuple(CaseResult(i, f"case {i}", (), Outcome(o), 1, (), {}, ()) for i, o in outcomes.items())
    return RunReport("http://t", "contract", "now", 1, results, {})


def _baseline(tmp_path, entries: str):
    path = tmp_path / "baseline.toml"
    path.write_text(entries)
    return load_baseline(path)


BASELINE = ('[[expected]]\ncase = "4.7"\noutcome = "fail"\nreason = "204 lands in v2"\n\n'
            '[[expected]]\ncase = "5.3"\noutcome = "non-strict"\nreason = "ping comments"\n\n'
            '[[expected]]\ncase = "6.9"\nreason = "409 lands in v2"\n')


def test_a_baseline_adopts_the_gate_and_only_shrinks(tmp_path):
    baseline = _baseline(tmp_path, BASELINE)
    today = {"3.1": "pass", "4.7": "fail", "5.3": "non-strict", "6.9": "fail"}
    adopted = apply_baseline(_report(today), baseline)
    assert adopted.exit_code() == 0 and adopted.exit_code(strict=True) == 0
    assert set(adopted.expected) == {"4.7", "5.3", "6.9"} and not adopted.stale
    assert _report(today).exit_code() == 1  # without the baseline the same run is red
    third = apply_baseline(_report({**today, "3.1": "fail"}), baseline)
    assert third.exit_code() == 1  # an unlisted failure fails as usual
    fixed = apply_baseline(_report({**today, "4.7": "pass"}), baseline)
    assert fixed.exit_code() == 1 and "remove it from the baseline" in fixed.stale["4.7"]
    erred = apply_baseline(_report({**today, "6.9": "error"}), baseline)
    assert erred.exit_code() == 2
    markdown, junit = to_markdown(adopted), to_junit(adopted).decode()
    assert "fail (expected: 204 lands in v2)" in markdown
    assert 'skipped message="expected failure (baseline): 204 lands in v2"' in junit
    assert "remove it from the baseline" in to_junit(fixed).decode()


def test_a_baseline_written_from_a_report_reads_back(tmp_path):
    report = {"cases": [{"id": "3.1", "outcome": "pass"}, {"id": "4.7", "outcome": "fail", "title": "204"},
                        {"id": "5.3", "outcome": "non-strict", "title": "words"}]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    out = subprocess.run([SSE_HARNESS, "baseline", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout == write_baseline(report)
    read = _baseline(tmp_path, out.stdout)
    assert {k: v[0] for k, v in read.items()} == {"4.7": "fail", "5.3": "non-strict"}


@pytest.mark.parametrize("text, message", [
    ('[[expected]]\ncase = "4.7"\noutcome = "pass"\n', "only fail or non-strict"),
    ('[[expected]]\ncase = "4.7"\n[[expected]]\ncase = "4.7"\n', "listed twice"),
    ('[[expected]]\ncase = "4.7"\nwhy = "x"\n', "unknown key"),
    ("expected = 3\n", r"only \[\[expected\]\]"),
    ("[[expected\n", "not valid TOML"),
])
def test_a_bad_baseline_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(BaselineError, match=message):
        _baseline(tmp_path, text)


def test_titles_and_profile_in_list(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text("[timing]\nterminal_close_seconds = 3\n")
    out = subprocess.run([SSE_HARNESS, "list", "--profile", str(profile)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "250"})
    assert "ends within 3 s" in out.stdout
    assert load_profile(profile).timing["terminal_close_seconds"] == 3


def test_the_same_module_imported_again_registers_once():
    registry = Registry()
    registry.add(Case("100.2", "t", (), _nothing, module="pkg"))
    registry.add(Case("100.2", "t", (), _nothing, module="pkg"))  # e.g. after sys.modules was reset
    assert [c.id for c in registry] == ["100.2"]
