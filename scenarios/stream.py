"""Family 12, any stream: the transport suite that needs only a stream to open.

Each case runs on a stream profile (a [stream] section: a notification channel, a token stream,
an agent run) and on the contract profile, whose stream is a job's events. What a case needs
beyond the stream is a claim ([claims], [meaning]); unclaimed, the case is skip naming it.
Rules that are the contract's own (X-Accel-Buffering, Cache-Control) stay family 1's verdict on
the contract profile and are advice (non-strict) on a stream profile. docs/stream-suite.md says
what each case judges and why.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import trio

from harness import End, Event, FaultProxy, Retry, Segment, StreamRequest, checks, pointer_get, record

from ._core import Context, Finding, HarnessError, Judge, Measure, Skip, TargetFault, case
from ._shared import judge_compressed_when_asked, judge_lateness
from ._wire import compare_connections, judge_replay_via_proxy, place_missing
from .keepalive import comment_spacing, stalled_stream
from .replay import MIN_CUTS, cut_at_pace, noting_arrivals

ORIGIN = "http://origin.example"  # a foreign origin, as a page elsewhere would send it
HEAD_SECONDS = 1.0  # a stream's response head is owed at once: an EventSource's open waits on it
FIRST_EVENT_SECONDS = 1.0  # a contract job's stored events are owed at once on connecting
PROXY_IDLE_SECONDS = 60.0  # the idle timeout of nginx, ALB, Cloudflare and most others
# How long a stream that does not end by itself is watched (the keep-alive interval 2.5 times,
# so that two keep-alives are owed), within these bounds.
WATCH_MIN_SECONDS, WATCH_MAX_SECONDS = 4.0, 40.0
# The cuts of 12.7 on a stream that does not end: followed this long.
CUT_WINDOW_SECONDS = 8.0
# A reconnect after the end: how long its answer is watched (a 200 held open shows by then).
AFTER_END_SECONDS = 2.0
# A stream that stays open, watched for a keep-alive claimed longer than the usual window: past
# the claimed interval and its tolerance by this much, and never longer than the cap.
KEEPALIVE_MARGIN_SECONDS, KEEPALIVE_WATCH_MAX_SECONDS = 2.0, 80.0


def _ends(ctx: Context) -> bool:
    return ctx.profile.claims.has("ends")


def watch_seconds(ctx: Context) -> float:
    """How long a stream that does not end by itself is recorded."""
    return min(WATCH_MAX_SECONDS, max(WATCH_MIN_SECONDS, 2.5 * ctx.stream_keepalive))


def _limits(ctx: Context, **overrides: Any):
    """A recording to the stream's end (bounded by the job time limit), or a window of it."""
    total = ctx.job_timeout if _ends(ctx) else watch_seconds(ctx)
    return ctx.stream_limits(total=total, **overrides)


@dataclasses.dataclass(frozen=True)
class Recorded:
    request: StreamRequest
    segment: Segment


async def recorded(ctx: Context) -> Recorded:
    """One connection to the stream, to its end or for a window, bytes kept: shared by the cases
    that judge what one reader sees. A response head that never came is returned as it is: it is
    12.3's finding (``readable`` makes the others skip, naming it)."""

    async def make() -> Recorded:
        request = await ctx.open_stream()
        segment = await ctx.record_stream(request, keep_bytes=True, limits=_limits(ctx))
        if segment.head_at is not None and segment.status != 200:
            raise TargetFault(f"the stream answered HTTP {segment.status}", 200,
                              f"{segment.status}: {segment.body[:200]!r}")
        return Recorded(request, segment)

    return await ctx.shared("stream", make)


def _headless(segment: Segment) -> str:
    """What became of a connection whose response head never came."""
    return (f"no response head within {segment.ended_at - segment.started_at:.1f}s "
            f"({segment.end}: {segment.end_detail})")


def _unheard(segment: Segment) -> None:
    """Skip a case whose connection got no response head: there is nothing of the stream to judge,
    and the missing head is one finding, 12.3's."""
    if segment.head_at is None:
        raise Skip(f"{_headless(segment)}: nothing to judge (12.3 judges the missing head)")


