"""A browser session on the target's streams: what one page saw, the waits on the target that end
at the contract's deadlines, the cuts at the proxy, and the browser's starvation observed.

A session is one page (``harness._browser.PageHandle``) in its own browser context behind its own
fault proxy and tap. ``SessionRecorder`` creates a session's jobs, waits on its page until every
stream delivered a terminal event or was CLOSED, and keeps its steps and notes; the wait ends
sooner, with a finding, as soon as the target is overdue (``job_stream_overdue``,
``connection_held``: pure functions over the tap's record). The result is a ``Session``, judged by
the cases with the same pure checks as a Python recording.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Collection, Sequence
from urllib.parse import urlsplit

import trio

from ._browser import BrowserNotFound, BrowserTimeout, BrowserUnavailable, PageHandle, PageTrace, find_browser
from ._browser_tap import Exchange
from ._client import Segment
from ._context import Context
from ._decoder import Event
from ._errors import HarnessError, Skip, TargetFault
from ._outcomes import Finding
from ._starvation import descendants, every
from ._timing import describe_arrivals

__all__ = ["COLLIDING_NAMES", "CUTS", "CUT_DELAY", "OVERDUE_HELD", "OVERDUE_LIMIT", "OVERDUE_RECONNECT",
           "OVERDUE_SILENT", "PAGE_OPEN", "POLL", "Recording", "Room", "Session", "SessionRecorder", "browser_path",
           "connection_held", "cut_after_events", "cut_room", "event_seen", "job_stream_overdue",
           "observe_browser_starvation", "session_failure", "starvation_allowance", "stream_retry", "target_port"]

CUTS = 3
# A cut acts this long after the tap sees an event on an open connection of the stream: after
# events, not bytes, so a target with terse events is cut as soon as a verbose one.
CUT_DELAY = 0.3
POLL = 0.2  # how often a session looks at its page and its tap while it waits on the target
PAGE_OPEN = 15.0  # how long a page may take to load (PageHandle.open)
COLLIDING_NAMES = ("error", "open")  # EventSource's own events, delivered to a listener of that type too


@dataclasses.dataclass(frozen=True)
class Session:
    """What one page session recorded: its trace, the jobs it followed, a Python recording of its
    first stream (uninterrupted; None when there is none), its steps and its notes (the wait's
    finding as ``overdue``, its kind as ``overdueKind``, when it ended at a deadline)."""

    name: str
    trace: PageTrace
    job_ids: tuple[str, ...]
    reference: Segment | None  # a Python recording of stream 0, uninterrupted
    steps: tuple[str, ...]
    notes: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Recording:
    """A run's sessions, recorded once and shared by the cases that judge them."""

    browser: str
    sessions: dict[str, Any]  # name -> Session, or the exception that stopped it

    def session(self, name: str) -> Session:
        """The session ``name``; what stopped it (a case's outcome) is raised."""
        value = self.sessions[name]
        if isinstance(value, BaseException):
            raise value
        return value


def target_port(ctx: Context) -> int:
    """The target's port, for a tap in front of it; Skip for a target that the harness's cleartext
    proxy on this host cannot stand in front of."""
    parts = urlsplit(ctx.profile.base_url)
    if parts.scheme != "http":
        raise Skip("the browser family runs through the harness's cleartext proxy: http:// targets only")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise Skip("the fault proxy only runs against a target on this host")
    return parts.port or 80


def stream_retry(segments: Sequence[Segment], *, last: bool = False) -> int | None:
    """The ``retry`` (ms) the stream sent first (``last``: most recently), None if it sent none."""
    return next((s.retry_ms for s in (reversed(segments) if last else segments) if s.retry_ms is not None), None)


OVERDUE_SILENT, OVERDUE_RECONNECT, OVERDUE_HELD, OVERDUE_LIMIT = "silent", "reconnect", "held", "limit"


