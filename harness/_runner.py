"""The runner: selects cases, runs them against one target (overlapping waits), collects results."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import platform
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlsplit

import httpx
import trio

from ._context import Context
from ._errors import HarnessError, TargetFault
from ._outcomes import GATE_FAILED, CaseResult, Outcome, exit_code, gate
from ._places import Places
from ._registry import REGISTRY, Case, load_cases
from ._run_case import run_case
from ._preflight import PREFLIGHT_EVENTS, raise_for
from ._profile import Profile, ProfileError
from ._restart import Restart
from ._target import is_same_host
from ._starvation import descendants, find_listening_pid, process_name
from ._version import VERSION

__all__ = ["RunReport", "run_suite", "select_cases"]


@dataclasses.dataclass(frozen=True)
class RunReport:
    target: str
    profile: str
    started_at: str
    duration_ms: int
    results: tuple[CaseResult, ...]  # in case order
    environment: dict[str, Any]
    error: str = ""  # why the run as a whole could not be done
    # From a baseline (--baseline): failures expected there (id -> the reason written in it), and
    # listed cases that no longer fail as listed (stale: they fail the gate until removed).
    expected: dict[str, str] = dataclasses.field(default_factory=dict)
    stale: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> what it does now

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    def verdict(self, result: CaseResult, strict: bool = False) -> int:
        """What this result does to the gate (harness._outcomes.gate), with the baseline's say."""
        return gate(result.outcome, strict=strict, expected=result.id in self.expected, stale=result.id in self.stale)

    def failing(self, strict: bool = False) -> list[CaseResult]:
        """The results that fail the gate: fail (and non-strict when strict) unless the baseline
        expects it, and stale baseline entries."""
        return [r for r in self.results if self.verdict(r, strict) == GATE_FAILED]

    def exit_code(self, strict: bool = False) -> int:
        """0 nothing failed; 1 a case failed (or a baseline entry went stale); 2 the harness
        could not do its job."""
        return exit_code([self.verdict(r, strict) for r in self.results], run_error=bool(self.error))


def _matches(case_: Case, pattern: str) -> bool:
    """An id (4.3), a family (4), a glob (4.*), or words from a title (not digits alone)."""
    if fnmatch.fnmatch(case_.id, pattern) or case_.id.startswith(pattern.rstrip(".") + "."):
        return True
    return not pattern.replace(".", "").isdigit() and pattern.lower() in case_.title.lower()


def select_cases(only: Sequence[str] = (), skip: Sequence[str] = (), *,
                 cases: Iterable[Case] | None = None) -> list[Case]:
    """The cases to run, in natural id order; ``cases`` defaults to every registered one
    (load_cases: the entry points, the built-in families among them)."""
    pool = list(cases) if cases is not None else load_cases()
    chosen = [c for c in pool if not only or any(_matches(c, p) for p in only)]
    chosen = [c for c in chosen if not any(_matches(c, p) for p in skip)]
    return sorted(chosen, key=lambda c: c.sort_key)


# How long the preflight waits for a response head (12.3 owes one within 1 s): a stream whose head
# does not come (Flask-SSE on a quiet channel) is left to the cases after this, not after 10 s.
PREFLIGHT_HEAD = 3.0


async def _preflight(ctx: Context) -> None:
    """A stream profile checked against its stream's first events (harness._preflight): a
    ProfileError naming the key when they contradict it. A stream that brings nothing in time,
    or cannot be opened, says nothing here: the cases judge that."""
    seen: list = []

    def enough(event) -> bool:
        seen.append(event)
        return len(seen) >= PREFLIGHT_EVENTS

    try:
        await ctx.record_stream(stop=enough, limits=ctx.stream_limits(total=10.0, read=10.0,
                                                                      head=PREFLIGHT_HEAD * ctx.timing_slack))
    except (TargetFault, httpx.HTTPError):
        return
    raise_for(ctx.profile, seen)