async def readable(ctx: Context) -> Recorded:
    """The shared recording, for a case that judges what the stream carried. Nothing to judge is
    a skip naming the case that judges why: no response head (12.3), a body compressed though
    the harness asked for identity (12.1): its bytes would be judged as garbage."""
    recording = await recorded(ctx)
    _unheard(recording.segment)
    encoding = recording.segment.header("content-encoding")
    if encoding not in (None, "identity"):
        raise Skip(f"the stream came with Content-Encoding: {encoding} though the harness asked for identity: its "
                   f"bytes are not read here (12.1 judges the compression)")
    return recording


def _opened(segment: Segment) -> str:
    return f"{segment.end}: {segment.end_detail}; {len(segment.events)} events, {len(segment.comments)} comments"


def _ended_by_itself(ctx: Context, segment: Segment) -> bool:
    return segment.end == End.SERVER_CLOSED or any(ctx.profile.meaning.is_end(e) for e in segment.events)


@case("12.1", "response headers: text/event-stream, UTF-8, no length, no compression; caching and CORS",
      invariants=("stream headers",), needs=("stream",))
async def headers(ctx: Context, judge: Judge) -> None:
    segment = (await recorded(ctx)).segment
    _unheard(segment)
    judge.evidence["headers"] = dict(segment.headers)
    contract = ctx.profile.kind == "contract"
    judge.add(checks.check_stream_headers(segment, advice=not contract))
    if contract:
        judge.step("Cache-Control and X-Accel-Buffering are the contract's rules: judged by 1.2, not here")
    await judge_compressed_when_asked(ctx, judge, segment)
    request = await ctx.open_stream()
    request = dataclasses.replace(request, headers={**request.headers, "Origin": ORIGIN})
    asked = await ctx.record_stream(request, limits=ctx.stream_limits(total=1.5, read=1.5))
    judge.evidence["withOrigin"] = {"status": asked.status, "headers": {
        k: v for k, v in asked.headers if k.startswith("access-control-") or k == "vary"}}
    if asked.header("access-control-allow-origin") is None:
        judge.step(f"with Origin {ORIGIN}: HTTP {asked.status}, no CORS headers (a same-origin stream): not judged")
    else:
        judge.step(f"with Origin {ORIGIN}: HTTP {asked.status}, CORS answered: judged")
        judge.add(checks.check_cors(asked, ORIGIN))


@case("12.2", "framing: within a reader's bounds, UTF-8, no event cut off; BOM, lone CR, mixed line ends, "
              "unknown fields are hazards", invariants=("stream body",), needs=("stream",))
async def framing(ctx: Context, judge: Judge) -> None:
    segment = (await readable(ctx)).segment
    judge.evidence.update(lineEndings=checks.line_endings(segment.raw), bytes=len(segment.raw),
                          events=len(segment.events), ended=_opened(segment))
    judge.step(f"read {len(segment.raw)} bytes, {len(segment.events)} events")
    judge.add(checks.check_framing(segment))


@case("12.3", "the response head and the first bytes come promptly", invariants=("delivery",), needs=("stream",),
      measures=(Measure("time to head", "ms", ("headMs",), 20.0), Measure("time to first byte", "ms",
                                                                          ("firstByteMs",), 20.0)))
async def prompt(ctx: Context, judge: Judge) -> None:
    segment = (await recorded(ctx)).segment
    start = segment.started_at
    head = segment.head_at
    first_byte = segment.chunks[0][0] if segment.chunks else None
    first_event = segment.events[0].arrived_at if segment.events else None
    judge.evidence.update({key: None if at is None else round((at - start) * 1000, 1) for key, at in
                           (("headMs", head), ("firstByteMs", first_byte), ("firstEventMs", first_event))})
    starvation = ctx.starved()

    def within(message: str, since: float, at: float | None, limit: float) -> list[Finding]:
        """``at`` (else the recording's end) no later than ``limit`` after ``since``."""
        end = at if at is not None else segment.ended_at
        return checks.over_limit(message, measured=end - since, limit=limit,
                                 explained=starvation.explained(since, end), expected=f"<= {limit:.2f}s",
                                 observed=f"{end - since:.3f}s")

    limit = HEAD_SECONDS * ctx.timing_slack
    if head is None:
        # One finding for the stream that never answered (the other cases skip, naming this one).
        # A proxy in front answers 504 after its upstream timeout; an EventSource stays CONNECTING.
        message = f"{_headless(segment)}: not even the status line"
        found = checks.over_limit(message, measured=segment.ended_at - start, limit=limit,
                                  explained=starvation.explained(start, segment.ended_at),
                                  expected=f"a response head within {limit:.2f}s", observed=_opened(segment))
        judge.add(found or [Finding(message, f"a response head within {limit:.2f}s", _opened(segment))])
        return
    judge.add(within("the response head came late (an EventSource is not open until it does)", start, head, limit))
    keepalive = ctx.stream_keepalive
    if keepalive:
        judge.add(within("no byte after the head within the keep-alive interval (a proxy waits on it)", head,
                         first_byte, keepalive + ctx.tolerance(keepalive)))
    else:
        judge.step("no keep-alive claimed: the first byte is shown, not judged (nothing is owed before an event)")
    if ctx.profile.kind == "contract":
        judge.add(within("the job's stored events did not come at once on connecting", head, first_event,
                         FIRST_EVENT_SECONDS * ctx.timing_slack))
    else:
        judge.step("the first event is shown, not judged: a stream owes its first event when it has one")


