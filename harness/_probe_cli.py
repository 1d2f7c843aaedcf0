"""`sse-harness probe URL`: record a stream, a reconnect with the last id it saw (and, for a
stream that ended, a resume from its middle), say what was seen and write a draft stream
profile (harness._probe) that `sse-harness run --profile` accepts as it is."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trio
from rich.console import Console
from rich.markup import escape

from ._client import Limits, Segment, record
from ._probe import analyse, reconnect_pause, resume_id, stream_problem
from ._probe_render import render_profile, render_summary
from ._errors import ProfileError, UsageError
from ._target import plan_target

__all__ = ["add_parser", "main", "observe"]

RECONNECT_EVENTS = 5  # enough of a reconnect to tell a restart from a resume


def add_parser(sub) -> argparse.ArgumentParser:
    probe = sub.add_parser(
        "probe", help="watch a stream and write a draft stream profile for it",
        description="Open the stream, then reconnect with the last id seen; print what was seen (to stderr) and "
                    "write a draft stream profile (to stdout, or --out) for `sse-harness run --profile`.")
    probe.add_argument("url", help="the stream's URL, e.g. http://127.0.0.1:8080/events")
    probe.add_argument("--method", type=str.upper, help="GET (default) or POST (the default with --data)")
    probe.add_argument("--data", help="the request body (@FILE reads a file); JSON is sent as application/json "
                                      "unless a Content-Type header is given")
    probe.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable")
    probe.add_argument("--seconds", type=float, default=20.0,
                       help="how long to watch the stream when it does not end by itself (default 20)")
    probe.add_argument("--out", type=Path, metavar="FILE", help="write the draft here (default: stdout)")
    return probe


async def observe(url: str, *, method: str = "GET", content: bytes | None = None,
                  headers: dict[str, str] | None = None, seconds: float = 20.0,
                  client: httpx.AsyncClient | None = None) -> tuple[Segment, Segment | None, Segment | None, float]:
    """The first connection, the reconnect with its last id, the resume from its middle (None
    when not made) and the pause before the reconnect. Every connection is bounded by
    ``seconds``."""
    limits = Limits(connect=5.0, read=seconds + 5.0, total=seconds, max_bytes=16 << 20)
    opened = dict(method=method, content=content, headers=headers, limits=limits, client=client)
    first = await record(url, **opened)
    if stream_problem(first):
        return first, None, None, 0.0
    pause = reconnect_pause(first)
    await trio.sleep(pause)
    seen = 0

    def enough(_event) -> bool:
        nonlocal seen
        seen += 1
        return seen >= RECONNECT_EVENTS

    again = await record(url, last_event_id=first.last_event_id or None, stop=enough, **opened)
    middle = resume_id(first, again)
    resume = None
    if middle is not None:
        resume = await record(url, last_event_id=middle, **opened)
    return first, again, resume, pause


def _request(args) -> tuple[str, bytes | None, dict[str, str], str | None]:
    """Method, body, headers and the body as the draft writes it; UsageError says what is wrong."""
    headers: dict[str, str] = {}
    for text in args.header:
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            raise UsageError(f"--header must look like 'Name: value', not {text!r}")
        headers[name.strip()] = value.strip()
    body = args.data
    if body is not None and body.startswith("@"):
        try:
            body = Path(body[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"--data {args.data}: {exc}") from None
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        try:
            json.loads(body)
            headers["Content-Type"] = "application/json"
        except ValueError:
            pass
    method = args.method or ("POST" if body is not None else "GET")
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        raise UsageError(f"--method must be GET or POST (or PUT, PATCH, DELETE), not {method}")
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"the URL must be http://HOST[:PORT]/PATH or https://..., not {args.url!r}")
    if not args.seconds > 0:
        raise UsageError(f"--seconds must be more than 0, not {args.seconds}")
    return method, None if body is None else body.encode(), headers, body


def main(args, console: Console) -> int:
    said = Console(stderr=True, highlight=False, soft_wrap=True)  # what was seen: stderr, so stdout is the draft alone
    method, content, headers, body = _request(args)  # UsageError: said by the command line, exit 2
    said.print(f"probing {escape(args.url)} for up to {args.seconds:g} s ...")
    first, again, resume, pause = trio.run(lambda: observe(args.url, method=method, content=content,
                                                           headers=headers, seconds=args.seconds))
    findings = analyse(first, again, resume, method=method, body=body, request_headers=headers, paused=pause)
    for line in render_summary(findings):
        said.print(escape(line))
    if findings.problem:
        said.print(f"[red]no draft: {escape(findings.problem)}")
        return 2
    draft = render_profile(findings, when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    problem = _loads(draft)
    if problem:  # the harness's own bug: say it, and still show the draft
        said.print(f"[bold magenta]the draft does not load ({escape(problem)}); it follows, fix it by hand")
    if args.out is not None:
        try:
            args.out.write_text(draft)
        except OSError as exc:
            said.print(f"[red]cannot write {args.out}: {escape(str(exc))}")
            sys.stdout.write(draft)
            return 2
        said.print(f"draft profile: {args.out} (next: sse-harness run --profile {args.out})")
    else:
        sys.stdout.write(draft)
    return 2 if problem else 0


def _loads(draft: str) -> str:
    """What `run --profile` would say against the draft ("" when it loads)."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=True) as file:
        file.write(draft)
        file.flush()
        try:
            plan_target(file.name)
        except ProfileError as exc:
            return str(exc)
    return ""
