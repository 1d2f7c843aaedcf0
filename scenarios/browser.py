"""Family 10, the real client: a browser's EventSource (system Chromium, driven by Playwright).

One browser per run. The first family-10 case to run records four page sessions at once, each in
its own browser context behind its own fault proxy and tap (its own origin, so its own six
connections): ``plain`` (a job to its end and after), ``cut`` (three cuts mid-job), ``outage``
(the proxy refuses connections for a while mid-job), each beside a Python recording of its job
(plain and cut follow the same one), and ``seven`` (seven jobs from one page).
Each case then judges its part with the same pure checks as everywhere (``checks``), the
browser's deliveries compared field for field with a Python recording of the same stream.

A session's wait on the target ends at the contract's deadlines, as a Python recording's does
(``stream_overdue``): no event on the open stream for longer than the events deadline while the
job is not queued, or no reconnect within the advertised retry after a connection ended mid-job.
The wait then ends with a finding that the cases judging that session report as a ``fail``; the
profile's job time limit only bounds the whole wait for the terminal event.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any, Awaitable, Callable, Collection, Sequence
from urllib.parse import urlsplit

import trio

from harness import Event, Segment
from harness._browser import (BrowserNotFound, BrowserRig, BrowserTimeout, BrowserUnavailable, PageHandle,
                              PageTrace, canonical, find_browser, open_browser)
from harness._timing import describe_arrivals
from harness._starvation import descendants, every
from harness._tasks import background_nursery

from . import checks
from ._core import Context, Finding, HarnessError, Judge, Severity, Skip, TargetFault, case, parse_data

TIMEOUT = 90.0  # a case's safety limit; the recording's own waits end well before it
CUTS = 3
# The cut (and the outage) acts this long after the tap sees an event on an open connection of
# the stream: after events, not bytes, so a target with terse events is cut as soon as a verbose one.
CUT_DELAY, OUTAGE_DELAY = 0.3, 0.4
# A stream that left less than the delay and this much more between its first event and its
# terminal event left no room for a cut mid-job (the margin: the cutter's polling and our loop).
ROOM_MARGIN = 0.2
# The job is created once the page is loaded: its stream's first request follows at once. Later
# than this, what the job did meanwhile came as one replay: the harness's lateness, not a burst.
LATE_REQUEST = 1.0
POLL = 0.2  # how often a session looks at its page and its tap while it waits on the target
ADVICE_SIX = ("serve HTTP/2 to browsers (one connection carries every stream), or offer one stream that "
              "multiplexes several jobs")
ADVICE_NAMES = ("rename the event type, or have pages tell a server's event (a MessageEvent with data) from "
                "the browser's own (a plain Event)")


@dataclasses.dataclass(frozen=True)
class Session:
    name: str
    trace: PageTrace
    job_ids: tuple[str, ...]
    reference: Segment | None  # a Python recording of stream 0, uninterrupted
    steps: tuple[str, ...]
    notes: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Recording:
    browser: str
    sessions: dict[str, Any]  # name -> Session, or the exception that stopped it

    def session(self, name: str) -> Session:
        value = self.sessions[name]
        if isinstance(value, BaseException):
            raise value
        return value


def _target_port(ctx: Context) -> int:
    parts = urlsplit(ctx.profile.base_url)
    if parts.scheme != "http":
        raise Skip("the browser family runs through the harness's cleartext proxy: http:// targets only")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise Skip("the fault proxy only runs against a target on this host")
    return parts.port or 80


def _stream_retry(segments: Sequence[Segment], *, last: bool = False) -> int | None:
    """The ``retry`` (ms) the stream sent first (``last``: most recently), None if it sent none."""
    return next((s.retry_ms for s in (reversed(segments) if last else segments) if s.retry_ms is not None), None)


def _retry_seconds(segments: list[Segment]) -> float:
    """The stream's own retry; without one a browser waits its default (about 3 s in Chromium)."""
    retry = _stream_retry(segments)
    return (3000 if retry is None else retry) / 1000


OVERDUE_SILENT, OVERDUE_RECONNECT, OVERDUE_HELD, OVERDUE_LIMIT = "silent", "reconnect", "held", "limit"


def stream_overdue(segments: Sequence[Segment], tries: Sequence[float], now: float, *, deadline: float,
                   reconnect_within: float, terminal: Collection[str],
                   patient: Callable[[Event], bool],
                   allowance: Callable[[str, float, float], float] | None = None) -> tuple[str, Finding] | None:
    """Whether the target is overdue on one of a page's streams at ``now`` (pure: the tap's record).

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
    retry = _stream_retry(segments, last=True)
    told = (f"the stream's retry: {retry} ms (the browser waits {retry / 1000:g}s)" if retry is not None
            else "the stream sent no retry (the browser waits its own default)")
    return OVERDUE_RECONNECT, Finding(
        f"waited {reconnect_within:.1f}s for the browser to reconnect after its connection ended mid-job; "
        f"it did not", f"a reconnect within {reconnect_within:.1f}s (the advertised retry, at least the events "
        "deadline)", f"no request for {gap:.2f}s since the connection ended ({latest.end}); {told}")


def starvation_allowance(ctx: Context) -> Callable[[str, float, float], float]:
    """``stream_overdue``'s allowance: the machine's measured starvation in a window, for
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