@case("12.4", "delivery is not buffered: by the events' own timestamps, else by how they arrive",
      invariants=("delivery",), needs=("stream",),
      measures=(Measure("lateness p95", "ms", ("latenessMs", "p95"), 5.0),))
async def not_buffered(ctx: Context, judge: Judge) -> None:
    segment = (await readable(ctx)).segment
    meaning = ctx.profile.meaning
    if meaning.timestamp:
        values = sorted(checks.lateness_ms(segment, meaning.timestamp_ms))
        if len(values) < 5:
            raise Skip(f"only {len(values)} event(s) carry the mapped timestamp ({meaning.timestamp}): "
                       f"too few to judge delivery (5 needed)")
        judge_lateness(ctx, judge, segment, values, timestamp_ms=meaning.timestamp_ms,
                       basis=f"judged by the mapped timestamp {meaning.timestamp} ({meaning.timestamp_format})")
        return
    if len(segment.events) < 5:
        raise Skip(f"only {len(segment.events)} event(s) on the stream and no timestamp mapped: too few to judge "
                   f"delivery by arrival (5 needed)")
    found = checks.bursts(segment, silence=1.0, min_events=4)
    judge.evidence.update(events=len(segment.events), reads=len(segment.chunks),
                          bursts=[{"atS": round(at - segment.started_at, 3), "silenceS": round(quiet, 3), "events": n}
                                  for at, quiet, n in found[:20]])
    judge.step(f"no timestamp mapped: judged by arrival ({len(segment.events)} events in {len(segment.chunks)} reads)")
    judge.add(checks.check_arrival_pattern(segment, silence=1.0, min_events=4, starvation=ctx.starved()))


async def quiet_stream(ctx: Context) -> Segment:
    """A stream with room for silences: a contract job made to stall (shared with family 5),
    or the stream itself, watched for its window."""
    if ctx.profile.kind == "contract":
        return (await stalled_stream(ctx))[1]
    return (await readable(ctx)).segment


def _watched(segment: Segment) -> float:
    return segment.ended_at - segment.started_at


async def keepalive_window(ctx: Context) -> Segment:
    """A recording in which a keep-alive was due: longer than the claimed interval and its
    tolerance. A stream that stays open is watched that long (a channel: up to
    KEEPALIVE_WATCH_MAX_SECONDS); one that ended sooner is a skip saying so: no case passes on a
    keep-alive it could not see. Shared by 12.5 and 12.6."""

    async def make() -> Segment:
        segment = await quiet_stream(ctx)
        interval = ctx.stream_keepalive
        due = interval + ctx.tolerance(interval)
        if ctx.profile.kind != "contract" and not _ended_by_itself(ctx, segment) and _watched(segment) <= due:
            total = due + KEEPALIVE_MARGIN_SECONDS
            if total > KEEPALIVE_WATCH_MAX_SECONDS:
                raise Skip(f"a keep-alive every {interval:g}s is owed later than this case watches a stream "
                           f"({KEEPALIVE_WATCH_MAX_SECONDS:g}s)")
            segment = await ctx.record_stream(limits=ctx.stream_limits(total=total))
            _unheard(segment)
        if _watched(segment) <= due:
            raise Skip(f"the stream ended after {_watched(segment):.1f}s, before a keep-alive was due "
                       f"({interval:g}s claimed): nothing to judge it by")
        return segment

    return await ctx.shared("keepalive-window", make)


