"""Family 14, a browser on any stream: Chromium's EventSource on a stream profile's GET stream.

Family 10 follows the contract's jobs (knobs, job creation, a Python recording of the same job);
this family needs only a stream an EventSource can open (the "browser" claim: GET, no custom
headers, no set-up requests, no hook). Its sessions are recorded once per run by
``harness.browser.stream_sessions`` (a first Python read for the event types; ``plain``, and
``cut`` when ids and replay are claimed; a broadcast read by a Python reader beside the page),
with the same machinery as family 10's (the browser in its thread, the fault proxy and the
recording tap in front of the target, the probe page). A wait on the target that ended at its
deadline is judged here with the machine's starvation (``checks.over_limit``). docs/browser.md
says what each case judges.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable, Sequence

from harness import (Context, End, Event, Finding, HarnessError, Judge, Segment, Severity, Skip, TargetFault, case,
                     checks)
from harness.browser import (COLLIDING_NAMES, CUT_DELAY, WINDOW_SECONDS, Overdue, Recording, Session, canonical,
                             stream_sessions)

from .browser import judge_name_collisions

TIMEOUT = 90.0  # a case's safety limit; the recording's own waits end well before it
NEEDS = ("stream", "browser")


# -- comparing deliveries (pure) ----------------------------------------------------------------

def overlap(received: Sequence[Event], reference: Sequence[Event]) -> tuple[list[Event], list[Event]]:
    """The part of a broadcast both readers were there for: from the first event both have to
    the last (by canonical bytes), in each reader's own record."""
    common = {e.raw for e in received} & {e.raw for e in reference}
    if not common:
        return [], []

    def span(events: Sequence[Event]) -> list[Event]:
        marks = [i for i, e in enumerate(events) if e.raw in common]
        return list(events[marks[0]:marks[-1] + 1])

    return span(received), span(reference)


