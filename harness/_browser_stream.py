"""Family 14's recording: a browser's EventSource on a stream profile's GET stream (no job API),
recorded once per run and shared by the family's cases (``stream_sessions``).

- a short Python read of the stream first (at most LEARN_EVENTS events or LEARN_SECONDS), for the
  event types the page must listen to (an EventSource delivers a type only to its listener);
  the page also listens to ``message``, the profile's end types, ``error`` and ``open``;
- ``plain``: a page with one EventSource, for a window (a stream that does not end) or until the
  stream's end and then, for a stream that ends, the browser's own reconnects after it;
  a broadcast stream (``shared``) is read by a Python reader at the same time (the yardstick);
- ``cut`` (ids and replay claimed): the same, with up to three cuts at the proxy, each
  CUT_DELAY after the tap sees an event on an open connection.

The waits on the target end at deadlines (``stream_overdue``): no byte on an open connection
for the stream's read deadline (``ctx.stream_limits().read``: three keep-alive intervals, at
least 5 s; 70 s when none is claimed), no reconnect after a connection ended short of the end
within the stream's retry (the browser's 3 s default when it sends none) with its tolerance, at
least that deadline; a stream that ends bounded by the job time limit. What a wait ended at is
kept as an ``Overdue`` in the session's notes (``overdue``), for the cases to judge.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import trio

from ._browser import BrowserRig, PageHandle, open_browser
from ._browser_session import (COLLIDING_NAMES, CUT_DELAY, CUTS, PAGE_OPEN, POLL, Recording, Session, browser_path,
                               cut_after_events, observe_browser_starvation, session_failure, starvation_allowance,
                               target_port)
from ._client import Segment
from ._context import Context
from ._decoder import Event
from ._errors import Skip, TargetFault
from ._tasks import background_nursery
from ._timing import describe_arrivals

__all__ = ["DEFAULT_RETRY", "WINDOW_SECONDS", "Overdue", "stream_overdue", "stream_sessions"]

LEARN_EVENTS, LEARN_SECONDS = 5, 4.0  # the first read, for the event types to listen to
WINDOW_SECONDS = 5.0  # how long the plain page watches a stream that does not end
CUT_WINDOW_MAX = 12.0  # and the cut page, at most (three cuts, each followed by the browser's retry)
DEFAULT_RETRY = 3.0  # what Chromium waits before reconnecting when the stream sends no retry
# After the stream's end: watched until CLOSED (and one retry period more), at most this long.
AFTER_END_MAX = 10.0
READER_MARGIN = 2.0  # the Python reader beside a page reads this much longer than the page


# -- the waits (pure: the tap's record) -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Overdue:
    """What a page's wait on the target ended at: a timing over its deadline, with its window
    (for the starvation that may explain it, the ``role``'s: "target" for a silence, "browser"
    for a reconnect), and what was awaited and seen."""

    message: str
    measured: float
    limit: float
    start: float
    end: float
    expected: str
    observed: str
    role: str = "target"


def stream_overdue(segments: Sequence[Segment], now: float, *, silence: float, reconnect_within: float,
                   is_end: Callable[[Event], bool],
                   allowance: Callable[[str, float, float], float] | None = None) -> Overdue | None:
    """Whether the target is overdue on a page's stream at ``now`` (pure: the tap's record).

    ``silence``: an open connection brought no byte (event or comment) for longer than that,
    counted from its last byte (from its request before any). ``reconnect_within``: the last
    connection ended short of the stream's end and no request followed for longer than that
    (the stream's retry told the browser to wait that long, or the browser stopped: a page
    CLOSED ends the wait anyway). None while nothing is owed: no request yet, or the end seen.
    ``allowance(role, start, end)``: as ``job_stream_overdue``'s (the target's starvation for a
    silence, the browser's for a reconnect): a deadline is extended by it, so that a wait ends at
    the target's deadline, not at the machine's."""
    if not segments or any(is_end(e) for s in segments for e in s.events):
        return None
    latest = segments[-1]
    if latest.end == "open":
        last = max([latest.started_at, *(t for t, _ in latest.chunks)])
        if now - last > silence and (allowance is None or now - last - allowance("target", last, now) > silence):
            return Overdue("the browser's open stream brought no byte within the read deadline", now - last, silence,
                           last, now, f"an event or a comment within {silence:.1f}s",
                           f"{now - last:.2f}s of silence on connection {len(segments)} "
                           f"(HTTP {latest.status}): {describe_arrivals(latest.records)}")
        return None
    gap = now - latest.ended_at
    if gap > reconnect_within and (allowance is None or gap - allowance("browser", latest.ended_at, now)
                                   > reconnect_within):
        told = (f"the stream's retry: {latest.retry_ms} ms" if latest.retry_ms is not None
                else "the stream sent no retry (the browser waits its own default)")
        return Overdue("the browser did not reconnect after its connection ended short of the stream's end",
                       now - latest.ended_at, reconnect_within, latest.ended_at, now,
                       f"a reconnect within {reconnect_within:.1f}s",
                       f"no request for {now - latest.ended_at:.2f}s since connection {len(segments)} ended "
                       f"({latest.end}: {latest.end_detail}); {told}", role="browser")
    return None


# -- the recording --------------------------------------------------------------------------

async def stream_sessions(ctx: Context) -> Recording:
    """Family 14's browser sessions on the profile's stream (plain, and cut when ids and replay
    are claimed), recorded once per run and shared by its cases. Each session's notes hold the
    event types listened to (``types``), the window watched, the cuts, a broadcast's Python
    reader's events (``reader``), and what a wait on the target ended at (``overdue``)."""
    return await ctx.shared("browser-stream-family", lambda: _record(ctx))