def job_stream_overdue(segments: Sequence[Segment], tries: Sequence[float], now: float, *, deadline: float,
                       reconnect_within: float, terminal: Collection[str],
                       patient: Callable[[Event], bool],
                       allowance: Callable[[str, float, float], float] | None = None) -> tuple[str, Finding] | None:
    """Whether the target is overdue on one of a page's job streams at ``now`` (pure: the tap's record).

    ``segments`` are the stream's connections as the tap saw them, in order (an open one has end
    ``open``); ``tries`` the times the browser's connections were refused at the harness's proxy
    (an outage: the browser did try). Two deadlines, as for a Python recording:

    - ``silent``: the stream was open for more than ``deadline`` (the events deadline) in all
      since its last event (since the first request, before any), keep-alive comments not
      counting. Time between connections does not count: the target owes events on a connection.
    - ``reconnect``: the last connection ended without the terminal event and the browser has not
      tried again for more than ``reconnect_within``: the stream's ``retry`` told it to wait
      longer than the target promised (a browser that gave up for good is CLOSED: no wait).

    None while nothing is owed: no request yet (a browser's own queue, six connections per
    origin), a terminal event seen, or the last event says the job is queued (``patient``).
    ``allowance(role, start, end)``: how much of a window the machine's measured starvation
    explains (role "target" for a silence, "browser" for a reconnect): a deadline is extended
    by it, so that a wait ends at the target's deadline, not at the machine's.
    """
    events = [e for s in segments for e in s.events]
    if not segments or any(e.type in terminal for e in events):
        return None
    last = events[-1] if events else None
    if last is not None and patient(last):
        return None
    since = last.arrived_at if last is not None else segments[0].started_at
    open_for = sum(max(0.0, (now if s.end == "open" else s.ended_at) - max(s.started_at, since)) for s in segments)
    after = [r for s in segments for r in s.records if getattr(r, "arrived_at", since) > since]
    latest = segments[-1]
    if open_for > deadline and allowance is not None and open_for - allowance("target", since, now) <= deadline:
        return None  # the machine, not the target, may have taken the rest: wait on
    if open_for > deadline:
        what = f"event {last.id} ({last.type})" if last is not None else "the first request"
        return OVERDUE_SILENT, Finding(
            f"waited {deadline:.1f}s (the events deadline) for the job's next event on the browser's stream; "
            "it did not come", f"an event within {deadline:.1f}s while the job is not queued",
            f"{open_for:.2f}s of open stream since {what}, over {len(segments)} connection(s): "
            f"{describe_arrivals(after)}; "
            + ("the stream is still open" if latest.end == "open" else f"then {latest.end}: {latest.end_detail}"))
    if latest.end == "open":
        return None
    tried = max([latest.ended_at, *(t for t in tries if t >= latest.ended_at)])
    gap = now - tried
    if gap <= reconnect_within:
        return None
    if allowance is not None and gap - allowance("browser", tried, now) <= reconnect_within:
        return None  # the browser (or our loop) was starved meanwhile: wait on
    retry = stream_retry(segments, last=True)
    told = (f"the stream's retry: {retry} ms (the browser waits {retry / 1000:g}s)" if retry is not None
            else "the stream sent no retry (the browser waits its own default)")
    return OVERDUE_RECONNECT, Finding(
        f"waited {reconnect_within:.1f}s for the browser to reconnect after its connection ended mid-job; "
        f"it did not", f"a reconnect within {reconnect_within:.1f}s (the advertised retry, at least the events "
        "deadline)", f"no request for {gap:.2f}s since the connection ended ({latest.end}); {told}")


def starvation_allowance(ctx: Context) -> Callable[[str, float, float], float]:
    """``job_stream_overdue``'s allowance: the machine's measured starvation in a window, for
    ``role`` (and our own loop)."""
    return lambda role, start, end: ctx.starved().explained(start, end, role=role).total


def connection_held(segments: Sequence[Segment], now: float, *, close_within: float,
                    terminal: Collection[str]) -> tuple[Segment, float] | None:
    """A connection still open more than ``close_within`` after it carried a terminal event (pure:
    the tap's record), with how long it has been held since; None when there is none."""
    for segment in segments:
        if segment.end != "open":
            continue
        ended = next((e.arrived_at for e in segment.events if e.type in terminal), None)
        if ended is not None and now - ended > close_within:
            return segment, now - ended
    return None


@dataclasses.dataclass(frozen=True)
class Room:
    """What a stream left for a cut mid-job, from the tap's record: the time from the first event
    on a connection to the terminal event's arrival (inf when none came), the events before it
    and the bursts (reads within 50 ms of one another) they came in."""

    seconds: float
    events: int
    bursts: int
    together: int = 0  # events that reached the tap with the terminal event, in the same read

    def describe(self) -> str:
        if not self.events:
            return (f"all {self.together} event(s) reached the tap at once, with the terminal event" if self.together
                    else "no event reached the tap")
        span = "no terminal event came" if self.seconds == float("inf") else \
            f"the terminal event {self.seconds:.2f}s after the first"
        return f"{self.events} event(s) before the job's end, in {self.bursts} burst(s); {span}"


def cut_room(segments: Sequence[Segment], terminal: Collection[str]) -> Room:
    """How much of the job a cut could land in (pure: the tap's record of the stream)."""
    events = sorted((e for s in segments for e in s.events), key=lambda e: e.arrived_at)
    end = next((e.arrived_at for e in events if e.type in terminal), float("inf"))
    before = [e.arrived_at for e in events if e.arrived_at < end and e.type not in terminal]
    together = sum(1 for e in events if e.arrived_at == end)
    if not before:
        return Room(0.0, 0, 0, together)
    bursts = 1 + sum(1 for a, b in zip(before, before[1:]) if b - a > 0.05)
    return Room(end - before[0], len(before), bursts, together)