async def recording(ctx: Context) -> Recording:
    """The family's browser sessions, recorded once per run and shared by its cases."""
    return await ctx.shared("browser-family", lambda: _record(ctx))


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
    if isinstance(exc, (Skip, TargetFault, HarnessError)):
        return exc
    if isinstance(exc, BrowserTimeout):
        return HarnessError(f"{exc} (the {name} session)")
    whose = "the browser failed" if type(exc).__module__.startswith("playwright") else "harness bug"
    return HarnessError(f"{whose} in the {name} session: {type(exc).__name__}: {exc}")


async def _record(ctx: Context) -> Recording:
    path = browser_path(ctx)
    port = _target_port(ctx)
    ctx.knobs(stageSeconds={})  # Skip when the target takes no knobs
    # The browser's own wait for a core bounds what the machine may have cost its timers (10.3).
    ctx.starvation.observe("browser", every(2.0, lambda: descendants(os.getpid(), named="chrom")),
                           "Chromium, below the harness's process")
    types = sorted(set(ctx.profile.events.values()) | {"message"})
    sessions: dict[str, Any] = {}
    # plain and cut follow one job, outage another (a fault may treat a job's first reconnect
    # apart), each beside one uninterrupted Python recording of it: the host's two cores run
    # two jobs, not three.
    main = _Run(ctx, "main")
    jobs = _Jobs(("plain", "cut", "outage"))
    reference: dict[str, Segment] = {}
    try:
        async with open_browser(path) as browser:

            async def one(name: str, make: Callable[..., Awaitable[Session]]) -> None:
                try:
                    sessions[name] = await make(ctx, browser, port, types, jobs)
                except Exception as exc:  # the browser's trouble, or a bug of ours: this session's error
                    sessions[name] = session_failure(name, exc)
                finally:
                    jobs.opened(name)  # a session that ended before its page opened holds no one up

            async def watch(job_id: str) -> None:
                reference[job_id] = await ctx.watch(job_id)

            async def start_jobs() -> None:
                # The pages first, then the jobs: a slow page load (a busy machine, four browser
                # contexts at once) must not eat into the jobs the pages are about to follow.
                with trio.move_on_after(PAGE_OPEN + 5):
                    await jobs.all_open.wait()
                try:
                    shared, alone = await main.jobs(2, **{s: 0.7 for s in ctx.profile.stages})
                except Exception as exc:
                    jobs.fail(exc)
                    raise
                jobs.start({"plain": shared, "cut": shared, "outage": alone})
                nursery.start_soon(watch, shared)
                nursery.start_soon(watch, alone)

            async with trio.open_nursery() as nursery:
                for name, make in SESSIONS.items():
                    nursery.start_soon(one, name, make)
                try:
                    await start_jobs()
                except Exception:
                    pass  # in jobs.failure: every session waiting for a job raises it, and so does the recording
            version = browser.version
    except BrowserUnavailable as exc:
        raise HarnessError(str(exc)) from None
    if jobs.failure is not None:
        raise jobs.failure
    for name, value in sessions.items():
        if isinstance(value, Session) and name != "seven":
            sessions[name] = dataclasses.replace(value, reference=reference.get(value.job_ids[0]),
                                                 steps=(*main.steps, *value.steps))
    return Recording(f"{path} (Chromium {version})", sessions)


# -- the sessions --------------------------------------------------------------------------

PAGE_OPEN = 15.0  # how long a page may take to load (PageHandle.open)


class _Jobs:
    """The jobs the plain, cut and outage sessions follow, created once all their pages are open."""

    def __init__(self, waiting_for: Collection[str]) -> None:
        self.waiting = set(waiting_for)
        self.all_open = trio.Event()
        self.ready = trio.Event()
        self.ids: dict[str, str] = {}
        self.created_at = 0.0  # time.monotonic(), the tap's clock
        self.failure: BaseException | None = None

    def opened(self, name: str) -> None:
        self.waiting.discard(name)
        if not self.waiting:
            self.all_open.set()

    def start(self, ids: dict[str, str]) -> None:
        self.ids, self.created_at = ids, time.monotonic()
        self.ready.set()

    def fail(self, exc: BaseException) -> None:
        self.failure = exc
        self.ready.set()

    async def job(self, name: str) -> tuple[str, float]:
        """Once ``name``'s page is open: its job's id and when the job was created."""
        self.opened(name)
        with trio.fail_after(PAGE_OPEN + 30):  # every page opens within PAGE_OPEN, or its session ended
            await self.ready.wait()
        if self.failure is not None:
            raise self.failure if isinstance(self.failure, (Skip, TargetFault, HarnessError)) else \
                HarnessError(f"creating the jobs failed: {type(self.failure).__name__}: {self.failure}")
        return self.ids[name], self.created_at

# Of the streams asked about, those that delivered a terminal event or were CLOSED.
_DONE_ALL = ("([streams, types]) => streams.filter(s => __obs.some(o => o.s === s && ((o.k === 'ev' && o.message "
             "&& types.includes(o.type)) || o.rs === 2)))")


