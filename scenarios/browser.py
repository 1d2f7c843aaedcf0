"""Family 10, the real client: a browser's EventSource (system Chromium, driven by Playwright).

One browser per run. The first family-10 case to run records four page sessions at once
(``harness.browser.job_sessions``): ``plain`` (a job to its end and after), ``cut`` (three cuts
mid-job), ``outage`` (the proxy refuses connections for a while mid-job), each beside a Python
recording of its job, and ``seven`` (seven jobs from one page). Each case then judges its part
with the same pure checks as everywhere (``harness.checks``), the browser's deliveries compared
field for field with a Python recording of the same stream.

A session's wait on the target ends at the contract's deadlines, as a Python recording's does
(``harness.browser.job_stream_overdue``), with a finding that the cases judging that session
report as a ``fail``; the profile's job time limit only bounds the whole wait for the terminal event.
"""

from __future__ import annotations

import statistics
from typing import Sequence

from harness import (Context, Finding, HarnessError, Judge, Segment, Severity, Skip, TargetFault, case, checks,
                     parse_data)
from harness.browser import (COLLIDING_NAMES, CUT_DELAY, OUTAGE_DELAY, OVERDUE_RECONNECT, PageTrace, Recording,
                             Session, canonical, cut_room, job_sessions, stream_retry)

TIMEOUT = 90.0  # a case's safety limit; the recording's own waits end well before it
# A stream that left less than the delay and this much more between its first event and its
# terminal event left no room for a cut mid-job (the margin: the cutter's polling and our loop).
ROOM_MARGIN = 0.2
# The job is created once the page is loaded: its stream's first request follows at once. Later
# than this, what the job did meanwhile came as one replay: the harness's lateness, not a burst.
LATE_REQUEST = 1.0
# The browser opens at most this many connections per origin on HTTP/1.1 (Chromium).
CONNECTIONS_PER_ORIGIN = 6
ADVICE_SIX = ("serve HTTP/2 to browsers (one connection carries every stream), or offer one stream that "
              "multiplexes several jobs")
ADVICE_NAMES = ("rename the event type, or have pages tell a server's event (a MessageEvent with data) from "
                "the browser's own (a plain Event)")


async def recording(ctx: Context) -> Recording:
    """The family's browser sessions, recorded once per run and shared by its cases."""
    return await job_sessions(ctx)


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
    retry = stream_retry(segments, last=True)
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
        delivered = trace.last_delivered_id(0, after.started_at)
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
    retry_ms = stream_retry(segments)
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
    # (the browser's six connections open) and another stream's connection had ended.
    waits = [(s, first.started_at - start) for s, first in enumerate(firsts)
             if peak >= CONNECTIONS_PER_ORIGIN and first.started_at > peak_at
             and any(e <= first.started_at for e in ends)]
    created = session.notes.get("jobsCreatedAt")
    judge.evidence.update(
        requestedAtSeconds=[round(f.started_at - start, 3) for f in firsts], mostOpenAtOnce=peak,
        httpVersions=sorted({f.version for f in firsts}),
        firstRequestAfterJobsCreatedSeconds=round(start - created, 3) if created is not None else None,
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
        # Nothing the target did wrong: its jobs were over before the browser had six of their
        # streams open (a slow browser on a busy machine), so the limit was never reached.
        asked = f", the first {start - created:.2f}s after the jobs were created" if created is not None else ""
        raise Skip(f"the browser's connection limit was never reached: the harness's seven jobs ended before "
                   f"{CONNECTIONS_PER_ORIGIN} of their streams were open at once (at most {peak}; the first requests "
                   f"{max(f.started_at for f in firsts) - start:.2f}s apart{asked}): nothing to judge")


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


def _after_outage(trace: PageTrace, outage_at: float) -> str:
    """What the page and the proxy saw from the outage on (times from its start), for an outage
    the browser never tried through: whose silence it was shows there."""
    seen = [f"{o.kind}{'/' + o.type if o.type else ''}({o.ready_state}) {o.at - outage_at:+.2f}s"
            for o in trace.observations if o.at >= outage_at - 0.5][:8]
    proxy = [f"{e.action} {e.detail} {e.at - outage_at:+.2f}s".replace("  ", " ")
             for e in trace.proxy_log if e.at >= outage_at - 0.5 and e.action != "refuse"][:6]
    requests = [f"{x.method} {x.target[:40]} {x.started_at - outage_at:+.2f}s ({x.end or 'open'})"
                for x in trace.exchanges if x.started_at >= outage_at - 5][:4]
    return (f"the page saw: {', '.join(seen) or 'nothing'}; the proxy: {', '.join(proxy) or 'nothing'}; "
            f"requests since 5 s before: {', '.join(requests) or 'none'}")


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
        # The window the network was really down (the outage, kept down until a try or 10 s
        # more): a window reaching past what was sampled would leave the browser's wait unmeasured.
        down_until = float(session.notes.get("downUntil", outage_at + float(session.notes["outageSeconds"]) + 10.0))
        window = down_until - outage_at
        retry = (stream_retry(segments, last=True) or 3000) / 1000
        starved = ctx.starved().explained(outage_at, down_until, role="browser")
        reason = (f"the harness's outage refused no connection: the browser did not try while the proxy kept the "
                  f"network down ({window:.1f}s: {session.notes['outageSeconds']}s, kept down until a try, 10s more at "
                  f"most); "
                  f"{starved.describe()}; {_after_outage(trace, outage_at)}")
        if window - starved.total <= retry + ctx.tolerance(retry):
            raise TargetFault(reason, f"a try within the stream's retry ({retry:g}s)", starved.figures(),
                              Severity.CONFOUNDED)
        raise HarnessError(reason)
    reference = _reference(session, ctx)
    events = trace.events(0)
    judge.add(checks.check_ids(events))
    judge.add(checks.check_replay(events, reference))
