"""`sse-harness diff` on hand-built report.json files: outcomes, cases, figures, bad input."""

from __future__ import annotations

import copy
import json

import pytest

from harness._cli import main
from harness._diff import DiffError, diff_reports, id_key, load_report, to_markdown


def figures(**named: tuple[float, str, float]) -> dict:
    """report.json's per-case figures (what the case declared with harness.Measure)."""
    return {name.replace("_", " "): {"value": value, "unit": unit, "floor": floor}
            for name, (value, unit, floor) in named.items()}


def case(case_id: str, outcome: str = "pass", figures: dict | None = None, message: str = "") -> dict:
    return {"id": case_id, "title": f"title of {case_id}", "invariants": [], "outcome": outcome, "durationMs": 10,
            "reason": message if outcome in ("error", "skip") else None, "steps": [],
            "findings": [{"message": message, "severity": outcome}] if message and outcome not in ("error", "skip") else [],
            "evidence": {}, "figures": figures or {}}


def lateness(p50: float, p95: float, top: float) -> dict:
    return figures(lateness_p50=(p50, "ms", 5.0), lateness_p95=(p95, "ms", 5.0), lateness_max=(top, "ms", 10.0))


def spacing(top: float) -> dict:
    return figures(**{"keep-alive_spacing_max": (top, "s", 0.05)})


def latency(ms: float) -> dict:
    return figures(cancel_latency=(ms, "ms", 5.0))


def report(*cases: dict, duration_ms: int = 20_000, error: str | None = None, target: str = "http://127.0.0.1:8080") -> dict:
    return {"schemaVersion": 1, "target": target, "profile": "contract", "startedAt": "2026-11-25T00:00:00.000Z",
            "durationMs": duration_ms, "summary": {}, "error": error, "cases": list(cases), "environment": {}}


def write(tmp_path, name: str, data: dict):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "report.json").write_text(json.dumps(data))
    return directory


OLD = report(
    case("1.1"), case("2.3", figures=lateness(1.2, 9.0, 12.0)),
    case("4.3"), case("4.10", "fail", message="ids repeat"), case("5.1", figures=spacing(1.01)),
    case("5.3"), case("6.1", figures=latency(6.0)), case("6.2", "non-strict", message="late"),
    case("7.1", "skip", message="no knobs"),
)


def new_run(**changes) -> dict:
    """OLD with some cases' outcomes or evidence replaced."""
    data = copy.deepcopy(OLD)
    for c in data["cases"]:
        for key, value in changes.get(c["id"].replace(".", "_"), {}).items():
            c[key] = value
    return data


def test_regressions_come_first_then_other_changes_then_fixes_each_in_case_order() -> None:
    new = new_run(**{"4_10": {"outcome": "pass", "findings": []},          # fixed
                     "4_3": {"outcome": "error", "reason": "our timeout"},  # regression
                     "1_1": {"outcome": "fail", "findings": [{"message": "healthz said 500"}]},  # regression
                     "7_1": {"outcome": "pass"},                            # changed (skip -> pass)
                     "6_2": {"outcome": "pass"}})                           # changed (non-strict -> pass)
    diff = diff_reports(OLD, new)
    assert [(c.case_id, c.kind) for c in diff.outcomes] == [
        ("1.1", "regression"), ("4.3", "regression"), ("6.2", "changed"), ("7.1", "changed"), ("4.10", "fixed")]
    assert diff.outcomes[0].finding == "healthz said 500" and diff.outcomes[1].finding == "our timeout"
    assert diff.exit_code() == 1
    assert diff_reports(OLD, new_run(**{"4_10": {"outcome": "pass"}})).exit_code() == 0


def test_non_strict_is_a_regression_only_when_strict() -> None:
    new = new_run(**{"5_3": {"outcome": "non-strict"}})
    assert [c.kind for c in diff_reports(OLD, new).outcomes] == ["changed"]
    assert [c.kind for c in diff_reports(OLD, new, strict=True).outcomes] == ["regression"]


def test_the_baseline_counts_as_the_gate_counts_it() -> None:
    old = new_run(**{"4_10": {"expected": "known: ids repeat after a restart"}})
    new = new_run(**{"1_1": {"outcome": "fail", "expected": "listed since"},   # expected: not a regression
                     "4_10": {"outcome": "pass", "stale": "pass"},            # stale entry: fails the gate
                     "5_3": {"outcome": "fail"}})                             # unlisted failure
    diff = diff_reports(old, new)
    assert [(c.case_id, c.old, c.new, c.kind) for c in diff.outcomes] == [
        ("4.10", "fail (expected)", "pass (stale in the baseline)", "regression"),
        ("5.3", "pass", "fail", "regression"),
        ("1.1", "pass", "fail (expected)", "changed")]
    # An entry taken out of the baseline while the case still fails: the gate goes red again.
    assert [c.kind for c in diff_reports(old, OLD).outcomes] == ["regression"]