@case("12.5", "keep-alive: no silence past the claimed interval", invariants=("5",), needs=("stream", "keepalive"),
      measures=(Measure("longest silence", "s", ("longestSilence",), 0.05),), timeout=90)
async def keepalive_claimed(ctx: Context, judge: Judge) -> None:
    segment = await keepalive_window(ctx)
    interval = ctx.stream_keepalive
    tolerance = ctx.tolerance(interval)
    silence, _ = checks.longest_silence(segment)
    judge.evidence.update(keepaliveSeconds=interval, toleranceSeconds=tolerance, longestSilence=round(silence, 3),
                          comments=len(segment.comments), commentSpacing=comment_spacing(segment)[:50],
                          watchedSeconds=round(segment.ended_at - segment.started_at, 2))
    judge.step(f"watched {segment.ended_at - segment.started_at:.1f}s: longest silence {silence:.2f}s against "
               f"{interval:g}s + {tolerance:.2f}s")
    judge.add(checks.check_keepalive(segment, interval=interval, tolerance=tolerance, starvation=ctx.starved()))


@case("12.6", f"no silence reaches the {PROXY_IDLE_SECONDS:g} s idle timeout of common proxies", invariants=("5",),
      needs=("stream",), timeout=90)
async def proxy_idle(ctx: Context, judge: Judge) -> None:
    claimed = ctx.stream_keepalive
    judge.evidence["keepaliveClaimedSeconds"] = claimed or None
    if claimed:
        if claimed + ctx.tolerance(claimed) > PROXY_IDLE_SECONDS:
            judge.non_strict(f"the claimed keep-alive interval leaves the stream silent past the {PROXY_IDLE_SECONDS:g}s "
                             f"idle timeout of common proxies", f"<= {PROXY_IDLE_SECONDS:g}s", f"{claimed:g}s")
        try:
            segment = await keepalive_window(ctx)
        except Skip as unseen:
            if judge.findings:  # judged on the claim itself
                judge.step(f"{unseen}: the silences are not judged")
                return
            raise
        judge.step(f"keep-alive claimed every {claimed:g}s (observed by 12.5); the silences of a "
                   f"{segment.ended_at - segment.started_at:.1f}s watch are judged here too")
    else:
        segment = (await readable(ctx)).segment
        _skip_when_ended_by_itself(ctx, segment)
        # A long read: bounded just past the timeout, and it stops at the first silence that reaches it.
        bound = PROXY_IDLE_SECONDS + 2
        judge.step(f"no keep-alive claimed and the stream stayed open for the {segment.ended_at - segment.started_at:.1f}s "
                   f"window: read it for up to {bound:g}s, stopping at a {PROXY_IDLE_SECONDS:g}s silence")
        segment = await ctx.record_stream(limits=ctx.stream_limits(total=bound, read=PROXY_IDLE_SECONDS))
        # The same stream ending a little after the window (a slow machine, a slow stream) is the
        # same verdict as ending within it.
        _skip_when_ended_by_itself(ctx, segment)
    silence, at = checks.longest_silence(segment)
    watched = segment.ended_at - segment.started_at
    judge.evidence.update(longestSilence=round(silence, 3), watchedSeconds=round(watched, 2))
    if segment.end == End.TIMEOUT and "no bytes" in segment.end_detail:
        silence = max(silence, PROXY_IDLE_SECONDS)
    if silence >= PROXY_IDLE_SECONDS:
        judge.non_strict(f"the open stream was silent for {silence:.0f}s: a proxy with the common "
                         f"{PROXY_IDLE_SECONDS:g}s idle timeout closes it (send a comment at least every 30 s or so)",
                         f"< {PROXY_IDLE_SECONDS:g}s", f"{silence:.1f}s starting {at - segment.started_at:.1f}s in")


