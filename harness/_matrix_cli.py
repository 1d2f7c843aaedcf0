"""`sse-harness matrix`: run the suite against several servers, one after another, and write each
server's own report (D/NAME/) and the comparison matrix over them (D/matrix.html, .md, .json);
or build the matrix from existing report dirs."""

from __future__ import annotations

import argparse
import dataclasses
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ._diff import load_report
from ._errors import ProfileError, UsageError
from ._matrix import Matrix, build_matrix, column_name, dir_columns
from ._matrix_render import write_matrix
from ._profile import Profile
from ._target import REFERENCE, TargetPlan, plan_target, start_target

__all__ = ["REFERENCE", "Entry", "add_parser", "main", "parse_entry", "run_matrix"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a column's name is also its report's directory


@dataclasses.dataclass(frozen=True)
class Entry:
    """One server of the matrix: its column's name, its profile, and whether the harness starts
    the embedded reference server for it (``embedded``: the profile's base_url is replaced)."""

    name: str
    profile: Profile
    embedded: bool
    skip: tuple[str, ...] = ()  # this server's own skips, beside the run's

    def plan(self, browser: str | None = None) -> TargetPlan:
        return TargetPlan(self.profile, self.embedded, browser=browser)


def parse_entry(text: str, timing_slack: float | None = None) -> Entry:
    """``[NAME=]reference`` or ``[NAME=]PROFILE.toml``, resolved as `run --profile` resolves it
    (harness._target.plan_target): a profile that sets [target].base_url names its server; one
    without (and the word ``reference``) is judged on the embedded reference server, started for
    it alone. NAME defaults to the profile's directory (for profile.toml) or stem. Raises
    ProfileError."""
    name, eq, spec = text.partition("=")
    if not eq:
        name, spec = "", text
    plan = plan_target(spec, timing_slack=timing_slack)
    entry = Entry(name or (REFERENCE if spec == REFERENCE else column_name(Path(spec))), plan.profile, plan.embedded)
    if not _NAME.match(entry.name):
        raise ProfileError(f"{entry.name!r} cannot name a column (and its report's directory): letters, digits, "
                           f". _ - (give one: NAME=PROFILE)")
    return entry


def add_parser(sub) -> argparse.ArgumentParser:
    matrix = sub.add_parser(
        "matrix", help="one report for many servers: cases x servers (matrix.html, .md, .json)",
        description="Run the suite against each --profile's server one after another (each server's own report in "
                    "REPORT_DIR/NAME/), or take existing report dirs, and write REPORT_DIR/matrix.html, matrix.md "
                    "and matrix.json. A profile entry is [NAME=]FILE.toml or [NAME=]reference; a profile without "
                    "[target].base_url (and `reference`) is judged on the embedded reference server.")
    matrix.add_argument("reports", nargs="*", metavar="[NAME=]REPORT_DIR",
                        help="existing runs (report dirs or report.json files), as columns after the --profile ones")
    matrix.add_argument("--profile", action="append", default=[], metavar="[NAME=]PROFILE",
                        help="a server to run: a profile file, or `reference`; repeatable, in column order")
    matrix.add_argument("--only", action="append", default=[], metavar="PATTERN")
    matrix.add_argument("--skip", action="append", default=[], metavar="PATTERN")
    matrix.add_argument("--report-dir", type=Path, help="default reports/matrix-<timestamp>/")
    matrix.add_argument("--parallel", type=int, default=8)
    matrix.add_argument("--cases", action="append", default=[], metavar="MODULE_OR_FILE")
    matrix.add_argument("--browser", metavar="PATH", help="Chromium for the browser families (as for run)")
    matrix.add_argument("--timing-slack", type=float, metavar="FACTOR")
    matrix.add_argument("--server-version", action="append", default=[], metavar="NAME=TEXT",
                        help="a server's version as you know it (default: its healthz's, else its profile's name)")
    return matrix


async def _run_one(entry: Entry, directory: Path, progress: Progress, task, *, only: Sequence[str],
                   skip: Sequence[str], parallel: int, browser: str | None, cases) -> tuple[dict, str]:
    """Run the suite for one entry, write its reports to ``directory``; returns its loaded
    report.json and, when its server could not be started, why."""
    from ._outcomes import Outcome
    from ._reports import FORMATS, write_reports
    from ._runner import RunReport, run_suite
    from ._server_process import ServerStartError

    def on_start(total: int) -> None:
        progress.update(task, total=total, description=f"{entry.name}: running")

    def on_result(result) -> None:
        progress.advance(task)

    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if entry.embedded:
        progress.update(task, description=f"{entry.name}: starting the reference server")
    try:
        async with start_target(entry.plan(browser)) as target:
            report = await run_suite(target.profile, only=only, skip=[*skip, *entry.skip], parallel=parallel,
                                     on_result=on_result, on_start=on_start, cases=cases, **target.suite_options())
    except ServerStartError as exc:
        report = RunReport("embedded reference server", entry.profile.name, started, 0, (), {},
                           f"the reference server did not start: {exc}")
    write_reports(report, directory, FORMATS)
    fails = report.count(Outcome.FAIL)
    progress.update(task, description=f"{entry.name}: {report.count(Outcome.PASS)} pass, {fails} fail"
                    + (f", not done: {report.error[:60]}" if report.error else ""))
    return load_report(directory), report.error


async def run_matrix(entries: Sequence[Entry], report_dir: Path, *, only: Sequence[str] = (),
                     skip: Sequence[str] = (), parallel: int = 8, browser: str | None = None,
                     cases=None, extra: Sequence[str] = (), versions: dict[str, str] | None = None,
                     console: Console | None = None) -> tuple[Matrix, list[str]]:
    """Run each entry's server in turn (one progress bar each), write each report to
    ``report_dir/NAME/`` and the matrix over them (then the ``extra`` report dirs) beside them.
    Returns the matrix and, per server whose run could not be done, why."""
    console = console or Console()
    columns, problems = [], []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        tasks = [progress.add_task(f"{e.name}: waiting", total=None) for e in entries]
        for entry, task in zip(entries, tasks):
            report, error = await _run_one(entry, report_dir / entry.name, progress, task, only=only, skip=skip,
                                           parallel=parallel, browser=browser, cases=cases)
            columns.append((entry.name, report, f"{entry.name}/report.html"))
            if error:
                problems.append(f"{entry.name}: {error}")
    columns += dir_columns(extra, report_dir)
    matrix = build_matrix(columns, versions)
    write_matrix(matrix, report_dir)
    return matrix, problems


def main(args: argparse.Namespace, console: Console) -> int:
    """Exit 0: the matrix is written (its fails are its content: `run` is the gate); 2: a profile
    or report dir is unusable, or a server's run could not be done (the matrix is still written)."""
    from ._registry import load_cases

    if not args.profile and not args.reports:
        raise UsageError("nothing to compare: give --profile entries or report dirs")
    entries = [parse_entry(text, args.timing_slack) for text in args.profile]
    cases = load_cases(args.cases)
    versions = dict(v.partition("=")[::2] for v in args.server_version)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report_dir = args.report_dir or Path("reports") / f"matrix-{stamp}"
    dir_columns(args.reports, report_dir)  # an unusable report dir (MatrixError, the user's) is said before any run
    if entries:
        matrix, problems = trio.run(lambda: run_matrix(
            entries, report_dir, only=args.only, skip=args.skip, parallel=args.parallel, browser=args.browser,
            cases=cases, extra=args.reports, versions=versions, console=console))
    else:
        matrix, problems = build_matrix(dir_columns(args.reports, report_dir), versions), []
        write_matrix(matrix, report_dir)
    totals = matrix.subtotals()
    for server in matrix.servers:
        counts = ", ".join(f"{n} {o}" for o, n in totals[server.name].items() if n)
        console.print(f"{server.name} ({server.version}): {counts}")
    for problem in problems:
        console.print(f"[bold magenta]not done: {problem}")
    for name in ("matrix.html", "matrix.md", "matrix.json"):
        console.print(f"{report_dir / name}")
    return 2 if problems else 0
