"""`sse-harness load`: locust (as its own process) with the shipped SSE user, thresholds that decide
the exit code, and the results in the report dir."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import trio
from rich.console import Console
from rich.markup import escape

from ._errors import UsageError
from ._load_options import add_to as add_load_options, forwarded, positive_int, settings as load_settings
from ._target import TargetPlan, listening_pid, plan_target, start_target

__all__ = ["add_parser", "main"]

SHIPPED_LOCUSTFILE = Path(__file__).with_name("_locustfile.py")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def run_time_seconds(text: str) -> int:
    """locust's run-time syntax (90, 90s, 1m30s, 1h) in seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a run time: {text!r} (examples: 30s, 2m, 1h30m)")
    h, m, s = (int(g or 0) for g in match.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the run time must be positive")
    return seconds


def add_parser(sub) -> argparse.ArgumentParser:
    load = sub.add_parser(
        "load", help="load test on locust with the SSE user; thresholds decide the exit code",
        description="Run locust with the shipped SSE user (harness.load.SSEUser). Options after -- go to locust "
                    "as they are (e.g. -- --master --expect-workers 2).")
    load.add_argument("--target", help="base URL of the server under test (default: start the reference server)")
    load.add_argument("--profile", help="target profile TOML (default: the contract)")
    load.add_argument("--users", type=positive_int, default=10)
    load.add_argument("--spawn-rate", type=float, default=10.0)
    load.add_argument("--run-time", type=run_time_seconds, default=30, help="e.g. 30s, 2m (default 30s)")
    load.add_argument("--processes", type=int, default=0, help="locust --processes: worker processes on this machine")
    load.add_argument("--web", action="store_true", help="serve locust's web UI (on 127.0.0.1:8089) while it runs")
    load.add_argument("--report-dir", type=Path, help="default reports/load-<timestamp>/")
    load.add_argument("--max-lag-p99-ms", type=float)
    load.add_argument("--max-failure-ratio", type=float)
    load.add_argument("--min-completed-jobs", type=int)
    add_load_options(load, locust=False)  # the mix: --subscribers, --cancel-share ... (harness._load_options)
    load.add_argument("--locustfile", type=Path, default=SHIPPED_LOCUSTFILE,
                      help="a locustfile of your own (e.g. one subclassing harness.load.SSEUser)")
    load.add_argument("locust_args", nargs=argparse.REMAINDER, help="after --: further locust options")
    return load


def locust_command(args, base_url: str, prefix: Path, target_pid: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "locust", "-f", str(args.locustfile), "--host", base_url,
               "-u", str(args.users), "-r", str(args.spawn_rate), "--run-time", f"{args.run_time}s",
               "--csv", str(prefix), "--csv-full-history", "--html", str(prefix.with_suffix(".html")),
               "--stop-timeout", "2", "--exit-code-on-error", "1"]
    if args.web:
        command += ["--autostart", "--autoquit", "10", "--web-host", "127.0.0.1"]
    else:
        command += ["--headless", "--only-summary"]
    if args.processes:
        command += ["--processes", str(args.processes)]
    if args.profile:
        command += ["--sse-profile", str(args.profile)]
    if target_pid:  # whose run-queue wait may excuse a timing (harness.load: only on a loopback host)
        command += ["--sse-target-pid", str(target_pid)]
    command += forwarded(args)
    extra = list(args.locust_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return command + extra


def main(args, console: Console) -> int:
    """Exit 0: thresholds met and no invariant broken; 1: not; 2: the user's mistake, or the run
    could not be done."""
    if importlib.util.find_spec("locust") is None:
        console.print("[red]" + escape("sse-harness load needs sse-harness[load] (locust is not installed here): "
                                       "pip install 'sse-harness[load]'"))
        return 2
    plan = plan_target(args.profile, args.target, timing_slack=args.timing_slack)
    profile = plan.profile
    if (args.stage_seconds is not None or args.stall_seconds is not None) and not profile.knobs:
        raise UsageError("--stage-seconds/--stall-seconds need a target that takes the test knobs")
    if profile.kind == "stream":
        refused = _stream_refusal(args, profile)
        if refused:
            raise UsageError(refused)
    if not args.locustfile.is_file():
        raise UsageError(f"no locustfile at {args.locustfile}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report_dir: Path = args.report_dir or Path("reports") / f"load-{stamp}"
    report_dir.mkdir(parents=True, exist_ok=True)
    return trio.run(_main, args, console, plan, report_dir)


async def _main(args, console: Console, plan: TargetPlan, report_dir: Path) -> int:
    from ._load_report import read_result, write_load_reports
    from ._server_process import ServerStartError

    profile = plan.profile
    prefix = report_dir / "locust"
    for stale in report_dir.glob("locust_*.csv"):
        stale.unlink()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    began = time.monotonic()
    if plan.embedded:
        console.print("starting the reference server (no --target given)")
    try:
        # The embedded server takes as many jobs at once as the users create.
        async with start_target(plan, max_concurrent_jobs=max(12, args.users // max(1, args.subscribers))) as target:
            base_url = target.base_url
            if target.embedded:
                console.print(f"reference server pid {target.target_pid} at {base_url}")
                target_pid = target.target_pid
            else:
                unreachable = await _unreachable(profile)
                if unreachable:
                    console.print(f"[red]{escape(unreachable)}")
                    return 2
                target_pid = await trio.to_thread.run_sync(listening_pid, base_url)
                if target_pid is not None:
                    console.print(f"the target runs on this host: pid {target_pid}")
            error = await _run_locust(args, console, base_url, prefix, target_pid)
    except ServerStartError as exc:
        console.print(f"[red]{escape(str(exc))}")
        return 2
    settings = {"users": args.users, "spawnRate": args.spawn_rate, "runTimeS": args.run_time,
                "processes": args.processes, **load_settings(args), "locustfile": str(args.locustfile),
                "locustArgs": [a for a in args.locust_args if a != "--"], "targetPid": target_pid}
    result = read_result(prefix, target=base_url, profile=profile.name, started_at=started_at,
                         duration_s=min(time.monotonic() - began, float(args.run_time)), settings=settings,
                         max_lag_p99_ms=args.max_lag_p99_ms, max_failure_ratio=args.max_failure_ratio,
                         min_completed_jobs=args.min_completed_jobs, error=error)
    written = write_load_reports(result, report_dir)
    figures = result.figures()
    console.print(f"jobs {figures['jobs']} (completed {figures['completedJobs']}), events {figures['events']}, "
                  f"lag {figures['lagMs']}, failure ratio {figures['failureRatio']}")
    for threshold in result.thresholds:
        console.print(("[green]" if threshold.met else "[bold red]") + threshold.sentence())
    for name, count in sorted(result.invariant_failures.items()):
        console.print(f"[bold red]invariant broken under load: {name} ({count}x)")
    if result.error:
        console.print(f"[bold magenta]the load run could not be done: {result.error}")
    for name, path in written.items():
        console.print(f"{name:>9}: {path}")
    console.print(f"locust CSVs and HTML: {prefix}_*.csv, {prefix.with_suffix('.html')}")
    return result.exit_code


async def _unreachable(profile) -> str:
    """Why a target of the user's cannot be reached ("" when it answers): any answer says it is
    there, to the contract's healthz, a stream profile's health path or its root."""
    reach = profile.url("healthz") if profile.kind == "contract" else \
        profile.base_url.rstrip("/") + (profile.claims.health or "/")
    try:
        async with httpx.AsyncClient(timeout=10.0, headers=profile.headers()) as client:
            await client.get(reach)
    except httpx.HTTPError as exc:
        return f"target unreachable at {reach}: {exc!r}"
    return ""


def _stream_refusal(args, profile) -> str:
    """Why a stream profile cannot be loaded with these arguments ("" if it can)."""
    if profile.stream is not None and profile.stream.hook:
        return (f"[stream].hook {profile.stream.hook!r} is an async function (httpx.AsyncClient); the load user "
                "runs under gevent and cannot call it: describe the stream with [stream] and [[setup]]")
    for flag, value in (("--job-id", args.job_id), ("--stream-url", args.stream_url), ("--scenes", args.scenes)):
        if value:
            return f"{flag} is for the contract's jobs; a stream profile opens its stream as [stream] says"
    if args.subscribers != 1:
        return "--subscribers is the contract's fan-out on a job; a stream profile's readers each open the stream"
    if args.session_seconds is not None and not args.session_seconds > 0:
        return f"--session-seconds must be positive, not {args.session_seconds}"
    return ""


async def _run_locust(args, console: Console, base_url: str, prefix: Path, target_pid: int | None) -> str:
    """Run locust to its end (bounded: run time + a grace); returns the harness's trouble, if any."""
    command = locust_command(args, base_url, prefix, target_pid)
    console.print("running: " + " ".join(command))
    limit = args.run_time + 60 + (30 if args.web else 0)
    process = None
    with trio.move_on_after(limit) as scope:
        process = await trio.run_process(command, check=False, stdin=subprocess.DEVNULL)
    if scope.cancelled_caught:
        return f"locust did not end within {limit}s (run time {args.run_time}s); stopped"
    if process is not None and process.returncode not in (0, 1):
        return f"locust exited with {process.returncode}"
    return ""