class _Run:
    """One session's page: its jobs, steps and notes."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx, self.name = ctx, name
        self.steps: list[str] = []
        self.notes: dict[str, Any] = {}

    async def jobs(self, count: int, **stage_seconds: float) -> list[str]:
        knobs = self.ctx.knobs(stageSeconds={s: stage_seconds.get(s, 0.1) for s in self.ctx.profile.stages})
        if "scenes" in self.ctx.profile.job_body:
            knobs["scenes"] = 1  # the least work that still makes every stage run
        ids = [await self.ctx.create_job(**knobs) for _ in range(count)]
        self.steps.append(f"created {count} job(s) with {knobs}")
        return ids

    def paths(self, ids: list[str]) -> list[str]:
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
        """The first of ``streams`` on which the target is overdue now (``stream_overdue``)."""
        ctx = self.ctx
        tries = [e.at for e in page.rig.proxy.log if e.action == "refused"]
        now = time.monotonic()
        for s in streams:
            path = page.streams[s]
            found = stream_overdue([x.segment() for x in page.rig.tap.exchanges if x.target == path], tries, now,
                                   deadline=ctx.event_deadline, reconnect_within=self.reconnect_within(),
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
        awaited (``stream_overdue``); the job time limit bounds the whole."""
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
        return Session(self.name, trace, tuple(ids), None, tuple(self.steps), self.notes)


async def _follow(run: _Run, rig: BrowserRig, browser, types: list[str], jobs: _Jobs) -> tuple[PageHandle, list[str]]:
    """The session's page, loaded first; then, once its job was created, its one EventSource."""
    page = rig.page(browser, None, types)
    await page.open(timeout=PAGE_OPEN)
    job_id, created_at = await jobs.job(run.name)
    await page.start(run.paths([job_id]))
    run.notes["jobCreatedAt"] = created_at
    run.steps.append("the page opened one EventSource with a listener per event type")
    return page, [job_id]


async def _plain(ctx: Context, browser, port: int, types: list[str], jobs: _Jobs) -> Session:
    run = _Run(ctx, "plain")
    async with BrowserRig(port) as rig:
        page, ids = await _follow(run, rig, browser, types, jobs)
        if await run.until_done(page, range(1)):
            retry = _retry_seconds([x.segment() for x in rig.tap.exchanges if x.target == page.streams[0]])
            # Until CLOSED (the close, a retry period, the 204), then 3 retry periods for any
            # further request; a browser never CLOSED is watched for the whole time.
            hold = min(5.0, ctx.profile.timing["terminal_close_seconds"] + 3 * retry + 0.5)
            started = trio.current_time()
            if await page.wait_for("() => __obs.some(o => o.rs === 2)", timeout=hold):
                await trio.sleep(min(3 * retry, max(0.0, started + hold - trio.current_time())))
            run.notes["holdSeconds"] = round(trio.current_time() - started, 2)
            run.steps.append(f"terminal event delivered; watched {run.notes['holdSeconds']}s more (until CLOSED "
                             f"and 3 retry periods more, at most {hold:.1f}s)")
        trace = await page.finish()
    return run.session(trace, ids)


async def _cut(ctx: Context, browser, port: int, types: list[str], jobs: _Jobs) -> Session:
    run = _Run(ctx, "cut")
    cut_times: list[float] = []
    async with BrowserRig(port) as rig, background_nursery() as nursery:
        page, ids = await _follow(run, rig, browser, types, jobs)
        done = trio.Event()
        nursery.start_soon(cut_after_events, page, done, cut_times)
        await run.until_done(page, range(1))
        done.set()
        await trio.sleep(0.3)
        trace = await page.finish()
    run.notes.update(cuts=len(cut_times), cutTimes=tuple(cut_times))
    run.steps.append(f"{len(cut_times)} cut(s) at the proxy while the job ran")
    return run.session(trace, ids)


async def _outage(ctx: Context, browser, port: int, types: list[str], jobs: _Jobs) -> Session:
    run = _Run(ctx, "outage")
    outage = 1.0
    async with BrowserRig(port) as rig, background_nursery() as nursery:
        page, ids = await _follow(run, rig, browser, types, jobs)
        done = trio.Event()

        async def offline() -> None:
            while _event_seen(page, ()) is None and not done.is_set():
                await trio.sleep(0.02)
            await trio.sleep(OUTAGE_DELAY)
            if done.is_set():
                return
            rig.proxy.refuse(outage)
            rig.proxy.cut()
            run.notes.update(outageSeconds=outage, outageAt=time.monotonic())  # the tap's clock
            await trio.sleep(outage)
            # A browser slower to retry than the outage is long (its own 3 s default, when the
            # stream sent no retry) must still meet it: keep the network down until it has.
            # Each window overlaps the next by far: a stall of our loop between two of them once
            # let the browser's try through unrefused (an error of ours on a correct server).
            for _ in range(40):
                if done.is_set() or any(e.action == "refused" for e in rig.proxy.log):
                    break
                rig.proxy.refuse(1.0)
                await trio.sleep(0.25)

        nursery.start_soon(offline)
        await run.until_done(page, range(1))
        done.set()
        await trio.sleep(0.3)
        trace = await page.finish()
    run.steps.append(f"network down {outage}s, {OUTAGE_DELAY}s after the tap saw an event: the proxy cut the "
                     "stream and refused every connection" if "outageAt" in run.notes
                     else "no outage: the job reached its end first")
    return run.session(trace, ids)


