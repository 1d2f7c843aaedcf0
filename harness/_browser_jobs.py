"""Family 10's recording: four browser sessions on the contract's jobs, recorded at once, once per
run, and shared by the family's cases (``job_sessions``).

Each session is a page in its own browser context behind its own fault proxy and tap (its own
origin, so its own six connections): ``plain`` (a job to its end and after), ``cut`` (up to three
cuts mid-job), ``outage`` (the proxy refuses connections for a while mid-job), and ``seven``
(seven jobs from one page). The pages load first; then two jobs are created, followed by the
browser and, beside it, by one uninterrupted Python recording each: plain and cut follow the
first, outage the second (a target may treat a job's first reconnect apart).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Awaitable, Callable, Collection

import trio

from ._browser import BrowserRig, PageHandle, open_browser
from ._browser_session import (PAGE_OPEN, Recording, Session, SessionRecorder, browser_path, cut_after_events,
                               event_seen, observe_browser_starvation, session_failure, stream_retry, target_port)
from ._client import Segment
from ._context import Context
from ._errors import HarnessError, Skip, TargetFault
from ._tasks import background_nursery

__all__ = ["OUTAGE_DELAY", "SEVEN_LAST_STAGE", "job_sessions"]

# The outage starts this long after the tap sees an event on an open connection of the stream.
OUTAGE_DELAY = 0.4
# The seven jobs' last stage (the others 0.1 s): long enough for a correct, fast server's jobs to
# still run once the browser has asked for six of their streams on a busy machine (at 1 s, a
# fresh-clone CI run once saw at most four open at once: 10.5 could not judge).
SEVEN_LAST_STAGE = 3.0


async def job_sessions(ctx: Context) -> Recording:
    """Family 10's browser sessions (plain, cut, outage, seven), recorded once per run and shared
    by its cases. A session that could not be recorded holds what stopped it (raised by
    ``Recording.session``)."""
    return await ctx.shared("browser-family", lambda: _record(ctx))


async def _record(ctx: Context) -> Recording:
    path = browser_path(ctx)
    port = target_port(ctx)
    ctx.knobs(stageSeconds={})  # Skip when the target takes no knobs
    observe_browser_starvation(ctx)  # what the machine may have cost the browser's timers (10.3, 10.7)
    types = sorted(set(ctx.profile.events.values()) | {"message"})
    sessions: dict[str, Any] = {}
    # plain and cut follow one job, outage another (a fault may treat a job's first reconnect
    # apart), each beside one uninterrupted Python recording of it: the host's two cores run
    # two jobs, not three.
    main = SessionRecorder(ctx, "main")
    jobs = _Jobs(("plain", "cut", "outage"))
    reference: dict[str, Segment] = {}
    async with open_browser(path) as browser:  # BrowserUnavailable: the harness's (an error)

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
    if jobs.failure is not None:
        raise jobs.failure
    for name, value in sessions.items():
        if isinstance(value, Session) and name != "seven":
            sessions[name] = dataclasses.replace(value, reference=reference.get(value.job_ids[0]),
                                                 steps=(*main.steps, *value.steps))
    return Recording(f"{path} (Chromium {version})", sessions)


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


async def _follow(run: SessionRecorder, rig: BrowserRig, browser, types: list[str],
                  jobs: _Jobs) -> tuple[PageHandle, list[str]]:
    """The session's page, loaded first; then, once its job was created, its one EventSource."""
    page = rig.page(browser, None, types)
    await page.open(timeout=PAGE_OPEN)
    job_id, created_at = await jobs.job(run.name)
    await page.start(run.paths([job_id]))
    run.notes["jobCreatedAt"] = created_at
    run.steps.append("the page opened one EventSource with a listener per event type")
    return page, [job_id]


async def _plain(ctx: Context, browser, port: int, types: list[str], jobs: _Jobs) -> Session:
    run = SessionRecorder(ctx, "plain")
    async with BrowserRig(port) as rig:
        page, ids = await _follow(run, rig, browser, types, jobs)
        if await run.until_done(page, range(1)):
            # The stream's own retry; without one a browser waits its default (about 3 s in Chromium).
            sent = stream_retry([x.segment() for x in rig.tap.exchanges if x.target == page.streams[0]])
            retry = (3000 if sent is None else sent) / 1000
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
    run = SessionRecorder(ctx, "cut")
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
    run = SessionRecorder(ctx, "outage")
    outage = 1.0
    async with BrowserRig(port) as rig, background_nursery() as nursery:
        page, ids = await _follow(run, rig, browser, types, jobs)
        done = trio.Event()

        async def offline() -> None:
            while event_seen(page) is None and not done.is_set():
                await trio.sleep(0.02)
            await trio.sleep(OUTAGE_DELAY)
            if done.is_set():
                return
            rig.proxy.refuse(outage)
            rig.proxy.cut()
            # The tap's clock; downUntil: when the network is up again, unless refused again before.
            run.notes.update(outageSeconds=outage, outageAt=time.monotonic(), downUntil=time.monotonic() + outage)
            await trio.sleep(outage)
            # A browser slower to retry than the outage is long (its own 3 s default, when the
            # stream sent no retry) must still meet it: keep the network down until it has.
            # Each window overlaps the next by far: a stall of our loop between two of them once
            # let the browser's try through unrefused (an error of ours on a correct server).
            for _ in range(40):
                if done.is_set() or any(e.action == "refused" for e in rig.proxy.log):
                    break
                rig.proxy.refuse(1.0)
                run.notes["downUntil"] = time.monotonic() + 1.0
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
    run = SessionRecorder(ctx, "seven")
    async with BrowserRig(port) as rig:
        page = rig.page(browser, None, types)
        await page.open(timeout=PAGE_OPEN)  # first: a slow page load must not let short jobs end unwatched
        run.notes["jobsCreatedAt"] = time.monotonic()  # the tap's clock
        # At once: one after the other took 1.6 s on a busy machine, while the first jobs ran.
        ids = await run.jobs(7, at_once=True, **{ctx.profile.stages[-1]: SEVEN_LAST_STAGE})
        await page.start(run.paths(ids))
        run.steps.append("the page opened seven EventSources at once, one per job")
        await run.until_done(page, range(7))
        trace = await page.finish()
    return run.session(trace, ids)


SESSIONS = {"plain": _plain, "cut": _cut, "outage": _outage, "seven": _seven}

