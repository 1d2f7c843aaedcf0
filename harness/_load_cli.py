"""`sse-harness load`: locust (as its own process) with the shipped SSE user, thresholds that decide
the exit code, and the results in the report dir."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import trio
from rich.console import Console
from rich.markup import escape

from ._profile import ProfileError, load_profile
from ._load_starvation import loopback_port
from ._starvation import find_listening_pid

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


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share is within [0, 1], not {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_parser(sub) -> argparse.ArgumentParser:
    load = sub.add_parser(
        "load", help="load test on locust with the SSE user; thresholds decide the exit code",
        description="Run locust with the shipped SSE user (harness.load.SSEUser). Options after -- go to locust "
                    "as they are (e.g. -- --master --expect-workers 2).")
    load.add_argument("--target", help="base URL of the server under test (default: start the reference server)")
    load.add_argument("--profile", help="target profile TOML (default: the contract)")
    load.add_argument("--users", type=_positive_int, default=10)
    load.add_argument("--spawn-rate", type=float, default=10.0)
    load.add_argument("--run-time", type=run_time_seconds, default=30, help="e.g. 30s, 2m (default 30s)")
    load.add_argument("--processes", type=int, default=0, help="locust --processes: worker processes on this machine")
    load.add_argument("--web", action="store_true", help="serve locust's web UI (on 127.0.0.1:8089) while it runs")
    load.add_argument("--report-dir", type=Path, help="default reports/load-<timestamp>/")
    load.add_argument("--max-lag-p99-ms", type=float)
    load.add_argument("--max-failure-ratio", type=float)
    load.add_argument("--min-completed-jobs", type=int)
    load.add_argument("--subscribers", type=_positive_int, default=1, help="users following each job (fan-out)")
    load.add_argument("--cancel-share", type=_share, default=0.2,
                      help="share of jobs cancelled at a random stage (default 0.2)")
    load.add_argument("--cut-share", type=_share, default=0.2,
                      help="share of jobs cut once at a random moment and resumed with Last-Event-ID (default 0.2)")
    load.add_argument("--cut-within", type=float, default=3.0, help="cuts come within this many seconds of connecting")
    load.add_argument("--stage-seconds", type=float, help="job knob stageSeconds for every stage")
    load.add_argument("--stall-seconds", type=float, help="job knob stallSeconds in the first stage")
    load.add_argument("--scenes", type=int, help="job field scenes (1-20)")
    load.add_argument("--job-id", help="attach every user to this job instead of creating jobs")
    load.add_argument("--stream-url", help="attach every user to this stream URL instead of creating jobs")
    load.add_argument("--job-timeout", type=float, help="seconds a job may take (default: the profile's)")
    load.add_argument("--session-seconds", type=float,
                      help="a stream profile whose stream never ends by itself: seconds each reader follows it "
                           "(default 10)")
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
    options = {"--sse-subscribers": args.subscribers, "--sse-cancel-share": args.cancel_share,
               "--sse-cut-share": args.cut_share, "--sse-cut-within": args.cut_within,
               "--sse-stage-seconds": args.stage_seconds, "--sse-stall-seconds": args.stall_seconds,
               "--sse-scenes": args.scenes, "--sse-job-id": args.job_id, "--sse-stream-url": args.stream_url,
               "--sse-job-timeout": args.job_timeout, "--sse-session-seconds": args.session_seconds}
    for flag, value in options.items():
        if value is not None:
            command += [flag, str(value)]
    extra = list(args.locust_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return command + extra


def main(args, console: Console) -> int:
    if importlib.util.find_spec("locust") is None:
        console.print("[red]" + escape("sse-harness load needs sse-harness[load] (locust is not installed here): "
                                       "pip install 'sse-harness[load]'"))
        return 2
    try:
        profile = load_profile(args.profile, base_url=args.target)
    except ProfileError as exc:
        console.print(f"[red]bad profile: {exc}")
        return 2
    if args.stage_seconds is not None or args.stall_seconds is not None:
        if not profile.knobs:
            console.print("[red]--stage-seconds/--stall-seconds need a target that takes the test knobs")
            return 2
    if profile.kind == "stream":
        refused = _stream_refusal(args, profile)
        if refused:
            console.print(refused, style="red", markup=False)  # it names [sections]
            return 2
        args.target = args.target or profile.base_url  # the embedded server speaks the contract, not this stream
    if not args.locustfile.is_file():
        console.print(f"[red]no locustfile at {args.locustfile}")
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report_dir: Path = args.report_dir or Path("reports") / f"load-{stamp}"
    report_dir.mkdir(parents=True, exist_ok=True)
    return trio.run(_main, args, console, profile, report_dir)


async def _main(args, console: Console, profile, report_dir: Path) -> int:
    from ._load_report import read_result, write_load_reports

    prefix = report_dir / "locust"
    for stale in report_dir.glob("locust_*.csv"):
        stale.unlink()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    began = time.monotonic()
    error = ""
    target_pid: int | None = None
    if args.target:
        base_url = profile.base_url
        # Any answer says it is there: the contract's healthz, a stream profile's health path or its root.
        reach = profile.url("healthz") if profile.kind == "contract" else \
            base_url.rstrip("/") + (profile.claims.health or "/")
        try:
            async with httpx.AsyncClient(timeout=10.0, headers=profile.headers()) as client:
                await client.get(reach)
        except httpx.HTTPError as exc:
            console.print(f"[red]target unreachable at {reach}: {exc!r}")
            return 2
        target_pid = await trio.to_thread.run_sync(_loopback_pid, base_url)
        if target_pid is not None:
            console.print(f"the target runs on this host: pid {target_pid}")
        error = await _run_locust(args, console, base_url, prefix, target_pid)
    else:
        from ._server_process import ServerStartError, reference_server_args, server_process

        console.print("starting the reference server (no --target given)")
        with tempfile.TemporaryDirectory(prefix="sse-harness-load-") as data_dir:
            jobs = max(12, args.users // max(1, args.subscribers))
            try:
                async with server_process(reference_server_args(data_dir, max_concurrent_jobs=jobs)) as server:
                    console.print(f"reference server pid {server.pid} at {server.base_url}")
                    base_url, target_pid = server.base_url, server.pid
                    error = await _run_locust(args, console, base_url, prefix, target_pid)
            except ServerStartError as exc:
                console.print(f"[red]{escape(str(exc))}")
                return 2
    settings = {"users": args.users, "spawnRate": args.spawn_rate, "runTimeS": args.run_time,
                "processes": args.processes, "subscribers": args.subscribers, "cancelShare": args.cancel_share,
                "cutShare": args.cut_share, "stageSeconds": args.stage_seconds, "stallSeconds": args.stall_seconds,
                "scenes": args.scenes, "jobId": args.job_id, "streamUrl": args.stream_url,
                "locustfile": str(args.locustfile), "locustArgs": [a for a in args.locust_args if a != "--"],
                "targetPid": target_pid}
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


def _loopback_pid(base_url: str) -> int | None:
    """The pid listening on a loopback target's port (its run-queue wait is then measured), or None."""
    port = loopback_port(base_url)
    return find_listening_pid(port) if port else None


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