def check_same_events(received: Sequence[Event], reference: Sequence[Event]) -> list[Finding]:
    """The events ``received`` are those of ``reference``, in order, each once (compared by
    canonical bytes: id, type, data; ids need not be there nor count up)."""
    got, ref = [e.raw for e in received], [e.raw for e in reference]
    findings = []
    matcher = difflib.SequenceMatcher(None, ref, got, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for j in range(j1, j2) if tag in ("insert", "replace") else ():
            raw = got[j]
            if raw not in ref:
                message = "an event the other reader did not get"
            elif got.count(raw) > ref.count(raw):
                message = "an event delivered more times than the other reader got it"
            else:
                message = "an event delivered out of order"
            findings.append(Finding(message, None, raw[:200].decode(errors="replace"), received[j].id or None))
        for i in range(i1, i2) if tag in ("delete", "replace") else ():
            if ref[i] not in got:
                findings.append(Finding("an event the browser did not deliver", ref[i][:200].decode(errors="replace"),
                                        None, reference[i].id or None))
        if len(findings) >= 20:
            break
    return findings[:20]


def place_missing(missing: Sequence[str], segments: Sequence[Segment], cut_times: Sequence[float]
                  ) -> tuple[dict[str, str], list[str]]:
    """Where each id the browser should have delivered went, from the tap's record: sent on a
    connection the harness's proxy cut and not replayed (the target's), sent on no connection
    of the browser's (the target's), or sent on a connection nobody cut and not delivered (the
    harness's: the second list)."""
    target: dict[str, str] = {}
    harness: list[str] = []
    for wanted in missing:
        index = next((i for i, s in enumerate(segments) for e in s.events if e.id == wanted), None)
        if index is None:
            target[wanted] = f"the target sent it on none of the browser's {len(segments)} connection(s)"
            continue
        segment = segments[index]
        cut = segment.end == End.CLIENT_CLOSED and any(abs(t - segment.ended_at) < 1.0 for t in cut_times)
        if not cut:
            harness.append(wanted)
            continue
        after = (f"the reconnect sent Last-Event-ID {segments[index + 1].last_event_id_sent!r} and did not bring it"
                 if index + 1 < len(segments) else "no connection followed")
        target[wanted] = f"sent on connection {index + 1}, which the harness cut before it went on; {after}"
    return target, harness


def restarts_after_end(segments: Sequence[Segment], is_end: Callable[[Event], bool]) -> tuple[int, list[Segment]]:
    """The connection that carried the stream's end, and those after it (the browser's own
    reconnects): (index of the end's connection, -1 when none; the reconnects)."""
    ending = next((i for i, s in enumerate(segments) if any(is_end(e) for e in s.events)), -1)
    return ending, list(segments[ending + 1:]) if ending >= 0 else []


async def recording(ctx: Context) -> Recording:
    """The family's browser sessions, recorded once per run and shared by its cases."""
    return await stream_sessions(ctx)


def over_deadline(ctx: Context, overdue: Overdue) -> list[Finding]:
    """A wait that ended at its deadline, judged with the machine's starvation in its window: the
    target's fail, or confounded when the starvation explains the lateness."""
    return checks.over_limit(overdue.message, measured=overdue.measured, limit=overdue.limit,
                             explained=ctx.starved().explained(overdue.start, overdue.end, role=overdue.role),
                             expected=overdue.expected, observed=overdue.observed)


# -- judging -------------------------------------------------------------------------------

def _taken(rec: Recording, name: str) -> Session:
    value = rec.sessions.get(name)
    if value is None:
        raise HarnessError(f"the {name} session was not recorded")
    return rec.session(name)


def _begin(ctx: Context, judge: Judge, rec: Recording, session: Session) -> bool:
    """Steps; the session's wait ended at a deadline: its finding (True when it did)."""
    judge.step(f"browser: {rec.browser}")
    for step in session.steps:
        judge.step(step)
    overdue = session.notes.get("overdue")
    if overdue is None:
        return False
    findings = over_deadline(ctx, overdue)
    if findings and findings[0].severity == Severity.CONFOUNDED:
        raise TargetFault(findings[0].message, findings[0].expected, findings[0].observed, Severity.CONFOUNDED)
    judge.add(findings)
    return True


def _refused(segments: Sequence[Segment]) -> Finding | None:
    """The browser's first request was not answered as a stream an EventSource accepts."""
    if not segments:
        return Finding("the browser's EventSource never reached the target", "a request for the stream", None)
    first = segments[0]
    content_type = first.header("content-type") or ""
    if first.status == 200 and content_type.split(";")[0].strip().lower() == "text/event-stream":
        return None
    return Finding("the browser could not open the stream (an EventSource accepts only 200 text/event-stream)",
                   "200, content-type text/event-stream", f"HTTP {first.status}, content-type {content_type or 'none'}")


async def _begun(ctx: Context, judge: Judge, name: str) -> tuple[Session, list[Segment], bool] | None:
    """The recorded session ``name`` begun (``_begin``): it, its stream's connections, and whether
    its wait ended at a deadline; None when the browser could not open the stream (judged:
    ``_refused``)."""
    rec = await recording(ctx)
    session = _taken(rec, name)
    overdue = _begin(ctx, judge, rec, session)
    segments = session.trace.segments(0)
    refused = _refused(segments)
    if refused is not None:
        judge.add([refused])
        return None
    return session, segments, overdue


def _unlistened(judge: Judge, session: Session, types: Sequence[str]) -> None:
    sent = {e.type for s in session.trace.segments(0) for e in s.events} - set(types)
    if sent:
        judge.step(f"event type(s) {', '.join(sorted(sent))} reached the tap and had no listener (not seen in the "
                   "first read): left out of the comparison")
        judge.evidence["typesWithoutListener"] = sorted(sent)


@case("14.1", "a browser's EventSource receives the stream's events as a Python reader does: in order, each once",
      invariants=("1", "6"), needs=NEEDS, timeout=TIMEOUT)
async def browser_receives(ctx: Context, judge: Judge) -> None:
    begun = await _begun(ctx, judge, "plain")
    if begun is None:
        return
    session, segments, overdue = begun
    trace = session.trace
    types = session.notes["types"]
    _unlistened(judge, session, types)
    delivered = trace.events(0)
    is_end = ctx.profile.meaning.is_end
    if "reader" in session.notes:  # broadcast: both readers at once, compared where both were there
        reference = [canonical(e) for e in session.notes["reader"] if e.type in types]
        mine, theirs = overlap(delivered, reference)
        judge.evidence.update(delivered=len(delivered), pythonReader=len(reference), overlap=len(theirs),
                              compared="broadcast: the overlap with a Python reader at the same time")
        if not theirs:
            if delivered and reference:
                judge.fail("the browser and the Python reader of the same broadcast got no event in common",
                           "the same events", f"browser {len(delivered)}, Python reader {len(reference)}")
            elif reference:
                judge.fail("the browser delivered none of the broadcast's events", f"{len(reference)} event(s)",
                           "none")
            elif not overdue:
                raise Skip(f"no event on the broadcast while both readers were there: nothing to compare "
                           f"(the Python reader: {session.notes['readerEnded']})")
            return
        judge.step(f"broadcast: {len(mine)} browser event(s) against {len(theirs)} of the Python reader's, where both "
                   "were reading")
        judge.add(check_same_events(mine, theirs))
        return
    # Per request: the browser's events against what the tap saw the target send, up to the end.
    ending, _ = restarts_after_end(segments, is_end)
    upto = segments[:ending + 1] if ending >= 0 else segments
    until = segments[ending + 1].started_at if 0 <= ending < len(segments) - 1 else float("inf")
    sent = [canonical(e) for s in upto for e in s.events if e.type in types]
    mine = [e for e in delivered if e.arrived_at < until]
    judge.evidence.update(delivered=len(mine), sentOnTheBrowsersConnections=len(sent), connections=len(upto),
                          compared="per request: against what the tap saw the target send")
    if not sent and not overdue:
        raise Skip(f"the target sent no event on the browser's stream in {session.notes.get('window', WINDOW_SECONDS)}s"
                   f" watched: nothing to compare")
    judge.step(f"per request: {len(mine)} browser event(s) against the {len(sent)} the target sent on "
               f"{len(upto)} connection(s)")
    judge.add(check_same_events(mine, sent))
    if ctx.profile.claims.has("ends") and not overdue and ending < 0:
        judge.fail("the stream's end never reached the browser", "the end event", _opened(segments[-1]))


def _opened(segment: Segment) -> str:
    return f"{segment.end}: {segment.end_detail}; {len(segment.events)} events, {len(segment.comments)} comments"


def _has_ids(events: Sequence[Event]) -> bool:
    return all(e.has_id for e in events)


def _no_cut(ctx: Context, session: Session, end_at: float) -> Exception:
    """No cut landed before the stream's end: the stream left no room (a skip that says so), or
    it did and the harness's proxy cut nothing (the harness's)."""
    segments = session.trace.segments(0)
    arrivals = sorted({round(e.arrived_at, 2) for s in segments for e in s.events if e.arrived_at < end_at})
    deliveries = 1 + sum(1 for a, b in zip(arrivals, arrivals[1:]) if b - a > 0.05) if arrivals else 0
    if deliveries < 2:
        return Skip(f"no cut could land mid-stream: the stream's events reached the tap in {deliveries} burst(s) "
                    f"before {'its end' if end_at < float('inf') else 'the watch ended'}, and a cut comes {CUT_DELAY}s "
                    "after the tap sees an event (delivery in bursts is 12.4's finding)")
    return HarnessError(f"the harness's proxy made no cut although the stream left room for one ({deliveries} "
                        f"deliveries on the tap)")


@case("14.2", "a cut mid-stream: the browser reconnects by itself with Last-Event-ID, nothing lost or repeated",
      invariants=("1", "6"), needs=(*NEEDS, "ids", "replay"), timeout=TIMEOUT)
async def browser_resumes(ctx: Context, judge: Judge) -> None:
    begun = await _begun(ctx, judge, "cut")
    if begun is None:
        return
    session, segments, overdue = begun
    trace = session.trace
    is_end = ctx.profile.meaning.is_end
    types = session.notes["types"]
    _unlistened(judge, session, types)
    end_at = min((e.arrived_at for s in segments for e in s.events if is_end(e)), default=float("inf"))
    cuts = [t for t in session.notes.get("cutTimes", ()) if t < end_at]
    ending, _ = restarts_after_end(segments, is_end)
    upto = segments[:ending + 1] if ending >= 0 else segments
    judge.evidence["connections"] = [
        {"atSeconds": round(s.started_at - segments[0].started_at, 3), "lastEventIdSent": s.last_event_id_sent,
         "status": s.status, "events": len(s.events), "end": s.end} for s in upto[:50]]
    judge.evidence["cuts"] = len(cuts)
    if not cuts:
        if overdue:
            return
        closed = trace.closed_at(0)
        if closed is not None and closed < end_at:
            last = [s for s in segments if s.started_at <= closed][-1]
            judge.fail("the browser gave up on the stream for good (readyState CLOSED) before any cut",
                       "200 text/event-stream until the end", f"CLOSED after HTTP {last.status}, content-type "
                       f"{last.header('content-type') or 'none'}, on request {segments.index(last) + 1}")
            return
        raise _no_cut(ctx, session, end_at)
    if not any(s.started_at > cuts[0] for s in upto):
        if not overdue:
            judge.fail("the browser never reconnected after a cut", "a reconnect after the stream's retry",
                       f"{len(cuts)} cut(s), {len(segments)} connection(s); the stream's retry: "
                       f"{next((s.retry_ms for s in segments if s.retry_ms is not None), 'none sent')} ms")
        return
    for number, after in enumerate(upto[1:], 2):
        delivered = trace.last_delivered_id(0, after.started_at)
        if delivered and after.last_event_id_sent is None:
            judge.fail("a reconnect carried no Last-Event-ID although the browser had delivered an event with an id",
                       delivered, None)
        judge.expect(after.status == 200, f"reconnect {number} (Last-Event-ID {after.last_event_id_sent!r}) was "
                     "refused", 200, after.status)
    until = segments[ending + 1].started_at if 0 <= ending < len(segments) - 1 else float("inf")
    mine = [e for e in trace.events(0) if e.arrived_at < until]
    if "reader" in session.notes:
        reference = [canonical(e) for e in session.notes["reader"] if e.type in types]
        mine, reference = overlap(mine, reference)
        judge.step(f"broadcast: {len(mine)} browser event(s) across {len(upto)} connection(s) against {len(reference)} "
                   "of an uninterrupted Python reader's, where both were reading")
        if not reference and not overdue:
            judge.fail("the browser and an uninterrupted reader of the same broadcast got no event in common",
                       "the same events", f"browser {len(mine)}, Python reader {len(session.notes['reader'])}")
            return
    else:
        reference = list({e.id: canonical(e) for s in upto for e in s.events if e.type in types}.values())
        judge.step(f"per request: {len(mine)} browser event(s) against the {len(reference)} the target sent on "
                   f"{len(upto)} connection(s) (each id once, in the order first sent)")
    judge.evidence.update(delivered=len(mine), reference=len(reference))
    if not (_has_ids(mine) and _has_ids(reference)):
        judge.fail("events without an id on a stream that claims ids: nothing to resume from", "an id on every event",
                   f"{sum(1 for e in reference if not e.has_id)} of {len(reference)} without")
        judge.add(check_same_events(mine, reference))
        return
    findings = checks.check_replay(mine, reference)
    missing = [f.event_id for f in findings if f.message == "event missing across reconnects"]
    where, harness = place_missing(missing, upto, cuts)
    if harness:
        raise HarnessError(f"{len(harness)} event(s) the tap saw pass on a connection nobody cut were not delivered "
                           f"by the browser (first: {harness[:5]})")
    judge.add([dataclasses.replace(f, observed=f"missing: {where[f.event_id]}") if f.event_id in where else f
               for f in findings])
    if ctx.profile.claims.has("ends") and not overdue and ending < 0:
        judge.fail("following through the cuts, the browser never got the stream's end", "the end event",
                   _opened(segments[-1]))


@case("14.3", "after the stream's end the browser's own reconnect gets 204 and stops; the stream again restarts "
              "the work forever", invariants=("6",), needs=(*NEEDS, "ends"), timeout=TIMEOUT)
async def browser_after_end(ctx: Context, judge: Judge) -> None:
    begun = await _begun(ctx, judge, "plain")
    if begun is None:
        return
    session, segments, overdue = begun
    trace = session.trace
    is_end = ctx.profile.meaning.is_end
    ending, after = restarts_after_end(segments, is_end)
    if ending < 0:
        if overdue:
            return  # the wait for the end ended at its deadline: its finding says what came instead
        raise TargetFault("the stream's end never reached the browser", "the end event", _opened(segments[-1]))
    hold = session.notes.get("holdSeconds")
    require = ctx.profile.claims.has("finished-204")
    end_connection = segments[ending]
    end_event = next(e for e in end_connection.events if is_end(e))
    closed = trace.closed_at(0)
    restarts = [s for s in after if s.status == 200 and s.events]
    judge.evidence.update(
        watchedSeconds=hold, finished204Claimed=require, restarts=len(restarts),
        reconnectsAfterEnd=[{"afterSeconds": round(s.started_at - end_connection.ended_at, 3), "status": s.status,
                             "lastEventIdSent": s.last_event_id_sent, "events": len(s.events)} for s in after[:20]],
        closedAfterSeconds=round(closed - end_event.arrived_at, 3) if closed is not None else None)
    if not after:
        held = end_connection.ended_at - end_event.arrived_at
        if end_connection.end == End.CLIENT_CLOSED and held > ctx.close_within:
            judge.add([Finding(f"the target kept the connection open {held:.1f}s after the stream's end (until the "
                               "harness closed the page): the browser stays connected to a finished stream",
                               f"the connection closed within {ctx.close_within:g}s of the end, then 204",
                               f"open {held:.2f}s after the end", None,
                               Severity.FAIL if require else Severity.NON_STRICT)])
        elif closed is not None:
            judge.step("the browser's EventSource reached CLOSED after the end without a reconnect")
        else:
            raise Skip(f"no reconnect in the {hold}s watched after the end: the browser waits the stream's retry "
                       f"({end_connection.retry_ms if end_connection.retry_ms is not None else 'none sent: its 3 s default'}"
                       " ms) longer than that")
        return
    first = after[0]
    judge.step(f"{len(after)} reconnect(s) in the {hold}s watched after the end: "
               + ", ".join(f"HTTP {s.status} with {len(s.events)} event(s)" for s in after[:5]))
    if restarts:
        judge.fail(f"the browser restarted the stream {len(restarts)} time(s) in the {hold}s watched after its end: "
                   "a reconnect gets the stream again, so an EventSource restarts the work forever",
                   "204 No Content on the reconnect after the end (the EventSource stops)",
                   f"reconnect 1 (Last-Event-ID {first.last_event_id_sent!r}): HTTP {first.status}, "
                   f"{len(first.events)} event(s), first {first.events[0].raw[:120]!r}" if first.events else
                   f"reconnect 1: HTTP {first.status}; {len(restarts)} later one(s) got events")
        return
    judge.add(checks.check_after_end(first, require_204=require))
    if first.status == 204:
        judge.step("the first reconnect after the end got 204" + (
            f"; the EventSource reached CLOSED {closed - end_event.arrived_at:.2f}s after the end"
            if closed is not None else ""))


@case("14.4", "an event type named error or open: its listener gets EventSource's own events too", invariants=(),
      needs=NEEDS, timeout=TIMEOUT)
async def browser_names_stream(ctx: Context, judge: Judge) -> None:
    rec = await recording(ctx)
    used = [name for name in ("plain", "cut") if isinstance(rec.sessions.get(name), Session)]
    if not used:
        _taken(rec, "plain")  # raises what stopped it: the target's fault, the harness's trouble or a skip
        raise HarnessError("no session was recorded")
    traces = [rec.sessions[name].trace for name in used]
    sent = {e.type for trace in traces for s in trace.segments(0) for e in s.events} | set(ctx.profile.meaning.end_types)
    colliding = sorted(t for t in sent if t in COLLIDING_NAMES)
    judge.step(f"browser: {rec.browser}; sessions {', '.join(used)}; the stream's event types: {', '.join(sorted(sent))}")
    judge.evidence["typesColliding"] = colliding
    judge_name_collisions(judge, colliding, traces)