async def _seven(ctx: Context, browser, port: int, types: list[str], _: _Jobs) -> Session:
    run = _Run(ctx, "seven")
    async with BrowserRig(port) as rig:
        page = rig.page(browser, None, types)
        await page.open(timeout=PAGE_OPEN)  # first: a slow page load must not let short jobs end unwatched
        ids = await run.jobs(7, **{ctx.profile.stages[-1]: 1.0})
        await page.start(run.paths(ids))
        run.steps.append("the page opened seven EventSources at once, one per job")
        await run.until_done(page, range(7))
        trace = await page.finish()
    return run.session(trace, ids)


SESSIONS = {"plain": _plain, "cut": _cut, "outage": _outage, "seven": _seven}


async def cut_after_events(page: PageHandle, done: trio.Event, cut_times: list[float], cuts: int = CUTS) -> None:
    """Up to ``cuts`` cuts at the page's proxy (their times, on the tap's clock, appended to
    ``cut_times``) until ``done``: each CUT_DELAY after the tap saw an event on an open
    connection of the page's first stream (the browser has it by then), never a reconnect still
    on its way. Shared with family 14."""
    acted: set[int] = set()
    while len(cut_times) < cuts and not done.is_set():
        live = _event_seen(page, acted)
        if live is None:
            await trio.sleep(0.02)
            continue
        acted.add(id(live))
        await trio.sleep(CUT_DELAY)
        if not done.is_set() and live.ended_at is None and page.rig.proxy.cut():
            cut_times.append(time.monotonic())  # the tap's clock


def _event_seen(page: PageHandle, acted: Collection[int]) -> Any:
    """A connection of the page's first stream, still open, answered 200, on which the tap has
    seen an event, and not in ``acted`` (ids): one the cut or the outage may act on."""
    for x in page.rig.tap.exchanges:
        if x.target == page.streams[0] and x.ended_at is None and x.status == 200 and id(x) not in acted \
                and x.segment().events:
            return x
    return None


# -- judging -------------------------------------------------------------------------------

def _begin(judge: Judge, rec: Recording, session: Session) -> None:
    judge.step(f"browser: {rec.browser}")
    for step in session.steps:
        judge.step(step)


def _overdue(judge: Judge, session: Session, *kinds: str) -> bool:
    """The session's wait on the target ended at a deadline (of ``kinds``, any when none given):
    its finding is this case's fail. True when it did."""
    finding = session.notes.get("overdue")
    if finding is None or (kinds and session.notes.get("overdueKind") not in kinds):
        return False
    judge.add([finding])
    return True


def _reference(session: Session, ctx: Context) -> list:
    ref = session.reference
    if ref is None or not any(e.type in ctx.profile.terminal_events for e in ref.events):
        how = f"{ref.end}: {ref.end_detail}" if ref is not None else "no recording"
        raise TargetFault(f"the Python recording of the same job did not reach a terminal event ({how})")
    return [canonical(e) for e in ref.events]


def _delivered_before(trace: PageTrace, stream: int, moment: float) -> str | None:
    ids = [o.id for o in trace.of(stream, "ev") if o.message and o.at <= moment and o.id]
    return ids[-1] if ids else None


def _cuts_mid_job(ctx: Context, session: Session) -> list[float]:
    """The cuts that landed before the terminal event reached the tap: each owes a reconnect."""
    ended = _terminal_at(ctx, session)
    return [t for t in session.notes.get("cutTimes", ()) if t < ended]


def _terminal_at(ctx: Context, session: Session) -> float:
    """When the terminal event reached the tap (inf when it never did)."""
    return min((e.arrived_at for s in session.trace.segments(0) for e in s.events
                if e.type in ctx.profile.terminal_events), default=float("inf"))


def _closed_early(ctx: Context, session: Session, before: float = float("inf")) -> Finding | None:
    """The browser gave up on the stream for good (readyState CLOSED, before ``before``) without
    delivering a terminal event: what the target answered made it stop (a status other than 200
    or 204, a content type other than text/event-stream). The target's doing, with its answer."""
    trace = session.trace
    closed = trace.closed_at(0)
    if closed is None or closed >= before or any(
            e.type in ctx.profile.terminal_events and e.arrived_at <= closed for e in trace.events(0)):
        return None
    asked = [s for s in trace.segments(0) if s.started_at <= closed]
    if asked:
        last = asked[-1]
        answer = (f"HTTP {last.status}, content-type {last.header('content-type') or 'none'}, on request "
                  f"{len(asked)} ({len(last.events)} event(s) on it)")
    else:
        answer = "no request reached the target"
    return Finding("the browser gave up on the stream for good (readyState CLOSED) before the job's end",
                   "200 with content-type text/event-stream until the terminal event (204 once the job is over)",
                   f"CLOSED after {answer}; {len(trace.events(0))} event(s) delivered to the page")