def _page_path(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("", "", parts.path or "/", parts.query, ""))


def _listened(ctx: Context, learned: Sequence[Event]) -> list[str]:
    return sorted({e.type for e in learned} | set(ctx.profile.meaning.end_types) | {"message", *COLLIDING_NAMES})


async def _record(ctx: Context) -> Recording:
    if ctx.profile.kind == "contract":
        raise Skip("the contract profile's streams are a job's: family 10 follows them in the browser")
    path = browser_path(ctx)
    port = target_port(ctx)
    request = await ctx.open_stream()
    if request.headers:
        raise Skip(f"the stream is opened with headers an EventSource cannot send ({', '.join(sorted(request.headers))}"
                   f", from the profile's [target]): no browser can open it as the profile says")
    observe_browser_starvation(ctx)
    learned: list[Segment] = []

    async def learn() -> None:
        seen: list[Event] = []

        def enough(event: Event) -> bool:
            seen.append(event)
            return len(seen) >= LEARN_EVENTS

        learned.append(await ctx.record_stream(request, stop=enough,
                                               limits=ctx.stream_limits(total=LEARN_SECONDS, after_terminal=0.5)))

    sessions: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(learn)  # while the browser starts
        async with open_browser(path) as browser:  # BrowserUnavailable: the harness's (an error)
            while not learned:  # the first read is bounded by its own limits
                await trio.sleep(0.05)
            first = learned[0]
            if first.status != 200:
                raise TargetFault(f"the stream answered HTTP {first.status}", 200,
                                  f"{first.status}: {first.body[:200]!r}")
            types = _listened(ctx, first.events)
            retry = (first.retry_ms / 1000) if first.retry_ms is not None else DEFAULT_RETRY
            plan = _Plan(ctx, request.url, _page_path(request.url), types, retry, first)

            async def one(name: str, make) -> None:
                try:
                    sessions[name] = await make(plan, browser, port)
                except Exception as exc:  # the browser's trouble, or a bug of ours: this session's error
                    sessions[name] = session_failure(name, exc)

            async with trio.open_nursery() as pages:
                pages.start_soon(one, "plain", _plain)
                if ctx.profile.claims.has("ids") and ctx.profile.claims.has("replay"):
                    pages.start_soon(one, "cut", _cut)
            version = browser.version
    return Recording(f"{path} (Chromium {version})", sessions)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What every session of the run shares: the stream, how it is read, what was learned first."""

    ctx: Context
    url: str
    path: str
    types: list[str]
    retry: float  # seconds: the stream's retry, else the browser's default
    learned: Segment

    @property
    def ends(self) -> bool:
        return self.ctx.profile.claims.has("ends")

    @property
    def shared(self) -> bool:
        return self.ctx.profile.stream.shared

    def reconnect_within(self) -> float:
        ctx = self.ctx
        return max(ctx.stream_limits().read, self.retry + ctx.tolerance(self.retry))

    def is_end(self, event: Event) -> bool:
        return self.ctx.profile.meaning.is_end(event)


def _segments(page: PageHandle) -> list[Segment]:
    return [x.segment() for x in page.rig.tap.exchanges if x.target == page.streams[0]]


async def _watch(plan: _Plan, page: PageHandle, notes: dict[str, Any], steps: list[str], window: float) -> None:
    """Follow the page's stream for ``window`` (a stream that does not end), or until the page
    delivered the end (or is CLOSED); the wait ends sooner at a deadline, noted in ``notes``."""
    ctx = plan.ctx
    limit = ctx.job_timeout if plan.ends else window
    outer = trio.current_time() + limit
    silence = ctx.stream_limits().read
    while True:
        segments = _segments(page)
        end = next((e for s in segments for e in s.events if plan.is_end(e)), None)
        if end is not None:
            delivered = await page.wait_for(
                "([t, d]) => __obs.some(o => (o.k === 'ev' && o.message && o.type === t && o.data === d) || o.rs === 2)",
                [end.type, end.data], timeout=3.0)
            steps.append("the stream's end reached the tap" + ("" if delivered else
                                                               "; the page did not deliver it within 3 s"))
            notes["endedAt"] = time.monotonic()
            return
        if await page.evaluate("() => __obs.some(o => o.s === 0 && o.rs === 2)"):
            steps.append("the page's EventSource is CLOSED")
            return
        found = stream_overdue(segments, time.monotonic(), silence=silence, reconnect_within=plan.reconnect_within(),
                               is_end=plan.is_end, allowance=starvation_allowance(ctx))
        if found is not None:
            notes["overdue"] = found
            steps.append(f"the wait on the target ended: {found.message}")
            return
        if trio.current_time() >= outer:
            if plan.ends:
                notes["overdue"] = Overdue(
                    "the stream's end did not reach the browser within the job time limit", limit, limit,
                    time.monotonic() - limit, time.monotonic(), f"the end within {limit:.0f}s (job_timeout_seconds)",
                    f"{len(segments)} request(s), {describe_arrivals([r for s in segments for r in s.records])}")
                steps.append(f"the wait on the target ended at the job time limit ({limit:.0f}s)")
            return
        await trio.sleep(POLL)


class _Reader:
    """A Python reader of a broadcast stream beside a page, the yardstick of what was sent: its
    events as they arrive, until ``stop`` (the page has finished, and a margin)."""

    def __init__(self, plan: _Plan, seconds: float) -> None:
        self.plan, self.seconds = plan, seconds
        self.events: list[Event] = []
        self.ended = "still reading when the page finished"
        self._scope = trio.CancelScope()

    async def run(self) -> None:
        plan = self.plan

        async def keep(record) -> None:
            if isinstance(record, Event):
                self.events.append(record)

        with self._scope:
            segment = await plan.ctx.record_stream(await plan.ctx.open_stream(), sink=keep,
                                                   limits=plan.ctx.stream_limits(total=self.seconds))
            self.ended = f"HTTP {segment.status}, {segment.end}: {segment.end_detail}"

    async def stop(self, after: float) -> None:
        await trio.sleep(after)
        self._scope.cancel()


async def _session(plan: _Plan, browser, port: int, name: str, window: float, *, cut: bool) -> Session:
    ctx = plan.ctx
    steps: list[str] = []
    notes: dict[str, Any] = {"types": tuple(plan.types), "window": window}
    cut_times: list[float] = []
    reader = _Reader(plan, (ctx.job_timeout if plan.ends else window) + READER_MARGIN) if plan.shared else None
    async with BrowserRig(port) as rig, background_nursery() as nursery:
        page = rig.page(browser, None, plan.types)
        await page.open(timeout=PAGE_OPEN)  # first: a slow page load must not eat into the window
        if reader is not None:
            nursery.start_soon(reader.run)
            await trio.sleep(0.2)  # the reader connected first: its record spans the page's
        await page.start([plan.path])
        steps.append(f"the page opened one EventSource on {plan.path} with listeners for {', '.join(plan.types)}"
                     + (", a Python reader beside it" if reader is not None else ""))
        done = trio.Event()
        if cut:
            nursery.start_soon(cut_after_events, page, done, cut_times)
        await _watch(plan, page, notes, steps, window)
        done.set()
        if plan.ends and "endedAt" in notes and not cut:
            await _after_end(plan, page, notes, steps)
        await trio.sleep(0.3)
        trace = await page.finish()
        if reader is not None:
            await reader.stop(READER_MARGIN / 4)  # what the page had, the reader has had by then
            notes.update(reader=tuple(reader.events), readerEnded=reader.ended)
    notes.update(cuts=len(cut_times), cutTimes=tuple(cut_times))
    if cut:
        steps.append(f"{len(cut_times)} cut(s) at the proxy, each {CUT_DELAY}s after the tap saw an event")
    return Session(name, trace, (), None, tuple(steps), notes)


async def _after_end(plan: _Plan, page: PageHandle, notes: dict[str, Any], steps: list[str]) -> None:
    """After the end: watch the browser's own reconnects until CLOSED and one retry period more,
    or for the close, two retry periods and a second (at most AFTER_END_MAX)."""
    hold = min(AFTER_END_MAX, plan.ctx.close_within + 2 * plan.retry + 1.0)
    started = trio.current_time()
    if await page.wait_for("() => __obs.some(o => o.s === 0 && o.rs === 2)", timeout=hold):
        await trio.sleep(min(plan.retry, max(0.0, started + hold - trio.current_time())))
    notes["holdSeconds"] = round(trio.current_time() - started, 2)
    steps.append(f"after the end: watched {notes['holdSeconds']}s (until CLOSED and a retry period more, "
                 f"at most {hold:.1f}s)")


async def _plain(plan: _Plan, browser, port: int) -> Session:
    return await _session(plan, browser, port, "plain", WINDOW_SECONDS, cut=False)


async def _cut(plan: _Plan, browser, port: int) -> Session:
    window = min(CUT_WINDOW_MAX, CUTS * (plan.retry + 1.0) + 1.5)
    return await _session(plan, browser, port, "cut", window, cut=True)
