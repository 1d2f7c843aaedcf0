"""`sse-harness diff OLD NEW`: what changed between two runs' report.json (outcomes, cases, measured figures)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ._errors import UsageError
from ._outcomes import GATE_PASSED, gate

__all__ = ["Diff", "DiffError", "diff_reports", "load_report", "to_markdown"]

KNOWN_SCHEMAS = (1,)


def fails_gate(case: dict[str, Any], strict: bool = False) -> bool:
    """Whether this report.json case fails the gate of `sse-harness run` (harness._outcomes.gate):
    an error; a fail (with --strict a non-strict) that a baseline did not expect; a stale entry."""
    return gate(case["outcome"], strict=strict, expected=bool(case.get("expected")),
                stale=bool(case.get("stale"))) != GATE_PASSED


def verdict(case: dict[str, Any], *, tries: bool = True) -> str:
    """The outcome, with what a baseline said of it, or (with ``tries``) that the machine's
    starvation made the case be tried again."""
    if case.get("stale"):
        return f"{case['outcome']} (stale in the baseline)"
    if case.get("expected"):
        return f"{case['outcome']} (expected)"
    if case.get("confounded"):
        return f"{case['outcome']} (confounded)"
    if case.get("retries") and tries:
        return f"{case['outcome']} (on try {len(case['retries']) + 1})"
    return case["outcome"]


class DiffError(UsageError):
    """A report that cannot be compared (the user's: a path, a file); the message names the file.
    A ValueError too, as before the error kinds."""


# The figures a report carries are those its cases declared (harness.Measure), each case's
# under "figures" in report.json: the diff knows no case's evidence keys. Lower is better.
# Beside them, the suite's own duration, read from the report itself; changes under a second
# never count.
SUITE_DURATION, SUITE_UNIT, SUITE_FLOOR = "suite duration", "s", 1.0


@dataclasses.dataclass(frozen=True)
class OutcomeChange:
    case_id: str
    title: str
    old: str
    new: str
    kind: str  # "regression" | "fixed" | "changed" | "unstable" (the machine, not the target, decided it)
    finding: str  # the new run's first finding or reason


@dataclasses.dataclass(frozen=True)
class CaseRow:
    case_id: str
    title: str
    outcome: str


@dataclasses.dataclass(frozen=True)
class FigureChange:
    case_id: str  # "" for the run as a whole
    figure: str
    unit: str
    old: float
    new: float

    @property
    def worse(self) -> bool:
        return self.new > self.old

    @property
    def percent(self) -> float | None:
        return (self.new - self.old) / self.old * 100 if self.old else None


@dataclasses.dataclass(frozen=True)
class Diff:
    old: str  # how each run is named: its file, target and start
    new: str
    outcomes: tuple[OutcomeChange, ...]  # regressions first
    added: tuple[CaseRow, ...]
    removed: tuple[CaseRow, ...]
    figures: tuple[FigureChange, ...]  # worse first
    threshold: float  # relative, 0.2 = 20 %
    notes: tuple[str, ...]  # e.g. the targets differ
    # Cases of the new run whose timing verdict the machine's starvation explained on some try:
    # passed on a later try, or confounded in every try (an error that is no regression of the
    # target). Listed, never counted as regressions.
    unstable: tuple[CaseRow, ...] = ()

    @property
    def regressions(self) -> tuple[OutcomeChange, ...]:
        return tuple(c for c in self.outcomes if c.kind == "regression")

    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def load_report(path: str | Path) -> dict[str, Any]:
    """A report.json, given as the file or as the report directory that holds it."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise DiffError(f"{file}: no such file" + (" (the directory has no report.json)" if path.is_dir() else ""))
    except OSError as exc:
        raise DiffError(f"{file}: cannot read it: {exc}") from None
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise DiffError(f"{file}: not JSON ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("cases"), list):
        raise DiffError(f"{file}: not an sse-harness report.json (no cases list)")
    if report.get("schemaVersion") not in KNOWN_SCHEMAS:
        raise DiffError(f"{file}: schemaVersion {report.get('schemaVersion')!r}; this harness reads "
                        f"{', '.join(map(str, KNOWN_SCHEMAS))}")
    for i, case in enumerate(report["cases"]):
        if not isinstance(case, dict) or not isinstance(case.get("id"), str) or not isinstance(case.get("outcome"), str):
            raise DiffError(f"{file}: case #{i + 1} has no id or outcome")
    report.setdefault("_source", str(file))
    return report


def id_key(case_id: str) -> tuple:
    """Natural order of case ids: 4.3 < 4.3a < 4.10."""
    return tuple((int(m.group(1) or -1), m.group(2)) for m in re.finditer(r"(\d+)?([^.\d]*)", case_id) if m.group(0))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _figures(case: dict[str, Any]) -> dict[str, tuple[float, str, float]]:
    """A case's declared figures as (value, unit, noise floor); anything malformed is left out."""
    out = {}
    declared = case.get("figures")
    for name, figure in (declared.items() if isinstance(declared, dict) else ()):
        value = _number(figure.get("value")) if isinstance(figure, dict) else None
        if value is not None:
            out[str(name)] = (value, str(figure.get("unit", "")), _number(figure.get("floor")) or 0.0)
    return out


def _first(case: dict[str, Any]) -> str:
    if case.get("reason"):
        return str(case["reason"])
    for finding in case.get("findings") or ():
        if isinstance(finding, dict) and finding.get("message"):
            return str(finding["message"])
    return ""


def _label(report: dict[str, Any]) -> str:
    return f"{report.get('_source', '?')} ({report.get('target', '?')}, {report.get('startedAt', '?')})"


def _moved(floor: float, old: float, new: float, threshold: float) -> bool:
    """A change counts past ``threshold`` (a fraction of the old value), never under ``floor``."""
    return abs(new - old) > max(floor, threshold * abs(old))


def diff_reports(old: dict[str, Any], new: dict[str, Any], *, threshold: float = 0.2,
                 strict: bool = False) -> Diff:
    """Compare two loaded reports. A regression is a case that now fails the gate (fail or
    error; non-strict too with ``strict``; a baseline's expected failures do not, its stale
    entries do) and did not before, or a run that could not be done at all."""
    old_cases = {c["id"]: c for c in old["cases"]}
    new_cases = {c["id"]: c for c in new["cases"]}
    changes: list[OutcomeChange] = []
    if new.get("error") and not old.get("error"):
        changes.append(OutcomeChange("run", "the run as a whole", "done", "not done", "regression", str(new["error"])))
    for case_id in sorted(old_cases.keys() & new_cases.keys(), key=id_key):
        was, now = verdict(old_cases[case_id]), verdict(new_cases[case_id])
        if verdict(old_cases[case_id], tries=False) == verdict(new_cases[case_id], tries=False):
            continue
        failed, fails = fails_gate(old_cases[case_id], strict), fails_gate(new_cases[case_id], strict)
        kind = "regression" if fails and not failed else "fixed" if failed and not fails else "changed"
        if kind == "regression" and new_cases[case_id].get("confounded"):
            kind = "unstable"  # not judged: the machine was too busy; no regression of the target
        changes.append(OutcomeChange(case_id, str(new_cases[case_id].get("title", "")), was, now, kind,
                                     _first(new_cases[case_id])))
    order = {"regression": 0, "unstable": 1, "changed": 2, "fixed": 3}
    changes.sort(key=lambda c: order[c.kind])  # stable: case order within each kind

    def rows(ids, cases) -> tuple[CaseRow, ...]:
        return tuple(CaseRow(i, str(cases[i].get("title", "")), verdict(cases[i])) for i in sorted(ids, key=id_key))

    figures: list[FigureChange] = []
    for case_id in sorted(old_cases.keys() & new_cases.keys(), key=id_key):
        old_figures, new_figures = _figures(old_cases[case_id]), _figures(new_cases[case_id])
        for name in sorted(old_figures.keys() & new_figures.keys()):
            (a, unit, floor), (b, _, _) = old_figures[name], new_figures[name]
            if _moved(floor, a, b, threshold):
                figures.append(FigureChange(case_id, name, unit, a, b))
    a, b = (_number(report.get("durationMs")) for report in (old, new))
    if a and b and _moved(SUITE_FLOOR, a / 1000, b / 1000, threshold):
        figures.append(FigureChange("", SUITE_DURATION, SUITE_UNIT, a / 1000, b / 1000))
    figures.sort(key=lambda f: not f.worse)

    notes = []
    if old.get("target") != new.get("target"):
        notes.append(f"the targets differ: {old.get('target')} then {new.get('target')}")
    if old.get("profile") != new.get("profile"):
        notes.append(f"the profiles differ: {old.get('profile')} then {new.get('profile')}")
    if old.get("error"):
        notes.append(f"the old run could not be done: {old['error']}")
    unstable = [i for i, c in new_cases.items() if c.get("retries") or c.get("confounded")]
    return Diff(_label(old), _label(new), tuple(changes), rows(new_cases.keys() - old_cases.keys(), new_cases),
                rows(old_cases.keys() - new_cases.keys(), old_cases), tuple(figures), threshold, tuple(notes),
                rows(unstable, new_cases))


# -- presentation ---------------------------------------------------------------------------------

def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _change(f: FigureChange) -> str:
    pct = f.percent
    return f"{f.new - f.old:+.3g} {f.unit}" + (f" ({pct:+.0f} %)" if pct is not None else "")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _summary(diff: Diff) -> str:
    kinds = [c.kind for c in diff.outcomes]
    worse = sum(1 for f in diff.figures if f.worse)
    return (f"{_n(kinds.count('regression'), 'regression')}, {kinds.count('fixed')} fixed, "
            f"{_n(kinds.count('changed'), 'other change')}, {len(diff.unstable)} unstable, "
            f"{_n(len(diff.added), 'new case')}, "
            f"{len(diff.removed)} removed, {_n(len(diff.figures), 'figure')} moved beyond "
            f"{diff.threshold * 100:g} % ({worse} worse)")


def _md(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def to_markdown(diff: Diff) -> str:
    lines = ["# SSE conformance: what changed", "", f"- old: `{diff.old}`", f"- new: `{diff.new}`", "",
             f"**{_summary(diff)}**", ""]
    lines += [f"> {_md(note)}" for note in diff.notes] + ([""] if diff.notes else [])
    if diff.outcomes:
        lines += ["## Outcomes that changed", "", "| case | change | was | now | title | first finding |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {c.case_id} | {'❌ ' if c.kind == 'regression' else '✅ ' if c.kind == 'fixed' else ''}{c.kind} "
                  f"| {c.old} | {c.new} | {_md(c.title)} | {_md(c.finding)} |" for c in diff.outcomes]
        lines.append("")
    for heading, rows in (("New cases", diff.added), ("Removed cases", diff.removed),
                          ("Unstable: the machine's starvation explained a timing breach (tried again)", diff.unstable)):
        if rows:
            lines += [f"## {heading}", "", "| case | outcome | title |", "| --- | --- | --- |"]
            lines += [f"| {r.case_id} | {r.outcome} | {_md(r.title)} |" for r in rows]
            lines.append("")
    if diff.figures:
        lines += [f"## Figures that moved beyond {diff.threshold * 100:g} %", "",
                  "| case | figure | was | now | change |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {f.case_id or 'run'} | {f.figure} | {_fmt(f.old)} {f.unit} | {_fmt(f.new)} {f.unit} | "
                  f"{'🔺' if f.worse else '🔻'} {_change(f)} |" for f in diff.figures]
        lines.append("")
    if not (diff.outcomes or diff.added or diff.removed or diff.figures or diff.unstable):
        lines += ["Nothing changed.", ""]
    return "\n".join(lines)


_KIND_STYLE = {"regression": "bold red", "fixed": "green", "changed": "yellow", "unstable": "magenta"}


def print_tables(diff: Diff, console: Console) -> None:
    console.print(f"old: {diff.old}\nnew: {diff.new}")
    for note in diff.notes:
        console.print(f"[yellow]note: {note}")
    if diff.outcomes:
        table = Table("case", "change", "was", "now", "title", "first finding", title="outcomes that changed")
        for c in diff.outcomes:
            table.add_row(c.case_id, f"[{_KIND_STYLE[c.kind]}]{c.kind}[/]", c.old, c.new, c.title, c.finding[:70])
        console.print(table)
    for heading, rows in (("new cases", diff.added), ("removed cases", diff.removed),
                          ("unstable (tried again: the machine's starvation explained a timing breach)", diff.unstable)):
        if rows:
            table = Table("case", "outcome", "title", title=heading)
            for r in rows:
                table.add_row(r.case_id, r.outcome, r.title)
            console.print(table)
    if diff.figures:
        table = Table("case", "figure", "was", "now", "change", title=f"figures that moved beyond {diff.threshold * 100:g} %")
        for f in diff.figures:
            style = "red" if f.worse else "green"
            table.add_row(f.case_id or "run", f.figure, f"{_fmt(f.old)} {f.unit}", f"{_fmt(f.new)} {f.unit}",
                          f"[{style}]{_change(f)}[/]")
        console.print(table)
    style = "bold red" if diff.regressions else "green"
    console.print(f"[{style}]{_summary(diff)}")


# -- the subcommand -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", metavar="OLD", help="the earlier run: report.json or its report directory "
                                                   "(or a matrix: matrix.json or its directory)")
    parser.add_argument("new", metavar="NEW", help="the later run: report.json or its report directory (or a matrix)")
    parser.add_argument("--format", choices=("table", "md"), default="table",
                        help="table on the terminal (default) or Markdown on stdout (e.g. for a job summary)")
    parser.add_argument("--threshold", type=float, default=20.0, metavar="PERCENT",
                        help="a figure counts as moved past this change in percent (default 20); small absolute "
                             "changes (5 ms of latency, 50 ms of keep-alive spacing, 1 s of suite time) never count")
    parser.add_argument("--strict", action="store_true", help="a case that became non-strict is a regression too")


def main(args: argparse.Namespace, console: Console) -> int:
    """Exit 0: no regression; 1: a regression; 2: a report could not be read (a UsageError, said
    on stderr by the command line: stdout may be a Markdown file being written)."""
    if args.threshold < 0:
        raise UsageError(f"--threshold must be >= 0, not {args.threshold:g}")
    from ._matrix import is_matrix

    if is_matrix(args.old) or is_matrix(args.new):  # two matrices: what changed per server
        from ._matrix_diff import main as matrix_diff_main

        return matrix_diff_main(args, console)
    old, new = load_report(args.old), load_report(args.new)  # DiffError: said by the command line, exit 2
    diff = diff_reports(old, new, threshold=args.threshold / 100, strict=args.strict)
    if args.format == "md":
        sys.stdout.write(to_markdown(diff))
    else:
        print_tables(diff, console)
    return diff.exit_code()