def _no_room(ctx: Context, session: Session, action: str, delay: float, what: str) -> Exception:
    """No cut (or outage: ``action``) landed mid-job and the browser did not give up: whose doing
    that was, from the tap's record. A stream that left less than ``delay`` (and a margin) between
    its first event and its terminal event left no room (the job in one burst: buffered delivery,
    2.3's finding; or a job too short): a Skip that says so. Room left and nothing landed: the
    harness's proxy did not do its part, a HarnessError."""
    segments = session.trace.segments(0)
    room = cut_room(segments, ctx.profile.terminal_events)
    created = session.notes.get("jobCreatedAt")
    late = segments[0].started_at - created if segments and created is not None else 0.0
    if room.seconds < delay + ROOM_MARGIN and late > LATE_REQUEST and not _ran_on_after(ctx, segments):
        # The job was over (by its own terminal ts) before the browser asked: its replay came in
        # one read, which says nothing of the target. The browser's slowness is the machine's
        # when its measured starvation explains it (tried again), else the harness's.
        reason = (f"no {action} could land mid-job, so no {what}: the browser's first request for the stream "
                  f"reached the target {late:.2f}s after the job was created (the harness's browser was slow; "
                  f"the job was over): {room.describe()}")
        starved = ctx.starved().explained(created, segments[0].started_at, role="browser")
        if late - starved.total <= LATE_REQUEST:
            return TargetFault(f"{reason}; {starved.describe()}", "the browser's request before the job's end",
                               starved.figures(), Severity.CONFOUNDED)
        return HarnessError(f"{reason}; {starved.describe()}")
    if room.seconds < delay + ROOM_MARGIN:
        return Skip(f"no {action} could land mid-job, so no {what}: {room.describe()}, and the {action} comes "
                    f"{delay}s after the tap sees an event on the stream. A target that holds events back and "
                    "sends them in bursts fails 2.3 (delivery lateness)")
    tally = f" ({session.notes['cuts']} cut(s) in all)" if "cuts" in session.notes else ""
    return HarnessError(f"the harness's proxy made no {action} while the job ran{tally}, although the stream left "
                        f"room for one: {room.describe()}: no {what}")


def _ran_on_after(ctx: Context, segments: Sequence[Segment]) -> bool:
    """Whether the job was still running (by its terminal event's own ts) when the browser's
    first request reached the target: then a stream that came in one read was held back by
    the target, whenever the browser asked."""
    for segment in segments:
        for event in segment.events:
            if event.type in ctx.profile.terminal_events:
                ts = (parse_data(event) or {}).get("ts")
                return isinstance(ts, (int, float)) and ts / 1000 - segment.wall_offset > segments[0].started_at + 0.2
    return False


def _never_reconnected(judge: Judge, session: Session, cuts: list[float]) -> None:
    """A cut mid-job and no request after it: the browser waits what the stream told it to, or
    the target's answer stopped it. The target's doing."""
    segments = session.trace.segments(0)
    retry = _stream_retry(segments, last=True)
    states = session.trace.of(0, "state")
    judge.fail("the browser never reconnected after a cut mid-job", "a reconnect after the stream's retry",
               f"{len(cuts)} cut(s) mid-job, {len(segments)} connection(s) in all; the stream's retry: "
               f"{retry if retry is not None else 'none sent'} ms; readyState at the end: "
               f"{states[-1].ready_state if states else '?'}")


@case("10.1", "a browser follows a job to its end: every event once, in order, as a Python client saw it",
      invariants=("1", "3", "6"), timeout=TIMEOUT)
async def browser_follows(ctx: Context, judge: Judge) -> None:
    rec = await recording(ctx)
    session = rec.session("plain")
    _begin(judge, rec, session)
    events = session.trace.events(0)
    judge.evidence.update(delivered=len(events),
                          types={t: sum(1 for e in events if e.type == t) for t in sorted({e.type for e in events})})
    if _overdue(judge, session):
        return  # what the browser awaited never came: nothing more to compare
    reference = _reference(session, ctx)
    judge.evidence["pythonRecording"] = len(reference)
    judge.expect(any(e.type in ctx.profile.terminal_events for e in events),
                 "the browser never delivered a terminal event", sorted(ctx.profile.terminal_events),
                 [e.type for e in events[-3:]])
    judge.add(checks.check_ids(events))
    judge.add(checks.check_replay(events, reference))


@case("10.2", "a cut mid-job: the browser reconnects by itself with Last-Event-ID, nothing lost or repeated",
      invariants=("1", "6"), timeout=TIMEOUT)