# -- the browser, for a session -------------------------------------------------------------

def browser_path(ctx: Context) -> str:
    """The browser to run: the one named (--browser), else one found; none found skips the
    family, a named one that is not there is the user's to fix (an error)."""
    try:
        return find_browser(ctx.browser)
    except BrowserNotFound as exc:
        raise Skip(str(exc)) from None
    except BrowserUnavailable as exc:
        raise HarnessError(str(exc)) from None


def session_failure(name: str, exc: Exception) -> Exception:
    """What a recording keeps for a session that raised ``exc``: a case's outcome as itself,
    else the session's error (a browser's timeout, its failure, or a bug of ours)."""
    if isinstance(exc, BrowserTimeout):
        return HarnessError(f"{exc} (the {name} session)")
    if isinstance(exc, (Skip, TargetFault, HarnessError)):
        return exc
    whose = "the browser failed" if type(exc).__module__.startswith("playwright") else "harness bug"
    return HarnessError(f"{whose} in the {name} session: {type(exc).__name__}: {exc}")


def observe_browser_starvation(ctx: Context) -> None:
    """Have the run's starvation monitor watch the browser's processes (Chromium, below the
    harness's process) as the role "browser": its wait for a core bounds what the machine may
    have cost its timers (a reconnect's delay, a try during an outage)."""
    ctx.starvation.observe("browser", every(2.0, lambda: descendants(os.getpid(), named="chrom")),
                           "Chromium, below the harness's process")


# -- one session's page and its wait on the target --------------------------------------------

# Of the streams asked about, those that delivered a terminal event or were CLOSED.
_DONE_ALL = ("([streams, types]) => streams.filter(s => __obs.some(o => o.s === s && ((o.k === 'ev' && o.message "
             "&& types.includes(o.type)) || o.rs === 2)))")