def _skip_when_ended_by_itself(ctx: Context, segment: Segment) -> None:
    """12.6 with no keep-alive claimed: a stream that ends by itself has no idle stretch to
    watch (it ended before any silence reached the proxies' timeout)."""
    if _ended_by_itself(ctx, segment):
        silence, _ = checks.longest_silence(segment)
        raise Skip(f"the stream ended by itself after {segment.ended_at - segment.started_at:.1f}s (longest "
                   f"silence {silence:.1f}s) and no keep-alive is claimed: no idle stretch to watch")


def _through(proxy: FaultProxy, url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("http", f"127.0.0.1:{proxy.port}", parts.path, parts.query, ""))


def _target_port(ctx: Context, url: str) -> int:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.scheme != "http":
        raise Skip("the fault proxy only runs against a plain-HTTP target on this host")
    return parts.port or 80


async def _follow_until(ctx: Context, request: StreamRequest, url: str, until: float, sink) -> list[Segment]:
    """A reader that reconnects with Last-Event-ID after every connection that ends short of the
    stream's end, until ``until`` (time.monotonic), a refusal, or five empty connections in a row."""
    segments: list[Segment] = []
    last_id: str | None = None
    empty = 0
    while (left := until - time.monotonic()) > 0:
        segment = await record(url, client=ctx.http, headers=request.headers, method=request.method,
                               content=request.content, last_event_id=last_id, sink=sink,
                               limits=ctx.stream_limits(total=left), terminal=ctx.profile.meaning.is_end)
        if segment.head_at is None and time.monotonic() >= until:
            break  # our window closed before its head came (a slow machine): nothing of the target's
        segments.append(segment)
        if any(ctx.profile.meaning.is_end(e) for e in segment.events) or segment.status != 200 or \
                segment.end in (End.OVERFLOW, End.NO_EVENTS):
            break
        empty = 0 if segment.events else empty + 1
        if empty >= 5:
            break
        last_id = segment.last_event_id or last_id
        await trio.sleep(0.05)
    return segments


def _window(reference: list[Event], received: list[Event]) -> list[Event]:
    """The part of a broadcast that a reader joined for: from the event it first got to the
    last (by bytes), on the uninterrupted reader's record."""
    raws = [e.raw for e in reference]
    have = [e.raw for e in received]
    if not have or have[0] not in raws:
        return reference
    start = raws.index(have[0])
    end = max((i for i, raw in enumerate(raws) if raw in set(have)), default=len(raws) - 1)
    return reference[start:end + 1]


@case("12.7", "Last-Event-ID resumes under random cuts: nothing lost, nothing twice", invariants=("1", "6"),
      needs=("stream", "ids", "replay"), timeout=90)
