"""The sse-reference-server command."""

from __future__ import annotations

import argparse
import gc
import logging
from functools import partial
from pathlib import Path

import trio

from ._app import serve
from ._config import ServerConfig


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(prog="sse-reference-server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed at start)")
    parser.add_argument("--data-dir", type=Path, default=Path("./server-data"))
    parser.add_argument("--keepalive", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--retry-ms", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiplies each stage's default least duration (not explicit stageSeconds)")
    parser.add_argument("--max-concurrent-jobs", type=int, default=4)
    parser.add_argument("--diagnostics", action="store_true", help="show resources (workdir, pids) in snapshots")
    parser.add_argument("--progress-interval", type=float, default=0.04, metavar="SECONDS")
    parser.add_argument("--stalled-client-seconds", type=float, default=30.0, metavar="SECONDS",
                        help="close a connection whose client has taken no bytes of a waiting write for this long")
    parser.add_argument("--idle-connection-seconds", type=float, default=30.0, metavar="SECONDS",
                        help="close a connection that has not sent a whole request for this long (default 30)")
    parser.add_argument("--event-log", choices=("sqlite", "memory"), default="sqlite",
                        help="sqlite: jobs and events kept in DATA_DIR/events.db across restarts (default); "
                             "memory: kept only while the process lives")
    parser.add_argument("--retention-hours", type=float, default=2.0,
                        help="finished jobs (history and artifact) are kept this long (default 2)")
    parser.add_argument("--max-log-mb", type=float, default=512.0,
                        help="past this many MB of stored events, the oldest finished jobs go first (default 512)")
    args = parser.parse_args(argv)
    if args.keepalive <= 0 or args.retry_ms < 0 or args.time_scale < 0 or args.max_concurrent_jobs < 1:
        parser.error("--keepalive must be > 0, --retry-ms and --time-scale >= 0, --max-concurrent-jobs >= 1")
    if not 0 < args.progress_interval <= 0.5:
        parser.error("--progress-interval must be in (0, 0.5]")
    if not args.stalled_client_seconds > 0:
        parser.error("--stalled-client-seconds must be > 0")
    if not args.idle_connection_seconds > 0:
        parser.error("--idle-connection-seconds must be > 0")
    if not args.retention_hours > 0 or not args.max_log_mb > 0:
        parser.error("--retention-hours and --max-log-mb must be > 0")
    return ServerConfig(
        host=args.host, port=args.port, data_dir=args.data_dir, keepalive_seconds=args.keepalive,
        retry_ms=args.retry_ms, time_scale=args.time_scale, max_concurrent_jobs=args.max_concurrent_jobs,
        diagnostics=args.diagnostics, progress_interval=args.progress_interval,
        stalled_client_seconds=args.stalled_client_seconds, event_log=args.event_log,
        idle_connection_seconds=args.idle_connection_seconds,
        retention_seconds=args.retention_hours * 3600, max_log_bytes=int(args.max_log_mb * 1024 * 1024),
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, config, hard_exit=True))
            gc.freeze()  # start-up objects out of the collector's way (tail latency at many streams)
            for bind in binds:
                print(f"listening on {bind}", flush=True)

    gc.set_threshold(50_000, 50, 100)
    trio.run(run)
    return 0