async def browser_reconnects(ctx: Context, judge: Judge) -> None:
    rec = await recording(ctx)
    session = rec.session("cut")
    _begin(judge, rec, session)
    overdue = _overdue(judge, session)
    trace = session.trace
    segments = trace.segments(0)
    cuts = _cuts_mid_job(ctx, session)
    if overdue:
        if not cuts:
            return
    elif (closed := _closed_early(ctx, session, before=cuts[0] if cuts else float("inf"))) is not None:
        judge.add([closed])  # what the target answered made the browser give up before any cut
        return
    elif not cuts:
        raise _no_room(ctx, session, "cut", CUT_DELAY, "reconnect to judge")
    judge.evidence["connections"] = [
        {"atSeconds": round(s.started_at - segments[0].started_at, 3), "lastEventIdSent": s.last_event_id_sent,
         "status": s.status, "events": len(s.events), "end": s.end} for s in segments]
    if not any(s.started_at > cuts[0] for s in segments):
        if not overdue:
            _never_reconnected(judge, session, cuts)
        return
    for before, after in zip(segments, segments[1:]):
        delivered = _delivered_before(trace, 0, after.started_at)
        judge.expect(after.last_event_id_sent == (delivered or None),
                     "the reconnect did not carry the id of the last event the browser delivered",
                     delivered, after.last_event_id_sent)
        if before.events and not any(e.type in ctx.profile.terminal_events for e in before.events):
            judge.expect(after.status == 200, "a reconnect mid-job was refused", 200, after.status)
    events = trace.events(0)
    judge.add(checks.check_ids(events))
    if overdue:
        return  # the job's end never came: the replay cannot be compared whole
    judge.add(checks.check_replay(events, _reference(session, ctx)))
    if (closed := _closed_early(ctx, session)) is not None:
        judge.add([closed])  # after a reconnect: what the target answered made the browser give up


@case("10.3", "the browser's reconnection delay follows the stream's retry", invariants=("6",), timeout=TIMEOUT)
async def browser_retry(ctx: Context, judge: Judge) -> None:
    rec = await recording(ctx)
    session = rec.session("cut")
    _begin(judge, rec, session)
    segments = session.trace.segments(0)
    retry_ms = _stream_retry(segments)
    judge.evidence.update(retryMs=retry_ms, advertisedRetryMs=ctx.health.get("retryMs"))
    # A reconnect that never came is this case's subject; a stream that fell silent is 10.2's.
    overdue = _overdue(judge, session, OVERDUE_RECONNECT)
    cuts, ended = _cuts_mid_job(ctx, session), _terminal_at(ctx, session)
    if not cuts and not overdue and not any(s.ended_at < ended for s in segments[:-1]):
        # No connection ended mid-job: the only reconnect (if any) follows the job's end, after a
        # stream that may have come in one burst (the page's error event then waits behind it).
        if _overdue(judge, session):
            return  # the stream fell silent: 10.2 says so too
        if _closed_early(ctx, session) is not None:
            raise Skip("no reconnect to time: the browser gave up on the stream for good (readyState CLOSED) "
                       "before any cut, at what the target answered; 10.2 reports it")
        raise _no_room(ctx, session, "cut", CUT_DELAY, "delay to measure")
    # From the moment the page learned the connection was gone (its error event, where the browser
    # starts its reconnect timer) to the reconnect's arrival at the tap. Both ends are noted by our
    # own loop: a stall of it can move either one (a late note of the error shortens the delay, a
    # late note of the request lengthens it), so our stall is the measurement's uncertainty, not a
    # correction in one direction.
    errors = [o.at for o in session.trace.of(0, "error")]
    delays, own, windows = [], [], []
    starved = ctx.starved()
    for before, after in zip(segments, segments[1:]):
        noticed = [t for t in errors if before.started_at < t <= after.started_at]
        since = noticed[-1] if noticed else before.ended_at
        own.append(starved.own_during(since, after.started_at))
        delays.append(after.started_at - since)
        windows.append((since, after.started_at))
    if not delays:
        # No reconnect to time. When the session's wait ended at a deadline (the stream fell silent:
        # 10.2 says so too), that is what was seen; "never reconnected" only when it kept watching.
        if overdue or _overdue(judge, session):
            return
        # No reconnect came at all: a browser that the target's answer closed for good (readyState
        # CLOSED, whether it said so just before or just after our cut landed) has none to time.
        if _closed_early(ctx, session) is not None:
            raise Skip("no reconnect to time: the browser gave up on the stream for good (readyState CLOSED) "
                       "at what the target answered; 10.2 reports it")
        _never_reconnected(judge, session, cuts)
        return
    browser = starved.explained(windows[0][0], windows[-1][1], own=False, role="browser")
    judge.evidence.update(delaysMs=[round(d * 1000) for d in delays], ownDelayMs=[round(d * 1000) for d in own],
                          starvation=browser.figures())
    if retry_ms is None:
        judge.fail("the stream sent no retry field: the browser fell back on its own default",
                   "retry: <ms> first in the stream", f"reconnects after {', '.join(f'{d:.2f}s' for d in delays)}")
        return
    retry = retry_ms / 1000
    # The browser's timers and our own proxy and tap share two busy cores: the tolerance is the
    # contract's, but at least half a second, and the typical (median) delay is judged.
    tolerance = max(ctx.tolerance(retry), 0.5 * ctx.timing_slack)
    typical = statistics.median(delays)
    judge.evidence.update(toleranceMs=round(tolerance * 1000), medianDelayMs=round(typical * 1000))
    judge.add(checks.outside_range(
        "the browser's reconnection delay does not follow the stream's retry", measured=typical, low=retry - 0.1,
        high=retry + tolerance, uncertainty=max(own), explained=browser, expected=f"{retry:.3f}s (+{tolerance:.2f}s)",
        observed=f"median {typical:.3f}s of {', '.join(f'{d * 1000:.0f}' for d in delays)} ms"))
    judge.step(f"{len(delays)} reconnects, retry {retry_ms} ms: delays "
               + ", ".join(f"{d * 1000:.0f} ms" for d in delays)
               + f" (our own loop stalled up to {max(own) * 1000:.0f} ms in them)")