async def resume_under_cuts(ctx: Context, judge: Judge) -> None:
    request = await ctx.open_stream()
    port = _target_port(ctx, request.url)
    shared = ctx.profile.stream.shared
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    judge.evidence["seed"] = seed
    carried: list[int] = []
    arrivals: collections.deque[float] = collections.deque(maxlen=64)
    window = ctx.job_timeout if _ends(ctx) else CUT_WINDOW_SECONDS
    async with FaultProxy(port) as proxy, trio.open_nursery() as nursery:
        clean: list[Segment] = []
        done = trio.Event()
        if shared:
            # A broadcast: an uninterrupted reader beside the cut one is the yardstick.
            async def watch_clean() -> None:
                clean.append(await ctx.record_stream(request, sink=noting_arrivals(arrivals),
                                                     limits=ctx.stream_limits(total=window + 1.5)))
            nursery.start_soon(watch_clean)
            await trio.sleep(0.2)
        nursery.start_soon(cut_at_pace, proxy, rng, arrivals, done, carried)
        segments = await _follow_until(ctx, request, _through(proxy, request.url), time.monotonic() + window,
                                       None if shared else noting_arrivals(arrivals))
        done.set()
    wire = proxy.wire()
    received = [e for s in segments for e in s.events]
    deliveries = len({e.arrived_at for e in received})
    judge.evidence.update(cuts=len(carried), eventsBeforeEachCut=carried, connections=len(segments),
                          received=len(received), deliveries=deliveries, shared=shared)
    judge.step(f"{len(carried)} cuts landed, {len(segments)} connections, {len(received)} events "
               f"({'broadcast: against an uninterrupted reader' if shared else 'per-request: against the wire'})")
    if segments and not any(s.head_at is not None for s in segments):
        _unheard(segments[0])
    refused = next((s for s in segments[1:] if s.status != 200), None)
    if refused is not None and not _reached_end(ctx, segments):
        judge.fail("a reconnect with Last-Event-ID was refused", 200,
                   f"HTTP {refused.status} to Last-Event-ID {refused.last_event_id_sent!r} ({_opened(refused)})")
        return
    if shared:
        reference = _window(clean[0].events, received)
        judge.evidence["uninterrupted"] = len(reference)
        judge_replay_via_proxy(judge, segments, reference, wire)
    else:
        _judge_per_request(judge, segments, wire)
    if _ends(ctx) and not _reached_end(ctx, segments):
        judge.fail("following through the cuts stopped short of the stream's end", "the end event",
                   _opened(segments[-1]) if segments else "no connection")
    if judge.findings:
        return
    if deliveries < MIN_CUTS + 1:
        raise Skip(f"the stream delivered its {len(received)} events in {deliveries} deliveries: too few to cut "
                   f"between (at least {MIN_CUTS + 1} needed)")
    span = max(e.arrived_at for e in received) - min(e.arrived_at for e in received)
    if len(carried) < MIN_CUTS and span < 1.0:
        # A finished stream's replay (a fixed path to a job that has ended), or one burst: its
        # events came faster than a cut can land between them. Not the harness's trouble.
        raise Skip(f"the stream delivered its {len(received)} events within {span * 1000:.0f} ms (a finished "
                   f"stream's replay, or a burst): no time to cut between them; a [[setup]] that starts a new "
                   f"job each time gives one to cut")
    if len(carried) < MIN_CUTS:
        raise HarnessError(f"only {len(carried)} of the {MIN_CUTS} cuts needed landed in {deliveries} deliveries "
                           f"over {span:.1f}s")


def _judge_per_request(judge: Judge, segments: list[Segment], wire) -> None:
    """One reader's connections to a per-request stream, against what the target sent on each
    (the proxy's tap): no event twice, no id skipped, and nothing the target sent before a cut
    left out of the resumed stream."""
    judge.evidence["wire"] = compare_connections(segments, wire)
    judge.add(checks.check_continuity(segments))
    sent = list(dict.fromkeys(i for conn in wire for i in conn.received.ids))
    have = {e.id for s in segments for e in s.events}
    missing = [i for i in sent if i not in have]
    if not missing:
        return
    placement = place_missing(missing, segments, wire)
    judge.evidence["missingPlaced"] = placement.summary()
    if placement.harness_to_blame or placement.unknown:
        raise HarnessError(f"{len(missing)} event(s) the target sent are missing, and the harness cannot show "
                           f"they are the target's loss: {placement.summary()}")
    for id_, where in list(placement.held_at_cut.items())[:20]:
        judge.fail("an event the target sent before a cut was not replayed on the reconnect", id_,
                   f"missing: {where}", id_)


def _reached_end(ctx: Context, segments: list[Segment]) -> bool:
    return any(ctx.profile.meaning.is_end(e) for s in segments for e in s.events)


def _owner(ctx: Context) -> Callable[[Event], Any]:
    """Whose an event is: its job id where the profile maps one, else its bytes."""
    where = ctx.profile.meaning.job_id
    if where:
        return lambda event: pointer_get(event, where)
    return lambda event: event.raw


@case("12.8", "a Last-Event-ID from another stream does not bring that stream's events", invariants=("6", "7"),
      needs=("stream", "ids", "replay"))
