"""Family 13, through a real reverse proxy: the target's stream through Debian's nginx with its
default proxy settings (harness.nginx), against a direct reader of the same stream.

nginx's default is ``proxy_buffering on``: it holds what the upstream sends until a buffer of one
memory page (4 KiB) fills or the upstream ends, unless the answer says ``X-Accel-Buffering: no``.
The most common SSE production failure, shown here before production.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence

import trio

from harness import Event, Segment, Severity, Starvation, StreamRequest, checks
from harness.nginx import NginxError, find_nginx, running_nginx, upstream_origin

from ._core import Context, Finding, HarnessError, Judge, Measure, Skip, TargetFault, case
from .stream import HEAD_SECONDS

MIN_EVENTS = 5  # fewer events than this on the direct reader: nothing to judge delivery by
WINDOW_SECONDS = 15.0  # how long a stream that does not end by itself is read, at most
MAX_EVENTS = 60  # and how many of its events
# Modes, by what the proxied events are compared with (see held_back).
SAME_EVENTS, TIMESTAMPS, PATTERN = "same events", "timestamps", "arrival pattern"


@dataclasses.dataclass(frozen=True)
class Held:
    """How long nginx held one event: its arrival through nginx minus when it would have come
    without nginx (``ref``, on our monotonic clock). ``missing``: it never came through within
    the wait, and ``held`` is a lower bound (the wait's end minus ``ref``)."""

    position: int
    event_id: str
    ref: float
    arrived_at: float
    missing: bool = False

    @property
    def held(self) -> float:
        return self.arrived_at - self.ref


def _key_counts(events: Sequence[Event]) -> list[tuple]:
    """A key per event that pairs the same event on two readers of a shared stream (its id, type
    and data, numbered among equals)."""
    seen: dict[tuple, int] = {}
    keys = []
    for event in events:
        key = (event.id, event.type, event.data)
        seen[key] = seen.get(key, 0) + 1
        keys.append((*key, seen[key]))
    return keys


def held_back(direct: Segment, proxied: Segment, *, mode: str, timestamp_ms: Callable[[Event], float | None],
              proxied_reached_end: bool) -> list[Held]:
    """Per event of the stream, how long nginx held it (pure, over the two recordings).

    ``same events`` (a shared stream, both read at once): through nginx minus directly, event by
    event. ``timestamps`` (a stream per request, its events stamped): each proxied event's lateness
    past its own timestamp minus the direct reader's median lateness (the target's own, and any
    clock offset). ``arrival pattern`` (a stream per request, no timestamp): the k-th event's time
    since its request, through nginx minus directly (another run of the same stream, read at the
    same time). Events the direct reader got that never came through nginx (and the proxied
    stream did not reach its end) are ``missing``, held at least until the proxied reading ended.
    """
    out: list[Held] = []
    if mode == SAME_EVENTS:
        arrivals = dict(zip(_key_counts(proxied.events), proxied.events))
        common = [k for k in _key_counts(direct.events) if k in arrivals]
        first = common[0] if common else None
        started = False
        for position, (key, event) in enumerate(zip(_key_counts(direct.events), direct.events)):
            started = started or key == first or (first is None and event.arrived_at >= proxied.started_at + 0.5)
            if not started:
                continue  # sent before the proxied reader was connected
            came = arrivals.get(key)
            if came is not None:
                out.append(Held(position, event.id, event.arrived_at, came.arrived_at))
            else:
                out.append(Held(position, event.id, event.arrived_at, max(proxied.ended_at, event.arrived_at), True))
        return out
    if mode == TIMESTAMPS:
        direct_late = [direct.wall(e.arrived_at) - ts / 1000 for e in direct.events
                       if (ts := timestamp_ms(e)) is not None]
        baseline = statistics.median(direct_late) if direct_late else 0.0
        for position, event in enumerate(proxied.events):
            ts = timestamp_ms(event)
            if ts is not None:
                out.append(Held(position, event.id, ts / 1000 - proxied.wall_offset + baseline, event.arrived_at))
    else:
        for position, (event, twin) in enumerate(zip(proxied.events, direct.events)):
            ref = proxied.started_at + (twin.arrived_at - direct.started_at)
            out.append(Held(position, event.id, ref, event.arrived_at))
    if not proxied_reached_end:
        for position in range(len(proxied.events), len(direct.events)):
            twin = direct.events[position]
            ref = proxied.started_at + (twin.arrived_at - direct.started_at)
            out.append(Held(position, twin.id, ref, max(proxied.ended_at, ref), True))
    return out


def reads(segment: Segment) -> list[tuple[float, int]]:
    """The stream as it arrived: (seconds since the request, events completed) per read that
    completed at least one event."""
    counts: dict[float, int] = {}
    for event in segment.events:
        counts[event.arrived_at] = counts.get(event.arrived_at, 0) + 1
    return [(round(at - segment.started_at, 3), n) for at, n in sorted(counts.items())]


def worst_burst(held: Sequence[Held]) -> tuple[int, float]:
    """The read through nginx that brought the most events (the longest-held such read on a tie):
    (events in it, the longest any of them was held, in seconds)."""
    by_read: dict[float, list[Held]] = {}
    for item in held:
        if not item.missing:
            by_read.setdefault(item.arrived_at, []).append(item)
    if not by_read:
        return 0, 0.0
    items = max(by_read.values(), key=lambda group: (len(group), max(h.held for h in group)))
    return len(items), max(h.held for h in items)


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def check_held_back(held: Sequence[Held], *, limit: float, starvation: Starvation | None,
                    burst_text: str) -> list[Finding]:
    """Events still prompt through nginx: the 95th percentile of what nginx held them is within
    ``limit`` seconds. Each event's hold is also taken net of what the machine may have cost in its
    window (``starvation``): a breach that only the raw figures show is confounded (checks.over_limit's
    rule, per event as in checks.check_lateness). Events that never came through are their own fail."""
    findings = []
    missing = [h for h in held if h.missing]
    if missing:
        waited = max(h.held for h in missing)
        findings.append(Finding(
            f"{len(missing)} event(s) that the direct reader got never came through nginx ({burst_text})",
            "every event through nginx, as it is sent", f"still held after {waited:.2f}s when the reading ended "
            f"(first: id {missing[0].event_id or '-'}, position {missing[0].position})", missing[0].event_id or None))
    values = [h.held for h in held]
    if not values:
        return findings
    raw = _p95(values)
    if raw <= limit:
        return findings
    expected = f"p95 <= {limit * 1000:.0f} ms"
    observed = f"p95 {raw * 1000:.0f} ms, p50 {statistics.median(values) * 1000:.0f} ms; {burst_text}"
    if starvation is None:
        return findings + [Finding("events are held back by nginx with its default settings", expected, observed)]
    net = _p95([h.held - starvation.explained(h.ref, h.arrived_at).total for h in held])
    explains = net <= limit
    return findings + [Finding(
        "events are held back by nginx with its default settings", expected,
        f"{observed}; {net * 1000:.0f} ms net of the starvation in each event's window: "
        f"{'enough' if explains else 'not enough'} to explain it", None,
        Severity.CONFOUNDED if explains else Severity.FAIL)]


def _limits(ctx: Context, ends: bool, **overrides):
    return ctx.stream_limits(total=ctx.job_timeout if ends else min(ctx.job_timeout, WINDOW_SECONDS), **overrides)


async def _record(ctx: Context, request: StreamRequest, url: str, ends: bool) -> Segment:
    """One reader: to the stream's end, or (a stream that does not end) for a window of MAX_EVENTS."""
    seen = [0]

    def enough(_event: Event) -> bool:
        seen[0] += 1
        return seen[0] >= MAX_EVENTS

    stop = None if ends else enough
    return await ctx.record_stream(dataclasses.replace(request, url=url), limits=_limits(ctx, ends), stop=stop)


@case("13.1", "through nginx with its default proxy settings, events still arrive promptly",
      invariants=("delivery",), needs=("stream",),
      measures=(Measure("held by nginx p95", "ms", ("heldMs", "p95"), 5.0),))
async def through_default_nginx(ctx: Context, judge: Judge) -> None:
    binary = find_nginx()
    if binary is None:
        raise Skip("nginx is not installed (looked on PATH, in /usr/sbin and SSE_HARNESS_NGINX): "
                   "install it (apt-get install nginx) to run the stream through a real reverse proxy")
    profile = ctx.profile
    ends = profile.claims.has("ends")
    shared = profile.stream is not None and profile.stream.shared
    try:
        upstream = upstream_origin(profile.base_url)
    except NginxError as exc:
        raise HarnessError(str(exc)) from None
    segments: dict[str, Segment] = {}
    try:
        async with running_nginx(upstream, binary=binary) as proxy:
            judge.step(f"started nginx ({binary}, master pid {proxy.pid}, worker(s) {list(proxy.workers)}) on "
                       f"{proxy.base_url}, proxy_pass {upstream}, every proxy_* setting at its default")
            judge.evidence["nginxConfig"] = proxy.config

            async def read(name: str, request: StreamRequest | None) -> None:
                request = request if request is not None else await ctx.open_stream()
                try:
                    url = proxy.via(request.url) if name == "proxied" else request.url
                except NginxError as exc:
                    raise HarnessError(str(exc)) from None
                segments[name] = await _record(ctx, request, url, ends)

            # A shared stream: one request, read twice at once; a stream per request: two runs at once.
            request = await ctx.open_stream() if shared else None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, "direct", request)
                nursery.start_soon(read, "proxied", request)
            error_log = proxy.error_log(1500)
        if proxy.left_over:
            raise HarnessError(f"nginx's worker(s) {list(proxy.left_over)} outlived its master {proxy.pid}; "
                               f"killed by pid")
    except NginxError as exc:
        raise HarnessError(f"could not run nginx for the proxied reading: {exc}") from None
    judge.step("stopped nginx by its master's pid; no worker left")
    direct, proxied = segments["direct"], segments["proxied"]
    accel = direct.header("x-accel-buffering")
    judge.evidence.update(directHeaders=dict(direct.headers), proxiedHeaders=dict(proxied.headers),
                          xAccelBuffering=accel)
    if direct.head_at is None:
        # Flask-SSE on a quiet channel: no head until the first publish. One finding, 12.3's.
        raise Skip(f"no response head within {direct.ended_at - direct.started_at:.1f}s on the direct reading "
                   f"({direct.end}: {direct.end_detail}): nothing to compare through nginx (12.3 judges the "
                   f"missing head)")
    if direct.status != 200:
        raise TargetFault(f"the stream answered HTTP {direct.status} directly", 200,
                          f"{direct.status}: {direct.body[:200]!r}")
    if proxied.head_at is None:
        # A timing: owed about when it came directly, and within the head deadline after that;
        # a machine starved meanwhile may have held nginx or our reader (confounded, tried again).
        waited = proxied.ended_at - proxied.started_at
        limit = (direct.head_at - direct.started_at) + HEAD_SECONDS * ctx.timing_slack
        if waited <= limit:
            raise HarnessError(f"the reading through nginx ended after {waited:.1f}s, before its response head was owed")
        judge.add(checks.over_limit(
            "through nginx no response head came, though it came directly (an EventSource behind this proxy stays "
            "CONNECTING)", measured=waited, limit=limit,
            explained=ctx.starved().explained(proxied.started_at, proxied.ended_at),
            expected=f"a response head within {limit:.2f}s, as directly after "
                     f"{(direct.head_at - direct.started_at) * 1000:.0f} ms",
            observed=f"none in {waited:.1f}s ({proxied.end}: {proxied.end_detail})"))
        return
    if proxied.status != 200:
        if proxied.status in (502, 504) and (proxied.header("server") or "").startswith("nginx"):
            raise HarnessError(f"nginx could not reach the target it proxies ({proxied.status}): {error_log[-600:]}")
        raise TargetFault(f"through nginx (HTTP/1.0 to the target: nginx's default) the stream answered HTTP "
                          f"{proxied.status}, directly 200", 200, f"{proxied.status}: {proxied.body[:200]!r}")
    meaning = profile.meaning
    timed = sum(1 for e in direct.events if meaning.timestamp_ms(e) is not None)
    mode = SAME_EVENTS if shared else TIMESTAMPS if timed >= MIN_EVENTS else PATTERN
    if len(direct.events) < MIN_EVENTS:
        raise Skip(f"the direct reader got {len(direct.events)} event(s) ({direct.end}: {direct.end_detail}): too few "
                   f"to judge delivery through nginx ({MIN_EVENTS} needed)")
    reached_end = any(meaning.is_end(e) for e in proxied.events) or proxied.end == "server-closed"
    held = held_back(direct, proxied, mode=mode, timestamp_ms=meaning.timestamp_ms, proxied_reached_end=reached_end)
    direct_reads, proxied_reads = reads(direct), reads(proxied)
    count, longest = worst_burst(held)
    most_direct = max((n for _, n in direct_reads), default=0)
    burst_text = (f"buffered by nginx: {count} events arrived in one read after {longest:.2f}s; directly at most "
                  f"{most_direct} per read; the target sent "
                  f"{'X-Accel-Buffering: ' + accel if accel else 'no X-Accel-Buffering header'}")
    values = [h.held * 1000 for h in held]
    judge.evidence.update(
        mode=mode, heldMs={"p50": round(statistics.median(values), 1), "p95": round(_p95(values), 1),
                           "max": round(max(values), 1), "n": len(values),
                           "missing": sum(1 for h in held if h.missing)} if values else None,
        directReads=direct_reads[:80], proxiedReads=proxied_reads[:80],
        directEnd=f"{direct.end}: {direct.end_detail}", proxiedEnd=f"{proxied.end}: {proxied.end_detail}")
    if ends and reached_end and proxied.end != "server-closed" and direct.end == "server-closed":
        # Not this case's verdict (the close after the end is judged directly elsewhere), but a
        # deployment's: nginx speaks HTTP/1.0 to the target and ends the response only when the
        # target closes the connection.
        judge.step(f"through nginx the response was not ended after the stream's end ({proxied.end_detail}): "
                   f"nginx ends it when the target closes its connection (HTTP/1.0 upstream)")
    judge.step(f"read the stream directly ({len(direct.events)} events in {len(direct_reads)} reads) and through "
               f"nginx ({len(proxied.events)} events in {len(proxied_reads)} reads), compared by {mode}")
    limit = profile.timing["max_lateness_ms"] / 1000 * ctx.timing_slack
    starvation = ctx.starved()
    judge.evidence["starvation"] = starvation.explained(proxied.started_at, proxied.ended_at).figures()
    found = check_held_back(held, limit=limit, starvation=starvation, burst_text=burst_text)
    if any(f.severity == Severity.FAIL for f in found):
        found = [dataclasses.replace(f, message=f"{f.message}: the server must send X-Accel-Buffering: no, or the "
                                     f"deployment must turn proxy_buffering off") if i == 0 else f
                 for i, f in enumerate(found)]
    judge.add(found)
    if not found and (accel or "").lower() != "no":
        judge.non_strict("prompt through nginx here without X-Accel-Buffering: no, only because its events filled "
                         "nginx's buffer (4 KiB) fast: a slower stream would be held", "X-Accel-Buffering: no", accel)