@case("10.4", "after the end the browser's own reconnect gets 204 and stops (CLOSED, no more requests)",
      invariants=("3", "6"), timeout=TIMEOUT)
async def browser_stops(ctx: Context, judge: Judge) -> None:
    rec = await recording(ctx)
    session = rec.session("plain")
    _begin(judge, rec, session)
    overdue = _overdue(judge, session)
    trace = session.trace
    segments = trace.segments(0)
    ending = next((i for i, s in enumerate(segments) if any(e.type in ctx.profile.terminal_events for e in s.events)),
                  None)
    if ending is None:
        if overdue:
            return  # the wait for the end ended at its deadline: its finding says what came instead
        raise TargetFault("no connection carried a terminal event to the browser")
    judge.add(checks.check_terminal(segments[ending], ctx.profile,
                                    close_within=ctx.profile.timing["terminal_close_seconds"]))
    after = segments[ending + 1:]
    end_at = segments[ending].ended_at
    closed = trace.closed_at(0)
    judge.evidence.update(
        watchedSeconds=session.notes.get("holdSeconds"),
        reconnectsAfterEnd=[{"afterSeconds": round(s.started_at - end_at, 3), "status": s.status,
                             "lastEventIdSent": s.last_event_id_sent, "events": len(s.events)} for s in after[:20]],
        closedAfterSeconds=round(closed - end_at, 3) if closed is not None else None)
    if after:
        judge.expect(after[0].status == 204, "a finished job's reconnect was not answered 204, so the browser "
                     "does not stop", 204, after[0].status)
    judge.expect(len(after) <= 1, f"the browser reconnected {len(after)} times after the job's end "
                 f"(in {session.notes.get('holdSeconds')}s): it will go on forever", "one reconnect, answered 204",
                 [s.status for s in after[:10]])
    judge.expect(closed is not None, "the browser's EventSource never reached readyState CLOSED", "CLOSED",
                 trace.of(0, "state")[-1].ready_state if trace.of(0, "state") else None)


@case("10.5", "seven jobs followed at once from one page: no stream waits for a connection",
      invariants=("8",), timeout=TIMEOUT)
async def browser_seven(ctx: Context, judge: Judge) -> None:
    rec = await recording(ctx)
    session = rec.session("seven")
    _begin(judge, rec, session)
    overdue = _overdue(judge, session)
    trace = session.trace
    for s, job_id in enumerate(session.job_ids):
        events = trace.events(s)
        judge.expect(any(e.type in ctx.profile.terminal_events for e in events),
                     f"job {s + 1} ({job_id}): the browser never delivered its terminal event",
                     "a terminal event", f"{len(events)} events")
        judge.add(checks.check_ids(events))
    if overdue:
        return  # the streams the target left hanging hold the browser's connections: no limit to measure
    firsts = [min((x for x in trace.exchanges if x.target == p), key=lambda x: x.started_at, default=None)
              for p in trace.streams]
    if any(f is None for f in firsts):
        raise TargetFault("some job's stream was never requested by the browser")
    start = min(f.started_at for f in firsts)
    # How many stream connections were open at once, and when that peak was first reached.
    spans = [(x.started_at, x.ended_at if x.ended_at is not None else float("inf"))
             for x in trace.exchanges if x.target in trace.streams]
    moments = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda m: (m[0], m[1]))
    open_now, peak, peak_at = 0, 0, start
    for at, step in moments:
        open_now += step
        if open_now > peak:
            peak, peak_at = open_now, at
    ends = [b for _, b in spans if b >= peak_at]
    # A stream waited when its first request reached the target only once the pool was full
    # and another stream's connection had ended.
    waits = [(s, first.started_at - start) for s, first in enumerate(firsts)
             if first.started_at > peak_at and any(e <= first.started_at for e in ends)]
    judge.evidence.update(
        requestedAtSeconds=[round(f.started_at - start, 3) for f in firsts], mostOpenAtOnce=peak,
        httpVersions=sorted({f.version for f in firsts}),
        opensAtSeconds=[round(o[0].at - start, 3) if o else None for o in (trace.of(s, "open") for s in range(7))])
    if peak >= 7:
        judge.step("all seven streams were open at once")
    elif waits:
        worst = max(w for _, w in waits)
        judge.non_strict(f"at most {peak} of 7 streams were open at once ({firsts[0].version or 'HTTP/1.1'}: the "
                         f"browser opens at most 6 connections per origin); {len(waits)} waited for another to "
                         f"end, so a page following 7 jobs hangs on the 7th: {ADVICE_SIX}", "7 streams at once",
                         f"stream {waits[-1][0] + 1} reached the target {worst:.2f}s after the first")
    elif judge.outcome() != "fail":
        # Nothing the target did: the harness's jobs were over before the browser had asked for
        # every stream, so its connection limit was never reached.
        raise HarnessError(f"the harness's seven jobs ended too soon to judge the browser's connection limit: at "
                           f"most {peak} stream connections were open at once and no stream waited for another "
                           f"to end (first requests {max(f.started_at for f in firsts) - start:.2f}s apart)")


