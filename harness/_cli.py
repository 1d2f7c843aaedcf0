"""The sse-harness command: run, list, proxy, probe."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import trio
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._errors import ProfileError, UsageError
from ._outcomes import OUTCOMES, Outcome
from ._registry import load_cases

_STYLE = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.NON_STRICT: "yellow", Outcome.INFO: "cyan",
          Outcome.ERROR: "bold magenta", Outcome.SKIP: "dim"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sse-harness", description="Conformance harness for SSE job-progress APIs")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the conformance suite and write reports")
    run.add_argument("--target", help="base URL of the server under test (default: start the reference server)")
    run.add_argument("--profile", help="target profile TOML (default: the contract)")
    run.add_argument("--only", action="append", default=[], metavar="PATTERN", help="case ids or globs: 4.3, 4.*, 6")
    run.add_argument("--skip", action="append", default=[], metavar="PATTERN")
    run.add_argument("--report-dir", type=Path, help="default reports/<timestamp>/ plus reports/latest")
    run.add_argument("--format", default="json,junit,html,md")
    run.add_argument("--parallel", type=int, default=8)
    run.add_argument("--strict", action="store_true", help="non-strict outcomes fail the run too")
    run.add_argument("--same-host", choices=("auto", "yes", "no"), default="auto")
    run.add_argument("--cases", action="append", default=[], metavar="MODULE_OR_FILE",
                     help="also load cases from a module (my_pkg.cases) or a .py file; repeatable")
    run.add_argument("--baseline", type=Path, metavar="FILE",
                     help="expected failures (sse-harness baseline REPORT.json > FILE): listed failures do not "
                          "fail the gate, listed cases that pass now do")
    run.add_argument("--browser", metavar="PATH", help="Chromium for family 10 (default: $SSE_HARNESS_BROWSER, "
                     "else chromium on PATH; none: family 10 skips)")
    run.add_argument("--timing-slack", type=float, metavar="FACTOR",
                     help="widen every timing tolerance by FACTOR (>= 1) for a runner known to be slow; "
                          "the report's header says so (profile: [timing].timing_slack)")
    listing = sub.add_parser("list", help="list the cases")
    listing.add_argument("--cases", action="append", default=[], metavar="MODULE_OR_FILE")
    listing.add_argument("--profile", help="show titles with this profile's values")
    baseline = sub.add_parser("baseline", help="write a baseline of a report's failures to stdout")
    baseline.add_argument("report", type=Path, help="report.json, or the report dir holding it")
    proxy = sub.add_parser("proxy", help="a fault-injecting proxy for manual tests; commands on stdin")
    proxy.add_argument("--listen", default="127.0.0.1:8081")
    proxy.add_argument("--target", required=True, help="HOST:PORT on this host")
    from ._diff import add_arguments as add_diff_arguments

    add_diff_arguments(sub.add_parser("diff", help="what changed between two runs (report.json or report dirs)"))
    from ._load_cli import add_parser as add_load_parser

    add_load_parser(sub)
    from ._probe_cli import add_parser as add_probe_parser

    add_probe_parser(sub)
    from ._matrix_cli import add_parser as add_matrix_parser

    add_matrix_parser(sub)
    return parser


# Commands whose stdout is their product (a draft profile, Markdown, a baseline): what they say goes to stderr.
_PRODUCT_ON_STDOUT = ("probe", "diff", "baseline")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        return _dispatch(args, console)
    except UsageError as exc:  # the user's mistake, from any command: exit 2, naming the key, flag or file
        said = Console(stderr=True, soft_wrap=True) if args.command in _PRODUCT_ON_STDOUT else console
        said.print(f"[red]{'bad profile: ' if isinstance(exc, ProfileError) else ''}{escape(str(exc))}")
        return 2


def _dispatch(args, console: Console) -> int:
    if args.command == "list":
        return _list_main(args, console)
    if args.command == "baseline":
        return _baseline_main(args, console)
    if args.command == "proxy":
        return trio.run(_proxy_main, args, console)
    if args.command == "load":
        from ._load_cli import main as load_main

        return load_main(args, console)
    if args.command == "probe":
        from ._probe_cli import main as probe_main

        return probe_main(args, console)
    if args.command == "matrix":
        from ._matrix_cli import main as matrix_main

        return matrix_main(args, console)
    if args.command == "diff":
        from ._diff import main as diff_main

        return diff_main(args, console)
    return trio.run(_run_main, args, console)


def _list_main(args, console: Console) -> int:
    from ._registry import REGISTRY
    from ._target import resolve_profile

    profile = resolve_profile(args.profile)
    cases = load_cases(args.cases)
    table = Table("id", "title", "invariants", "from", "with this profile")
    for case in cases:
        unmet = case.unmet(profile)
        table.add_row(case.id, escape(case.title_for(profile)), ", ".join(case.invariants), REGISTRY.origin(case),
                      f"[dim]skip: {escape(unmet)}[/]" if unmet else "run")
    console.print(table)
    return 0


def _baseline_main(args, console: Console) -> int:
    import json

    from ._baseline import write_baseline

    path = args.report / "report.json" if args.report.is_dir() else args.report
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    sys.stdout.write(write_baseline(data))
    return 0


async def _run_main(args, console: Console) -> int:
    from ._baseline import apply_baseline, load_baseline
    from ._reports import FORMATS, link_latest, write_reports
    from ._runner import run_suite
    from ._server_process import ServerStartError
    from ._target import plan_target, start_target

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
    plan = plan_target(args.profile, args.target, timing_slack=args.timing_slack, same_host=args.same_host,
                       browser=args.browser)
    cases = load_cases(args.cases)
    baseline = load_baseline(args.baseline) if args.baseline else None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report_dir = args.report_dir or Path("reports") / stamp

    async def run(target):
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("running cases", total=None)

            def on_start(total: int) -> None:
                progress.update(task, total=total)

            def on_result(result) -> None:
                progress.advance(task)
                if result.outcome in (Outcome.FAIL, Outcome.ERROR):
                    progress.console.print(f"[{_STYLE[result.outcome]}]{result.id} {result.outcome}[/]: {result.title}")

            report = await run_suite(target.profile, only=args.only, skip=args.skip, parallel=args.parallel,
                                     on_result=on_result, on_start=on_start, cases=cases, **target.suite_options())
        from ._browser import page_screenshot  # the target's own web page mid-job, if it has one

        return await page_screenshot(report, target.profile, report_dir, target.browser)

    if plan.embedded:
        console.print("starting the reference server (no --target given)")
    try:
        async with start_target(plan) as target:
            if target.embedded:
                console.print(f"reference server pid {target.target_pid} at {target.base_url}")
            report = await run(target)
    except ServerStartError as exc:
        console.print(f"[red]{escape(str(exc))}")
        return 2
    if baseline is not None:
        report = apply_baseline(report, baseline)
    written = write_reports(report, report_dir, formats)
    if args.report_dir is None:
        link_latest(report_dir)
    if os.environ.get("GITHUB_STEP_SUMMARY"):  # GitHub Actions shows this file on the job's page
        from ._reports import to_markdown

        try:
            with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
                summary.write(to_markdown(report) + "\n")
        except OSError as exc:
            console.print(f"[yellow]could not append to $GITHUB_STEP_SUMMARY: {exc}")
    table = Table("case", "outcome", "title", "ms", "first finding", title=f"SSE conformance: {report.target}")
    for r in report.results:
        first = r.reason or next((f.message for f in r.findings), "")
        verdict = f"[{_STYLE[r.outcome]}]{r.outcome}[/]"
        if r.id in report.expected:
            verdict += " [dim](expected)[/]"
        elif r.id in report.stale:
            verdict += " [bold red](stale in baseline)[/]"
        if r.retries:
            verdict += f" [dim](try {len(r.retries) + 1})[/]"
        table.add_row(r.id, verdict, r.title, str(r.duration_ms), escape(first[:70]))
    console.print(table)
    counts = {o: report.count(o) for o in OUTCOMES}
    console.print(f"{counts[Outcome.PASS]} passed, {counts[Outcome.FAIL]} failed, {counts[Outcome.NON_STRICT]} "
                  f"non-strict, {counts[Outcome.INFO]} info, {counts[Outcome.ERROR]} errors, "
                  f"{counts[Outcome.SKIP]} skipped in {report.duration_ms / 1000:.1f} s"
                  + (f"; {sum(1 for r in report.results if r.retries)} tried again (starvation explained a timing "
                     f"breach)" if any(r.retries for r in report.results) else ""))
    if report.expected:
        console.print(f"[dim]{len(report.expected)} failure(s) expected by the baseline: "
                      f"{', '.join(sorted(report.expected))}")
    for case_id, why in sorted(report.stale.items()):
        console.print(f"[bold red]baseline entry {case_id} is stale: {why}")
    if report.error:
        console.print(f"[bold magenta]the run could not be done: {report.error}")
    for fmt, path in written.items():
        console.print(f"{fmt:>5}: {path}")
    return report.exit_code(strict=args.strict)


async def _proxy_main(args, console: Console) -> int:
    from ._proxy import FaultProxy

    listen_host, _, listen_port = args.listen.rpartition(":")
    target_host, _, target_port = args.target.rpartition(":")
    try:
        proxy = FaultProxy(int(target_port), target_host or "127.0.0.1", listen_host=listen_host or "127.0.0.1",
                           listen_port=int(listen_port))
    except ValueError as exc:
        raise UsageError(f"--listen {args.listen} / --target {args.target}: {exc}") from None
    async with proxy:
        console.print(f"proxy {proxy.url()} -> {args.target}. Commands: cut | rst | stall S | refuse S | "
                      "delay S | slice N [PAUSE] | throttle BPS | clear | offline S (refuse + cut) | quit")
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        pending = b""
        async for chunk in stdin:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                words = line.decode().split()
                if not words:
                    continue
                try:
                    command, values = words[0], [float(w) for w in words[1:]]
                    if command == "quit":
                        return 0
                    if command == "offline":
                        proxy.refuse(values[0])
                        proxy.cut()
                    else:
                        action = {"cut": proxy.cut, "rst": lambda: proxy.cut(rst=True), "stall": proxy.stall,
                                  "refuse": proxy.refuse, "delay": proxy.delay,
                                  "slice": lambda n, p=0.0: proxy.slice(int(n), p),
                                  "throttle": proxy.throttle, "clear": proxy.clear}[command]
                        action(*values)
                    console.print(f"ok: {proxy.log[-1].action} {proxy.log[-1].detail}")
                except (KeyError, IndexError, TypeError, ValueError):
                    console.print(f"[red]bad command: {line.decode()!r}")
    return 0