async def replay_scoped(ctx: Context, judge: Judge) -> None:
    first, second = await ctx.open_stream(), await ctx.open_stream()
    if (first.url, first.headers, first.content) == (second.url, second.headers, second.content):
        raise Skip("every stream is opened by the same request (no set-up, no session): a Last-Event-ID cannot come "
                   "from another stream of this target")
    window = ctx.stream_limits(total=ctx.job_timeout if _ends(ctx) else min(watch_seconds(ctx), 5.0))
    recordings: dict[str, Segment] = {}

    async def take(name: str, request: StreamRequest) -> None:
        recordings[name] = await ctx.record_stream(request, limits=window)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "a", first)
        nursery.start_soon(take, "b", second)
    a, b = recordings["a"], recordings["b"]
    _unheard(a)
    _unheard(b)
    judge.step(f"stream A: {_opened(a)}; stream B: {_opened(b)}")
    with_ids = [e for e in a.events if e.has_id]
    if not with_ids:
        raise TargetFault("stream A carried no event id to resume from", "events with ids", _opened(a))
    # An id from A's middle: A has events after it, which a leak would bring (A's last id of a
    # stream that ended has none after it).
    resume = with_ids[len(with_ids) // 2].id
    reply = await ctx.record_stream(second, last_event_id=resume,
                                    limits=ctx.stream_limits(total=AFTER_END_SECONDS + ctx.close_within))
    judge.evidence.update(lastEventIdOfA=resume, reply={"status": reply.status, "events": len(reply.events),
                                                        "end": f"{reply.end}: {reply.end_detail}"})
    judge.step(f"reconnected to B with Last-Event-ID {resume!r} from A's middle: HTTP {reply.status}, "
               f"{len(reply.events)} events")
    judge.add(checks.check_scoped_replay(reply.events, own=b.events, other=a.events, key=_owner(ctx)))


@case("12.9", "a reconnect after the stream's end gets 204, never the stream again", invariants=("6",),
      needs=("stream", "ends"))
async def after_end(ctx: Context, judge: Judge) -> None:
    recording = await readable(ctx)
    segment, request = recording.segment, recording.request
    if not any(ctx.profile.meaning.is_end(e) for e in segment.events):
        raise TargetFault("the stream did not reach its end", "the end event", _opened(segment))
    ids = ctx.profile.claims.has("ids")
    if request.method != "GET" and not ids:
        raise Skip(f"a {request.method} stream without ids: a second request is a new one, not a reconnect (no "
                   f"EventSource reconnects it, and it carries no Last-Event-ID)")
    last_id = segment.last_event_id if ids else None
    reply = await ctx.record_stream(request, last_event_id=last_id or None,
                                    limits=ctx.stream_limits(total=AFTER_END_SECONDS, read=AFTER_END_SECONDS))
    require = ctx.profile.claims.has("finished-204")
    judge.evidence["reply"] = {"status": reply.status, "events": len(reply.events), "lastEventIdSent": last_id,
                               "end": f"{reply.end}: {reply.end_detail}", "body": reply.body[:200].decode(errors="replace")}
    judge.step(f"reconnected to {'the same captured URL' if request.captured else 'the stream'} "
               f"{'with Last-Event-ID ' + repr(last_id) if last_id else 'without an id'}: HTTP {reply.status}, "
               f"{len(reply.events)} events ({'204 claimed' if require else 'no 204 claimed'})")
    judge.add(checks.check_after_end(reply, require_204=require, starvation=ctx.starved(),
                                     head_within=HEAD_SECONDS * ctx.timing_slack))


def _claimed_retry(ctx: Context) -> int:
    if ctx.profile.kind == "contract":
        advertised = ctx.health.get("retryMs")
        return int(advertised) if isinstance(advertised, (int, float)) and not isinstance(advertised, bool) else 0
    return ctx.profile.claims.retry_ms


# A retry longer than this leaves a reader idle for long after each cut.
LONG_RETRY_MS = 60_000


@case("12.10", "the retry field: present and as claimed", invariants=("stream body 1",), needs=("stream",))
async def retry_field(ctx: Context, judge: Judge) -> None:
    segment = (await readable(ctx)).segment
    seen = [r.ms for r in segment.records if isinstance(r, Retry)]
    judge.evidence["retry"] = seen
    if ctx.profile.claims.has("retry"):
        claimed = _claimed_retry(ctx)
        if not claimed:
            raise Skip("retry is claimed but its value is unknown (healthz gives no retryMs)")
        judge.evidence["claimed"] = claimed
        judge.add(checks.check_retry_claim(segment, claimed))
        return
    judge.informational = True
    judge.step("no retry claimed: shown, not judged" + ("" if seen else " (none sent: EventSource waits its own "
                                                                        "default, about 3 s, after a cut)"))
    if any(ms > LONG_RETRY_MS for ms in seen):
        judge.non_strict(f"a retry over {LONG_RETRY_MS // 1000}s: after a cut an EventSource waits that long",
                         f"<= {LONG_RETRY_MS} ms", max(seen))