@case("10.6", "event types named like EventSource's own events (error, open) get the browser's too",
      invariants=(), timeout=TIMEOUT)
async def browser_names(ctx: Context, judge: Judge) -> None:
    rec = await recording(ctx)
    colliding = sorted(t for t in set(ctx.profile.events.values()) if t in COLLIDING_NAMES)
    used = [name for name in ("cut", "outage") if isinstance(rec.sessions.get(name), Session)]
    if not used:
        rec.session("cut")  # raises what stopped it: the target's fault, the harness's trouble or a skip
        raise HarnessError("neither the cut nor the outage session was recorded")
    judge.step(f"browser: {rec.browser}; sessions {', '.join(used)}")
    judge.evidence["contractTypesColliding"] = colliding
    judge_name_collisions(judge, colliding, [rec.sessions[name].trace for name in used])


COLLIDING_NAMES = ("error", "open")  # EventSource's own events, delivered to a listener of that type too


def judge_name_collisions(judge: Judge, colliding: Sequence[str], traces: Sequence[PageTrace]) -> None:
    """The event types in ``colliding`` share a name with EventSource's own events: count, over
    the pages' first streams, the browser's own (plain) events that reached those types'
    listeners, and the server's (MessageEvents) of those types; non-strict per name, with the
    advice. Shared with family 14."""
    counts: dict[str, int] = {t: 0 for t in colliding}
    sent: dict[str, int] = {t: 0 for t in colliding}
    drops = 0
    for trace in traces:
        drops += len(trace.of(0, "error"))
        for o in trace.of(0, "ev"):
            if o.type in counts:
                if o.message:
                    sent[o.type] += 1
                else:
                    counts[o.type] += 1
    judge.step(f"{drops} connection error(s) seen by onerror")
    judge.evidence.update(browserEventsToTypeListener=counts, serverEventsOfThoseTypes=sent, connectionErrors=drops)
    for name in colliding:
        judge.non_strict(f"a listener for the event type '{name}' also received {counts[name]} of the browser's "
                         f"own {name} events (plain Events without data) in {drops} connection errors: "
                         f"{ADVICE_NAMES}", "no collision with EventSource's own event names",
                         f"{counts[name]} browser {name} events")
    if not colliding:
        judge.step("no event type is named error or open")


@case("10.7", "an outage mid-job: the browser keeps retrying and resumes with no gap", invariants=("1", "6"),
      timeout=TIMEOUT)
async def browser_outage(ctx: Context, judge: Judge) -> None:
    rec = await recording(ctx)
    session = rec.session("outage")
    _begin(judge, rec, session)
    overdue = _overdue(judge, session)
    trace = session.trace
    refused = sum(1 for e in trace.proxy_log if e.action == "refused")
    segments = trace.segments(0)
    judge.evidence.update(refusedConnections=refused, connections=[
        {"lastEventIdSent": s.last_event_id_sent, "status": s.status, "events": len(s.events), "end": s.end}
        for s in segments])
    if overdue:
        return  # the wait on the target ended at its deadline: its finding says what came instead
    outage_at = session.notes.get("outageAt")
    # The browser gave up for good before the outage (the target's answer: 10.7's fail, whatever
    # the outage did) or after it (a reconnect answered with a status other than 200 or 204:
    # every open tab is stranded).
    closed = _closed_early(ctx, session)
    if closed is not None:
        judge.add([closed])
        if outage_at is None or not refused:
            return
    elif outage_at is None or outage_at >= _terminal_at(ctx, session):
        raise _no_room(ctx, session, "outage", OUTAGE_DELAY, "outage to ride through")
    elif not refused:
        # The browser owed a try within the stream's retry. When the machine's measured starvation
        # of the browser in that window explains its silence, the case is tried again; otherwise
        # our outage did not do its part: the harness's trouble.
        window = float(session.notes["outageSeconds"]) + 10.0
        retry = (_stream_retry(segments, last=True) or 3000) / 1000
        starved = ctx.starved().explained(outage_at, outage_at + window, role="browser")
        reason = (f"the harness's outage refused no connection: the browser did not try while the proxy kept the "
                  f"network down ({session.notes['outageSeconds']}s, kept down up to 10s more until a try); "
                  f"{starved.describe()}")
        if window - starved.total <= retry + ctx.tolerance(retry):
            raise TargetFault(reason, f"a try within the stream's retry ({retry:g}s)", starved.figures(),
                              Severity.CONFOUNDED)
        raise HarnessError(reason)
    reference = _reference(session, ctx)
    events = trace.events(0)
    judge.add(checks.check_ids(events))
    judge.add(checks.check_replay(events, reference))