class SessionRecorder:
    """One session in the making: the jobs it creates, its steps and notes, and the wait on its
    page (``until_done``) that ends at the contract's deadlines; ``session`` is the result."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx, self.name = ctx, name
        self.steps: list[str] = []
        self.notes: dict[str, Any] = {}

    async def jobs(self, count: int, *, at_once: bool = False, **stage_seconds: float) -> list[str]:
        """``count`` jobs, every stage short (0.1 s) except those given (``Context.quick``); one
        after the other, or ``at_once`` (concurrent requests: the first job has not run on while
        the last is asked for). A refused job is the target's fault (``Context.create_job``)."""
        knobs = self.ctx.knobs(stageSeconds=self.ctx.quick(**stage_seconds))
        if "scenes" in self.ctx.profile.job_body:
            knobs["scenes"] = 1  # the least work that still makes every stage run
        if not at_once:
            ids = [await self.ctx.create_job(**knobs) for _ in range(count)]
        else:
            ids, failures = [""] * count, []

            async def create(index: int) -> None:
                try:
                    ids[index] = await self.ctx.create_job(**knobs)
                except Exception as exc:  # raised below as itself, not in a nursery's group
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(create, index)
            if failures:
                raise failures[0]
        self.steps.append(f"created {count} job(s){' at once' if at_once else ''} with {knobs}")
        return ids

    def paths(self, ids: list[str]) -> list[str]:
        """The jobs' stream paths, for ``PageHandle.start``."""
        return [self.ctx.profile.paths["events"].format(id=i) for i in ids]

    def reconnect_within(self) -> float:
        """How long a browser may take to reconnect after a connection ended mid-job: the retry
        the target advertises (healthz retryMs) with its tolerance, at least the events deadline."""
        ctx = self.ctx
        advertised = ctx.health.get("retryMs")
        if not isinstance(advertised, (int, float)) or isinstance(advertised, bool) or advertised < 0:
            return ctx.event_deadline
        return max(ctx.event_deadline, advertised / 1000 + ctx.tolerance(advertised / 1000))

    def overdue(self, page: PageHandle, streams: Sequence[int]) -> tuple[str, Finding] | None:
        """The first of ``streams`` on which the target is overdue now (``job_stream_overdue``)."""
        ctx = self.ctx
        tries = [e.at for e in page.rig.proxy.log if e.action == "refused"]
        now = time.monotonic()
        for s in streams:
            path = page.streams[s]
            found = job_stream_overdue([x.segment() for x in page.rig.tap.exchanges if x.target == path], tries,
                                       now, deadline=ctx.event_deadline, reconnect_within=self.reconnect_within(),
                                       terminal=ctx.profile.terminal_events, patient=ctx.is_queued,
                                       allowance=starvation_allowance(ctx))
            if found is not None and len(page.streams) > 1:
                kind, finding = found
                found = kind, dataclasses.replace(finding, message=f"stream {s + 1} of {len(page.streams)}: "
                                                                   f"{finding.message}")
            if found is not None:
                return found
        return self.held(page, streams, now)

    def held(self, page: PageHandle, pending: Sequence[int], now: float) -> tuple[str, Finding] | None:
        """A stream still awaited that the browser has not requested waits for a connection (six
        per origin); a connection the target holds open past the close-after-terminal deadline
        (``connection_held``) is then what it waits for: the target is overdue."""
        unasked = [s for s in pending if not any(x.target == page.streams[s] for x in page.rig.tap.exchanges)]
        if not unasked:
            return None
        close_within = self.ctx.limits().after_terminal
        for s, path in enumerate(page.streams):
            found = connection_held([x.segment() for x in page.rig.tap.exchanges if x.target == path], now,
                                    close_within=close_within, terminal=self.ctx.profile.terminal_events)
            if found is not None:
                segment, held = found
                close = self.ctx.profile.timing["terminal_close_seconds"]
                return OVERDUE_HELD, Finding(
                    f"stream {s + 1} of {len(page.streams)}: the target kept the connection open after the job's "
                    f"terminal event, so the browser had no connection for stream(s) "
                    f"{', '.join(str(u + 1) for u in unasked)} (at most six per origin)",
                    f"the connection closed within {close:g}s of the terminal event (waited {close_within:.1f}s)",
                    f"still open {held:.2f}s after the terminal event, {len(segment.comments)} comment(s) since "
                    f"the connection opened; stream(s) {', '.join(str(u + 1) for u in unasked)} never requested")
        return None

    @staticmethod
    def brought(page: PageHandle, stream: int) -> str:
        """What the tap saw of one of the page's streams: its requests and what they carried."""
        path = page.streams[stream]
        segments = [x.segment() for x in page.rig.tap.exchanges if x.target == path]
        records = [r for seg in segments for r in seg.records]
        return f"stream {stream + 1}: {len(segments)} request(s), {describe_arrivals(records)}"

    async def until_done(self, page: PageHandle, streams: range) -> bool:
        """Every stream delivered a terminal event or was CLOSED. The wait ends sooner, with the
        finding in ``notes["overdue"]``, as soon as the target is overdue on a stream still
        awaited (``job_stream_overdue``); the job time limit bounds the whole."""
        terminal = sorted(self.ctx.profile.terminal_events)
        limit = self.ctx.job_timeout
        outer = trio.current_time() + limit  # one limit for all the page's streams together
        pending = list(streams)
        while True:
            done = set(await page.evaluate(_DONE_ALL, [pending, terminal]))
            pending = [s for s in pending if s not in done]
            if not pending:
                return True
            found = self.overdue(page, pending)
            if found is None and trio.current_time() >= outer:
                found = OVERDUE_LIMIT, Finding(
                    f"the job's terminal event did not reach the browser within the job time limit ({limit:.0f}s)",
                    f"a terminal event within {limit:.0f}s (job_timeout_seconds)",
                    f"{len(pending)} of {len(streams)} stream(s) neither ended nor closed; "
                    + "; ".join(self.brought(page, s) for s in pending))
            if found is not None:
                kind, finding = found
                self.notes.update(overdue=finding, overdueKind=kind)
                self.steps.append(f"the wait on the target ended: {finding.message}")
                return False
            await trio.sleep(POLL)

    def session(self, trace: PageTrace, ids: list[str]) -> Session:
        """The session recorded: ``trace`` (``PageHandle.finish``) with its jobs, steps and notes."""
        return Session(self.name, trace, tuple(ids), None, tuple(self.steps), self.notes)


# -- the cuts at the proxy ------------------------------------------------------------------

async def cut_after_events(page: PageHandle, done: trio.Event, cut_times: list[float], cuts: int = CUTS) -> None:
    """Up to ``cuts`` cuts at the page's proxy (their times, on the tap's clock, appended to
    ``cut_times``) until ``done``: each CUT_DELAY after the tap saw an event on an open
    connection of the page's first stream (the browser has it by then), never a reconnect still
    on its way."""
    acted: set[int] = set()
    while len(cut_times) < cuts and not done.is_set():
        live = event_seen(page, acted)
        if live is None:
            await trio.sleep(0.02)
            continue
        acted.add(id(live))
        await trio.sleep(CUT_DELAY)
        if not done.is_set() and live.ended_at is None and page.rig.proxy.cut():
            cut_times.append(time.monotonic())  # the tap's clock


def event_seen(page: PageHandle, acted: Collection[int] = ()) -> Exchange | None:
    """A connection of the page's first stream, still open, answered 200, on which the tap has
    seen an event, and not in ``acted`` (ids): one the cut or the outage may act on."""
    for x in page.rig.tap.exchanges:
        if x.target == page.streams[0] and x.ended_at is None and x.status == 200 and id(x) not in acted \
                and x.segment().events:
            return x
    return None