def _observe_target(ctx: Context, base_url: str, pid: int | None) -> None:
    """Watch the target's wait for a core while cases run, when it runs on this host and its
    process can be seen: the pid given (the embedded server), else the one listening on the
    target's port; with its children of the same name (workers), looked up every 2 s, and found
    again by its port when it was restarted (family 11)."""
    if not ctx.same_host:
        return
    port = urlsplit(base_url).port or (443 if base_url.startswith("https") else 80)
    how = "started by the harness" if pid is not None else f"listening on port {port}"
    pid = pid if pid is not None else find_listening_pid(port)
    if pid is None:
        return  # a same-host target we cannot see: the machine's CPU pressure bounds it instead
    name = process_name(pid)
    found: dict[str, Any] = {"at": time.monotonic(), "pid": pid, "pids": [pid, *descendants(pid, named=name)]}

    def pids() -> list[int]:
        now = time.monotonic()
        if now - found["at"] > 2.0:
            found["at"] = now
            if not os.path.exists(f"/proc/{found['pid']}"):
                found["pid"] = find_listening_pid(port) or found["pid"]
            found["pids"] = [found["pid"], *descendants(found["pid"], named=name)]
        return found["pids"]

    ctx.starvation.observe("target", pids, f"pid {pid} ({name or '?'}, {how})")


# A server closes a keep-alive connection left idle for its own timeout (uvicorn's and hypercorn's
# 5 s, gunicorn's 2 s). A request sent on a pooled connection just as the server closes it gets no
# answer ("Server disconnected without sending a response"), which is no fault of the target's;
# a POST must not be sent again (RFC 9112, 9.3.1), so ours are not reused after this long idle.
POOL_IDLE_SECONDS = 1.0


def cases_client() -> httpx.AsyncClient:
    """The HTTP client every case of a run shares (``ctx.http``): no cap on connections (streams
    stay open), idle ones not reused past POOL_IDLE_SECONDS, 15 s per answer."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=50, keepalive_expiry=POOL_IDLE_SECONDS)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(15.0))


async def run_suite(profile: Profile, *, only: Sequence[str] = (), skip: Sequence[str] = (), parallel: int = 8,
                    same_host: str | bool = "auto", on_result: Callable[[Any], None] | None = None,
                    on_start: Callable[[int], None] | None = None,
                    browser: str | None = None, restart: Restart | None = None, target_pid: int | None = None,
                    cases: Iterable[Case] | None = None) -> RunReport:
    """Run the selected cases; exclusive ones (which fill the target's capacity) go last, alone.

    ``browser`` (a browser's path), ``restart`` (how to restart the target) and ``target_pid``
    (its process, when we started it) reach every case as the context's fields of those names;
    a command passes them from its harness._target.Target (``**target.suite_options()``).
    ``same_host``: auto|yes|no, or decided already (harness._target.is_same_host)."""
    cases = select_cases(only, skip, cases=cases)
    if on_start:
        on_start(len(cases))
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    results: dict[str, Any] = {}
    error = ""
    async with cases_client() as http:
        ctx = Context(profile, http, same_host=is_same_host(profile.base_url, same_host), browser=browser,
                      restart=restart, target_pid=target_pid)
        try:
            await ctx.load_settings()
            if profile.kind == "stream":
                await _preflight(ctx)
        except HarnessError as exc:
            error = str(exc)
        except ProfileError as exc:
            error = f"bad profile: {exc}"

        def done(result) -> None:
            results[result.id] = result
            if on_result:
                on_result(result)

        if error:
            for c in cases:
                done(CaseResult(c.id, c.title_for(profile), c.invariants, Outcome.ERROR, 0, (), {}, (),
                                f"not run: {error}", REGISTRY.origin(c), c.plots))
        else:
            places = Places(parallel)

            async def one(c) -> None:
                async with places.place():
                    done(await run_case(c, ctx))

            _observe_target(ctx, profile.base_url, target_pid)
            async with trio.open_nursery() as probe:
                probe.start_soon(ctx.starvation.run)
                async with trio.open_nursery() as nursery:
                    for c in cases:
                        if not c.exclusive:
                            nursery.start_soon(one, c)
                for c in cases:
                    if c.exclusive:
                        done(await run_case(c, ctx))
                probe.cancel_scope.cancel()
        environment = {
            "harness": VERSION,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "sameHost": ctx.same_host,
            "parallel": parallel,
            "advertised": ctx.health,
            "keepaliveSeconds": ctx.keepalive,
            "cancelDeadlineSeconds": ctx.cancel_deadline,
            "jobsCreated": len(ctx.created_jobs),
            "harnessLoopDelayMaxMs": round(max((lag for _, lag in ctx.starvation.own), default=0.0) * 1000, 1),
            "timingSlack": ctx.timing_slack,
            "starvation": ctx.starved().figures(),
            "retriedCases": sum(1 for r in results.values() if r.retries),
        }
    ordered = tuple(results[c.id] for c in cases if c.id in results)
    return RunReport(profile.base_url, profile.name, started_at, int((time.monotonic() - started) * 1000), ordered,
                     environment, error)
