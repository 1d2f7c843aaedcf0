"""Family 4, reconnection and replay: Last-Event-ID by header and query, cuts, 204, full replay."""

from __future__ import annotations

import collections
import random
import time
from typing import Sequence

import trio

from harness import End, Event, FaultProxy, Notice, ReconnectPolicy, Segment, checks, record

from ._core import Context, HarnessError, Judge, Measure, Plot, Skip, TargetFault, case
from ._shared import lifecycle
from ._wire import judge_replay_via_proxy


async def _replay(ctx: Context, job_id: str, *, header: str | None = None, query: str | None = None) -> Segment:
    """One connection to a job's stream with a Last-Event-ID header and/or query."""
    url = ctx.api.events_url(job_id)
    if query is not None:
        url += ("&" if "?" in url else "?") + "lastEventId=" + query
    return await record(url, client=ctx.http, headers=ctx.profile.headers(), last_event_id=header,
                        terminal_types=ctx.profile.terminal_events, limits=ctx.limits())


def _target_port(ctx: Context) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(ctx.profile.base_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise Skip("the fault proxy only runs against a target on this host")
    return parts.port or 80


def _tail(events, after: int):
    return [e for e in events if e.id.isdigit() and int(e.id) > after]


@case("4.1", "close and reopen with Last-Event-ID mid-stream: nothing lost, nothing twice", invariants=("1", "6"))
async def reopen(ctx: Context, judge: Judge) -> None:
    job_id = await ctx.create_job(judge, **ctx.knobs(stageSeconds=ctx.quick(**{ctx.profile.stages[-1]: 2.0})))
    async with trio.open_nursery() as nursery:
        clean: list[Segment] = []

        async def watch_clean() -> None:
            clean.append(await ctx.watch(job_id))

        nursery.start_soon(watch_clean)
        first = await ctx.watch(job_id, stop=lambda e: e.id.isdigit() and int(e.id) >= 15)
        judge.step(f"first connection closed by us after id {first.last_event_id}")
        if not first.last_event_id:
            raise TargetFault("no event with an id in the first 15: cannot reconnect with Last-Event-ID")
        second = await ctx.watch(job_id, last_event_id=first.last_event_id)
        judge.step(f"reopened with Last-Event-ID {first.last_event_id}: HTTP {second.status}, {len(second.events)} events")
    judge.expect(second.status == 200, "reconnection refused", 200, second.status)
    received = first.events + second.events
    judge.add(checks.check_ids(received))
    judge.add(checks.check_replay(received, clean[0].events))
    judge.evidence.update(firstConnection=len(first.events), secondConnection=len(second.events),
                          uninterrupted=len(clean[0].events),
                          ends={name: f"{s.end}: {s.end_detail}" for name, s in
                                (("first", first), ("second", second), ("uninterrupted", clean[0]))})


@case("4.2", "a cut in the middle of an event: the partial event is dropped and replayed", invariants=("6",))
async def cut_mid_event(ctx: Context, judge: Judge) -> None:
    port = _target_port(ctx)
    job_id = await ctx.create_job(judge, **ctx.knobs(stageSeconds=ctx.quick(**{ctx.profile.stages[-1]: 2.0})))
    async with FaultProxy(port) as proxy, trio.open_nursery() as nursery:
        clean: list[Segment] = []

        async def watch_clean() -> None:
            clean.append(await ctx.watch(job_id))

        nursery.start_soon(watch_clean)
        proxy.cut_after(2537)  # lands inside an event, not on a block boundary, for typical sizes
        url = proxy.url(ctx.profile.paths["events"].format(id=job_id))
        trace = await ctx.follow(url, policy=ReconnectPolicy(max_attempts=5))
    segments = trace.segments
    judge.evidence["segments"] = [{"end": s.end, "events": len(s.events), "lastEventIdSent": s.last_event_id_sent}
                                  for s in segments]
    judge.evidence["proxyLog"] = [f"{e.action} {e.detail}" for e in proxy.log]
    if len(segments) < 2:
        if trace.gave_up:
            raise TargetFault("the stream stopped before the cut could land", "2537 bytes, then a cut",
                              trace.gave_up)
        raise HarnessError("the cut did not happen: the first connection carried under 2.5 KB")
    first = segments[0]
    partial = any(isinstance(r, Notice) and r.kind == "partial-event-discarded" for r in first.records)
    judge.step(f"cut after 2537 bytes; partial event discarded by the reader: {partial}")
    if segments[1].last_event_id_sent != (first.last_event_id or None):
        # Our reader chose the resume id: a wrong one is ours, not the target's.
        raise HarnessError(f"harness bug: the reconnect carried Last-Event-ID {segments[1].last_event_id_sent!r}, "
                           f"not the last complete event's id {first.last_event_id!r}")
    judge.expect(segments[1].status == 200, "reconnection refused", 200, segments[1].status)
    judge_replay_via_proxy(judge, segments, clean[0].events, proxy.wire())


# 4.3 cuts as often as the target's events allow, up to MAX_CUTS (the reference server's
# 25 events a second get all of them); with fewer than MIN_CUTS + 1 deliveries there is
# nothing to cut between, and the case skips.
MAX_CUTS = 20
MIN_CUTS = 3
# Between cuts a connection brings 1 to (this many seconds' worth of deliveries at the
# target's rate, at most MAX_EVENTS_PER_CUT) events: about a quarter of a second at a fast
# rate, as the cuts always came, and every event at a slow one. A connection that has
# delivered and then waits longer than PATIENCE_SECONDS for more is cut anyway, so that a
# rate misjudged (a busy machine bunches arrivals) cannot stop the cuts.
CUT_SPACING_SECONDS = 0.5
MAX_EVENTS_PER_CUT = 12
PATIENCE_SECONDS = 1.0


def delivery_gap(arrivals: Sequence[float]) -> float | None:
    """The mean time between recent deliveries (distinct arrival moments), None before two.
    The mean, not the median: arrivals bunched by a busy reader leave the mean right."""
    moments = list(arrivals)
    if len(moments) < 2 or moments[-1] <= moments[0]:
        return None
    return (moments[-1] - moments[0]) / (len(moments) - 1)


def events_per_cut(gap: float | None) -> int:
    """The most events a connection brings before its cut, at the target's pace."""
    if not gap:
        return 1
    return min(MAX_EVENTS_PER_CUT, max(1, round(CUT_SPACING_SECONDS / gap)))


def required_cuts(deliveries: int) -> int:
    """The cuts a run must land for its deliveries: every other gap between them, at least
    MIN_CUTS, at most MAX_CUTS (a fast target: all of them)."""
    return min(MAX_CUTS, max(MIN_CUTS, (deliveries - 1) // 2))


async def _carrying(proxy: FaultProxy, events: int, done: trio.Event):
    """The open connection that has forwarded at least ``events`` events, or at least one and
    been open PATIENCE_SECONDS (None once ``done``): a reconnect is not cut before it
    delivered, so that every connection gets its chance."""
    while not done.is_set():
        now = time.monotonic()
        live = [c for c in proxy.connections if not c.scope.cancel_called and
                (c.forwarded.events >= events or (c.forwarded.events and now - c.opened_at >= PATIENCE_SECONDS))]
        if live:
            return live[-1]
        await trio.sleep(0.01)
    return None


def noting_arrivals(arrivals: collections.deque[float]):
    """A recording sink that keeps the distinct moments events arrived at: the target's pace."""

    async def note(record_) -> None:
        if isinstance(record_, Event) and (not arrivals or record_.arrived_at != arrivals[-1]):
            arrivals.append(record_.arrived_at)

    return note


async def cut_at_pace(proxy: FaultProxy, rng: random.Random, arrivals: Sequence[float], done: trio.Event,
                      carried: list[int]) -> None:
    """Cut the proxy's connections at random moments between the target's deliveries (its pace
    from ``arrivals``), up to MAX_CUTS, until ``done``; each cut appends to ``carried`` the
    events the cut connection had forwarded."""
    while len(carried) < MAX_CUTS and not done.is_set():
        conn = await _carrying(proxy, rng.randint(1, events_per_cut(delivery_gap(arrivals))), done)
        if conn is None:
            return
        # A random moment before the next delivery is due.
        await trio.sleep(rng.uniform(0, delivery_gap(arrivals) or 0.1))
        if not done.is_set() and not conn.scope.cancel_called and proxy.cut():
            carried.append(conn.forwarded.events)


@case("4.3", f"up to {MAX_CUTS} cuts at random moments between events, as the target's event rate allows: "
             f"the union is byte-identical", invariants=("1", "6"),
      timeout=90, plots=(Plot("line", "idTimeline", "event id received over time (orange: cuts, green: reconnects)",
                              y_label="id", marks="timelineMarks"),))
async def cuts_between_events(ctx: Context, judge: Judge) -> None:
    port = _target_port(ctx)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    judge.evidence["seed"] = seed
    job_id = await ctx.create_job(judge, **ctx.knobs(stageSeconds={s: 2.5 for s in ctx.profile.stages}))
    carried: list[int] = []  # events each cut connection had forwarded when it was cut
    # The uninterrupted stream's recent delivery moments: the target's pace, as the job goes.
    arrivals: collections.deque[float] = collections.deque(maxlen=64)
    async with FaultProxy(port) as proxy, trio.open_nursery() as nursery:
        clean: list[Segment] = []
        done = trio.Event()

        async def watch_clean() -> None:
            clean.append(await ctx.watch(job_id, sink=noting_arrivals(arrivals)))

        nursery.start_soon(watch_clean)
        nursery.start_soon(cut_at_pace, proxy, rng, arrivals, done, carried)
        url = proxy.url(ctx.profile.paths["events"].format(id=job_id))
        trace = await ctx.follow(url, policy=ReconnectPolicy(max_attempts=5, delay_ms=50))
        done.set()
    effective = len(carried)
    reference = clean[0].events
    # Deliveries (distinct arrival moments): a server that batches sends many events in
    # few deliveries, and there are only the gaps between deliveries to cut in.
    arrivals_all = sorted({e.arrived_at for e in reference})
    deliveries = len(arrivals_all)
    span = arrivals_all[-1] - arrivals_all[0] if deliveries > 1 else 0.0
    rate = (deliveries - 1) / span if span > 0 else 0.0
    required = required_cuts(deliveries)
    judge.evidence.update(cuts=effective, cutsRequired=required, eventsBeforeEachCut=carried, connections=len(trace.segments),
                          deliveries=deliveries, deliveriesPerSecond=round(rate, 1), received=len(trace.events),
                          uninterrupted=len(reference))
    origin = trace.segments[0].started_at
    judge.evidence["idTimeline"] = [[round(e.arrived_at - origin, 3), int(e.id)] for e in trace.events if e.id.isdigit()]
    judge.evidence["timelineMarks"] = (
        [[round(entry.at - origin, 3), "cut"] for entry in proxy.log if entry.action == "cut"]
        + [[round(s.started_at - origin, 3), f"reconnect with Last-Event-ID {s.last_event_id_sent}"]
           for s in trace.segments[1:]])
    judge.step(f"{effective} cuts landed ({required} required), {len(trace.segments)} connections, "
               f"{deliveries} deliveries at {rate:.1f}/s")
    judge.evidence["uninterruptedEnd"] = {"how": clean[0].end, "detail": clean[0].end_detail}
    if not any(e.type in ctx.profile.terminal_events for e in reference):
        # Without its end the yardstick is short, and every later event would look extra.
        judge.fail("the uninterrupted stream did not reach a terminal event", "a terminal event",
                   f"{clean[0].end}: {clean[0].end_detail}")
        return
    if deliveries < MIN_CUTS + 1:
        raise Skip(f"the target delivered its {len(reference)} events in {deliveries} deliveries: too few to cut "
                   f"between (this case cuts between deliveries and needs at least {MIN_CUTS + 1})")
    last = trace.segments[-1]
    if trace.gave_up and last.end in (End.NO_EVENTS, End.TIMEOUT):
        # The follower stopped at a deadline: when the machine's starvation explains that
        # silence (our proxy and reader starved as much as the target), nothing after it can be
        # judged; the case is tried again. Otherwise the silence is the target's finding.
        ctx.expect_delivered(judge, last, "the next event through the cuts, up to the terminal event")
    judge_replay_via_proxy(judge, trace.segments, reference, proxy.wire())
    if trace.gave_up:
        judge.fail("following through the cuts stopped short of the terminal event", "a terminal event",
                   trace.gave_up)
        return
    if effective < MIN_CUTS:
        raise HarnessError(f"only {effective} of the {required} cuts planned for {deliveries} deliveries landed "
                           f"before the job ended (at least {MIN_CUTS} are needed to judge)")
    if effective < required:
        # Fewer than planned (a busy machine paces the cutter late), but enough to judge: the
        # union across the cuts that did land is what was judged, and the report says how many.
        judge.step(f"only {effective} of the {required} planned cuts landed before the job ended; judged on those")


@case("4.4", "lastEventId query parameter resumes like the header", invariants=("6",))
async def query_parameter(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    reference = recording.segment.events
    middle = len(reference) // 2
    segment = await _replay(ctx, recording.job_id, query=str(middle))
    judge.step(f"GET events?lastEventId={middle}: HTTP {segment.status}, {len(segment.events)} events")
    judge.expect(segment.status == 200, "resume by query refused", 200, segment.status)
    judge.add(checks.check_replay(segment.events, _tail(reference, middle)))


@case("4.5", "a garbage Last-Event-ID is treated as absent", invariants=("6",))
async def garbage_id(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    reference = recording.segment.events
    for garbage in ("abc", "-1", "1.5", "0x10", "1e3", "%%%"):
        segment = await _replay(ctx, recording.job_id, header=garbage)
        judge.step(f"Last-Event-ID {garbage!r}: HTTP {segment.status}, {len(segment.events)} events")
        if judge.expect(segment.status == 200, f"Last-Event-ID {garbage!r} was not treated as absent", 200, segment.status):
            judge.add(checks.check_replay(segment.events, reference))


@case("4.6", "a Last-Event-ID past the end gets no old events and no error", invariants=("6",))
async def past_the_end(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    last = int(recording.segment.events[-1].id)
    segment = await _replay(ctx, recording.job_id, header=str(last + 1000))
    judge.evidence["reply"] = {"status": segment.status, "events": len(segment.events)}
    judge.expect(segment.status in (200, 204), "an id past the end is an error", "204 (or 200 and nothing)", segment.status)
    judge.expect(not segment.events, "events sent for an id past the end", 0, [e.id for e in segment.events[:5]])


@case("4.7", "204 for a finished job whose last event the client has", invariants=("6",))
async def no_content(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    last = recording.segment.events[-1].id
    segment = await _replay(ctx, recording.job_id, header=last)
    judge.evidence["reply"] = {"status": segment.status, "events": len(segment.events), "body": segment.body[:200].decode(errors="replace")}
    judge.expect(segment.status == 204, "a finished job at its last id must answer 204 (so EventSource stops)", 204,
                 segment.status)


@case("4.8", "a full replay of a finished job equals the live stream, byte for byte", invariants=("6", "3"),
      measures=(Measure("replay time", "ms", ("replayMs",), 20.0),))
async def full_replay(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    started = time.monotonic()
    segment = await _replay(ctx, recording.job_id)
    judge.evidence["replayMs"] = round((segment.ended_at - started) * 1000, 1)
    judge.expect(segment.status == 200, "full replay refused", 200, segment.status)
    judge.add(checks.check_replay(segment.events, recording.segment.events))
    ctx.expect_delivered(judge, segment, "the replay's next event, up to the terminal event")
    judge.add(checks.check_terminal(segment, ctx.profile, close_within=ctx.close_within,
                                    starvation=ctx.starved()))


@case("4.9", "the Last-Event-ID header wins over the lastEventId query", invariants=("6",))
async def header_wins(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    reference = recording.segment.events
    by_header, by_query = len(reference) // 3, 2 * len(reference) // 3
    segment = await _replay(ctx, recording.job_id, header=str(by_header), query=str(by_query))
    judge.step(f"header {by_header}, query {by_query}: first id {segment.events[0].id if segment.events else None}")
    judge.add(checks.check_replay(segment.events, _tail(reference, by_header)))