def test_a_run_that_could_not_be_done_is_a_regression() -> None:
    new = report(*(dict(c, outcome="error", reason="not run") for c in OLD["cases"]), error="target unreachable")
    diff = diff_reports(OLD, new)
    assert diff.outcomes[0].case_id == "run" and diff.outcomes[0].finding == "target unreachable"
    assert diff.exit_code() == 1


def test_new_and_removed_cases_in_natural_order() -> None:
    new = report(*[c for c in OLD["cases"] if c["id"] != "5.3"], case("4.3a", "fail", message="own rule"),
                 case("12.1"))
    diff = diff_reports(OLD, new)
    assert [(r.case_id, r.outcome) for r in diff.added] == [("4.3a", "fail"), ("12.1", "pass")]
    assert [r.case_id for r in diff.removed] == ["5.3"]
    assert not diff.outcomes and diff.exit_code() == 0  # a new failing case is the run's gate's business
    assert sorted(["4.10", "4.3a", "12.1", "4.3", "1.1"], key=id_key) == ["1.1", "4.3", "4.3a", "4.10", "12.1"]


def test_figures_that_moved_past_the_threshold_and_the_noise_floor() -> None:
    new = new_run(**{"2_3": {"figures": lateness(1.6, 30.0, 12.5)},
                     "5_1": {"figures": spacing(1.6)},
                     "6_1": {"figures": latency(700.0)}})
    new["durationMs"] = 12_000
    diff = diff_reports(OLD, new)
    moved = {(f.case_id, f.figure): (f.old, f.new, f.worse) for f in diff.figures}
    assert moved == {
        ("2.3", "lateness p95"): (9.0, 30.0, True),
        ("5.1", "keep-alive spacing max"): (1.01, 1.6, True),
        ("6.1", "cancel latency"): (6.0, 700.0, True),
        ("", "suite duration"): (20.0, 12.0, False),
    }  # p50 1.2 -> 1.6 ms is +33 % but under the 5 ms floor: noise
    assert not diff.figures[-1].worse  # worse first
    assert diff.exit_code() == 0  # figures inform; outcomes gate
    assert [(f.case_id, f.figure) for f in diff_reports(OLD, new, threshold=10.0).figures] == [("6.1", "cancel latency")]
    # Figures of another shape than expected are no figures, not a crash.
    odd = new_run(**{"5_1": {"figures": {"keep-alive spacing max": "long", "x": {"value": "3"}}}, "6_1": {"figures": 3}})
    assert diff_reports(OLD, odd).figures == ()


def test_markdown_and_the_command(tmp_path, capsys) -> None:
    new = new_run(**{"1_1": {"outcome": "fail", "findings": [{"message": "a | pipe"}]},
                     "6_1": {"figures": latency(700.0)}})
    old_dir, new_dir = write(tmp_path, "old", OLD), write(tmp_path, "new", new)
    assert main(["diff", str(old_dir), str(new_dir / "report.json"), "--format", "md"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("# SSE conformance: what changed")
    assert "| 1.1 | ❌ regression | pass | fail | title of 1.1 | a / pipe |" in out
    assert "| 6.1 | cancel latency | 6 ms | 700 ms | 🔺 +694 ms (+11567 %) |" in out
    assert out == to_markdown(diff_reports(load_report(old_dir), load_report(new_dir)))
    assert main(["diff", str(old_dir), str(old_dir)]) == 0
    assert "0 regressions, 0 fixed" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "not JSON"),
    (json.dumps({"schemaVersion": 1}), "no cases list"),
    (json.dumps(report() | {"schemaVersion": 7}), "schemaVersion 7"),
    (json.dumps(report({"id": "1.1"})), "case #1 has no id or outcome"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, content, message) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DiffError, match=message):
        load_report(tmp_path)
    good = write(tmp_path, "good", OLD)
    assert main(["diff", str(good), str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_case_that_passed_on_a_later_try_is_unstable_not_a_regression() -> None:
    retried = [{"try": 1, "finding": "silence longer than the keep-alive interval", "observed": "1.9s; ...",
                "expected": "<= 1.25s", "durationMs": 3000}]
    new = new_run(**{"5_1": {"retries": retried},                                   # passed on try 2
                     "6_1": {"outcome": "error", "confounded": True, "retries": retried * 2,
                             "reason": "not judged: ... starvation ..."}})          # confounded every time
    diff = diff_reports(OLD, new)
    assert [(c.case_id, c.kind) for c in diff.outcomes] == [("6.1", "unstable")]
    assert [r.case_id for r in diff.unstable] == ["5.1", "6.1"]
    assert diff.exit_code() == 0
    text = to_markdown(diff)
    assert "Unstable" in text and "pass (on try 2)" in text and "0 regressions" in text
    # A real failure beside them is still a regression.
    assert diff_reports(OLD, new_run(**{"5_1": {"outcome": "fail", "retries": retried}})).exit_code() == 1
