"""The pure checks every case judges with (the built-in ones and a user's own): functions over
recorded traces, each returning its findings, and the timing verdicts they share."""

from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Any, Callable, Sequence

from ._client import End, Segment
from ._context import parse_data
from ._decoder import Event, Notice, Retry, Violation
from ._invariants import (ID_NOT_DECIMAL, NOT_CLOSED, Breach, IdOrder, JobAndTs, ProgressOrder, TerminalWatch,
                          blocked_during, is_number)
from ._outcomes import Finding, Severity
from ._profile import Profile
from ._starvation import Explained, Starvation
from ._timing import PATIENCE, describe_arrivals, overdue, stopped_delivering, timing_severity

__all__ = [
    "blocked_during", "check_cadence", "check_format", "check_headers", "check_ids", "check_job_and_ts", "check_keepalive",
    "check_lateness", "check_progress", "check_replay", "check_terminal", "lateness_ms", "longest_silence",
    "outside_range", "over_limit",
    # any stream (family 12)
    "bursts", "check_after_end", "check_arrival_pattern", "check_continuity", "check_cors", "check_framing",
    "check_compressed_when_asked", "check_retry_claim", "check_scoped_replay", "check_stream_headers",
    "first_record_is_retry", "line_endings",
    # timing verdicts: a breach is the target's fail, or confounded when the machine's starvation explains it
    "PATIENCE", "describe_arrivals", "overdue", "stopped_delivering", "timing_severity",
]

REQUIRED = {
    "status": ("status", "stage", "percent", "message"),
    "step_status": ("stage", "status", "percent"),
    "progress": ("stage", "stagePercent", "percent", "message", "elapsedMs", "etaMs"),
    "warning": ("stage", "code", "message"),
    "error": ("stage", "code", "message"),
    "completed": ("status", "percent", "artifacts", "durationMs"),
    "failed": ("status", "stage", "error"),
    "cancelled": ("status", "stage", "cleanup"),
}
COMMON = ("jobId", "ts", "correlationId")


def _finding(breach: Breach) -> Finding:
    return Finding(breach.message, breach.expected, breach.observed, breach.event_id)


def check_ids(events: Sequence[Event], *, first: int = 1) -> list[Finding]:
    """Invariant 1: ids are decimal and go first, first+1, ... with no gap or repeat."""
    findings = []
    order = IdOrder(first)
    for event in events:
        breach = order.see(event)
        if breach is not None:
            findings.append(_finding(breach))
            if breach.kind != ID_NOT_DECIMAL and len(findings) >= 20:
                break
    return findings


def check_format(events: Sequence[Event], profile: Profile) -> list[Finding]:
    """Every event: an id, a known type, one line of JSON object data with its fields."""
    findings = []
    by_type = {name: key for key, name in profile.events.items()}
    for event in events:
        if event.type not in by_type:
            findings.append(Finding("unknown event type", sorted(by_type), event.type, event.id))
            continue
        if "\n" in event.data:
            findings.append(Finding("data spans more than one line", "one data line", event.data[:200], event.id))
        data = parse_data(event)
        if data is None:
            findings.append(Finding("data is not a JSON object", "{...}", event.data[:200], event.id))
            continue
        missing = [f for f in (*COMMON, *REQUIRED[by_type[event.type]]) if f not in data]
        if missing:
            findings.append(Finding(f"{event.type} lacks {', '.join(missing)}", "all required fields", sorted(data), event.id))
        if "ts" in data and not is_number(data["ts"]):
            findings.append(Finding("ts is not a number of epoch milliseconds", "number", data["ts"], event.id))
        if len(findings) >= 20:
            break
    return findings


def check_progress(events: Sequence[Event], profile: Profile) -> list[Finding]:
    """Invariant 2: percent monotone in [0,100] and inside its stage's range; stages forward;
    stagePercent monotone within a stage."""
    findings = []
    order = ProgressOrder(profile)
    for event in events:
        data = parse_data(event)
        if data is None:
            continue
        findings += [_finding(b) for b in order.see(event, data)]
        if len(findings) >= 20:
            break
    return findings


def check_job_and_ts(events: Sequence[Event], job_id: str) -> list[Finding]:
    """Invariant 4: every event is this job's, and ts never decreases."""
    findings = []
    judge = JobAndTs(job_id)
    for event in events:
        findings += [_finding(b) for b in judge.see(event, parse_data(event) or {})]
        if len(findings) >= 20:
            break
    return findings


def over_limit(message: str, *, measured: float, limit: float, explained: Explained | None, expected: Any,
               observed: str, event_id: str | None = None) -> list[Finding]:
    """A timing over its limit is the target's fail, unless the machine's measured starvation in
    the measured window (``explained``) is large enough to explain the excess: then the finding
    is ``confounded`` (the case is tried again; confounded every time, it is an ``error``).
    Either way the starvation figure stands beside the observation."""
    if measured <= limit:
        return []
    if explained is None:
        return [Finding(message, expected, observed, event_id)]
    if measured - explained.total <= limit:
        return [Finding(message, expected, f"{observed}; {explained.describe()}: enough to explain it", event_id,
                        Severity.CONFOUNDED)]
    return [Finding(message, expected, f"{observed}; {explained.describe()}: not enough to explain it", event_id)]


def outside_range(message: str, *, measured: float, low: float, high: float, uncertainty: float,
                  explained: Explained | None, expected: Any, observed: str) -> list[Finding]:
    """A timing that must lie in [low, high], measured to within +- ``uncertainty`` (our own
    stalls can shift either end of an interval we time). Outside even with the uncertainty and
    the starvation taken into account: the target's fail; outside only without them: confounded."""
    if low <= measured <= high:
        return []
    slack = uncertainty + (explained.total if explained is not None else 0.0)
    note = f"; {explained.describe()}" if explained is not None else ""
    if low - slack <= measured <= high + slack:
        return [Finding(message, expected, f"{observed} (measured to +-{uncertainty * 1000:.0f} ms){note}: "
                                           f"enough to explain it", None, Severity.CONFOUNDED)]
    return [Finding(message, expected, f"{observed} (measured to +-{uncertainty * 1000:.0f} ms){note}: "
                                       f"not enough to explain it")]


def check_terminal(segment: Segment, profile: Profile, *, close_within: float,
                   starvation: Starvation | None = None) -> list[Finding]:
    """Invariant 3: exactly one terminal event, it is the last, and the server ends the
    response within ``close_within`` seconds of it (a late close that the machine's starvation
    in that window explains is confounded, not the target's fail)."""
    watch = TerminalWatch(profile.terminal_events)
    for event in segment.events:
        watch.see(event)
    closed = segment.end == End.SERVER_CLOSED
    ended = watch.end(server_closed=closed, ended_at=segment.ended_at,
                      close_within=close_within, how=f"{segment.end}: {segment.end_detail}")
    if watch.terminal is None:
        return [_finding(b) for b in ended]
    waited = segment.ended_at - watch.terminal.arrived_at
    if closed and waited > close_within:
        # Timed: judged against what the machine may have cost in that window.
        ended = [b for b in ended if b.kind != NOT_CLOSED]
        explained = starvation.explained(watch.terminal.arrived_at, segment.ended_at) if starvation else None
        late = over_limit("response ended too late after the terminal event", measured=waited, limit=close_within,
                          explained=explained, expected=f"<= {close_within}s", observed=f"{waited:.3f}s",
                          event_id=watch.terminal.id)
    else:
        late = []
    findings = []
    if len(watch.terminals) > 1:
        findings.append(Finding("more than one terminal event", 1, [f"{e.id}:{e.type}" for e in watch.terminals],
                                watch.terminals[1].id))
    if watch.after:
        findings.append(Finding("events after the terminal event", "none",
                                [f"{e.id}:{e.type}" for e in watch.after], watch.after[0].id))
    return findings + [_finding(b) for b in ended] + late


def check_headers(segment: Segment) -> list[Finding]:
    """The stream's response headers, as the contract requires."""
    findings = []
    content_type = segment.header("content-type") or ""
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "text/event-stream":
        findings.append(Finding("wrong Content-Type", "text/event-stream", content_type or None))
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value.strip('"').lower() not in ("utf-8", "utf8"):
            findings.append(Finding("charset is not utf-8", "utf-8", value))
    cache = (segment.header("cache-control") or "").lower()
    if "no-cache" not in cache and "no-store" not in cache:
        findings.append(Finding("Cache-Control lacks no-cache / no-store", "no-cache", cache or None))
    if (segment.header("x-accel-buffering") or "").lower() != "no":
        findings.append(Finding("X-Accel-Buffering: no is missing", "no", segment.header("x-accel-buffering")))
    if segment.header("content-length") is not None:
        findings.append(Finding("a stream must not have Content-Length", None, segment.header("content-length")))
    if segment.header("content-encoding") not in (None, "identity"):
        findings.append(Finding("a stream must not be compressed", None, segment.header("content-encoding")))
    return findings


def longest_silence(segment: Segment, *, start: float | None = None, end: float | None = None) -> tuple[float, float]:
    """The longest gap between byte arrivals (and the stream's start/end) in [start, end];
    returns (seconds, when it began)."""
    start = segment.started_at if start is None else start
    end = segment.ended_at if end is None else end
    times = [start] + [t for t, _ in segment.chunks if start <= t <= end] + [end]
    best, at = 0.0, start
    for before, after in zip(times, times[1:]):
        if after - before > best:
            best, at = after - before, before
    return best, at


def check_keepalive(segment: Segment, *, interval: float, tolerance: float, start: float | None = None,
                    end: float | None = None, lag_samples: Sequence[tuple[float, float]] = (),
                    starvation: Starvation | None = None) -> list[Finding]:
    """Invariant 5: no silence on the open stream longer than interval + tolerance.

    A silence is measured by when we read the bytes: our own stalls during it (``starvation``,
    or only our loop's ``lag_samples``) and a same-host target's wait for a core may explain a
    breach; then it is confounded, not the target's fail.
    """
    silence, at = longest_silence(segment, start=start, end=end)
    limit = interval + tolerance
    if silence <= limit:
        return []
    starvation = starvation if starvation is not None else Starvation(own=tuple(lag_samples))
    explained = starvation.explained(at, at + silence)
    return over_limit("silence longer than the keep-alive interval", measured=silence, limit=limit,
                      explained=explained, expected=f"<= {limit:.2f}s",
                      observed=f"{silence:.2f}s starting {at - segment.started_at:.2f}s into the stream")


def lateness_ms(segment: Segment, timestamp_ms: Callable[[Event], float | None] | None = None) -> list[float]:
    """For each event: arrival (wall clock) minus its ts, in ms (``timestamp_ms``: where an
    event's own epoch-ms timestamp is, for a stream profile's mapped one; default the contract's ts)."""
    return [late for _, late in _lateness(segment, timestamp_ms)]


def _contract_ts(event: Event) -> Any:
    return (parse_data(event) or {}).get("ts")


def _lateness(segment: Segment, timestamp_ms: Callable[[Event], float | None] | None = None
              ) -> list[tuple[Event, float]]:
    out = []
    for event in segment.events:
        ts = (timestamp_ms or _contract_ts)(event)
        if is_number(ts):
            out.append((event, segment.wall(event.arrived_at) * 1000 - ts))
    return out


def _percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.95))]


def check_lateness(segment: Segment, *, p50_limit_ms: float, p95_limit_ms: float,
                   starvation: Starvation | None = None,
                   timestamp_ms: Callable[[Event], float | None] | None = None) -> list[Finding]:
    """Delivery not buffered: most events arrive within p50_limit of their ts (``timestamp_ms``:
    as lateness_ms). Each event's lateness is also taken net of what the machine may have cost
    between its ts and its arrival (``starvation``): a breach that only the raw figures show is confounded."""
    timed = _lateness(segment, timestamp_ms)
    if len(timed) < 5:
        return [Finding("too few events with ts to judge delivery", ">= 5", len(timed))]
    p50, p95 = _percentiles([late for _, late in timed])
    if starvation is not None and (p50 > p50_limit_ms or p95 > p95_limit_ms):
        net = []
        for event, late in timed:
            stamped = event.arrived_at - late / 1000  # its ts on our monotonic clock
            net.append(late - starvation.explained(stamped, event.arrived_at).total * 1000)
        net50, net95 = _percentiles(net)
        whole = starvation.explained(segment.started_at, segment.ended_at).describe()
        findings = []
        for name, raw, net_value, limit in (("p50", p50, net50, p50_limit_ms), ("p95", p95, net95, p95_limit_ms)):
            if raw > limit:
                explains = net_value <= limit
                findings.append(Finding(
                    "events are delivered late (buffered or batched)", f"{name} <= {limit} ms",
                    f"{name} {raw:.0f} ms, {net_value:.0f} ms net of the starvation in each event's window "
                    f"(over the job: {whole}): {'enough' if explains else 'not enough'} to explain it", None,
                    Severity.CONFOUNDED if explains else Severity.FAIL))
        return findings
    findings = []
    if p50 > p50_limit_ms:
        findings.append(Finding("events are delivered late (buffered or batched)", f"p50 <= {p50_limit_ms} ms", f"p50 {p50:.0f} ms"))
    if p95 > p95_limit_ms:
        findings.append(Finding("events are delivered late (buffered or batched)", f"p95 <= {p95_limit_ms} ms", f"p95 {p95:.0f} ms"))
    return findings


def check_cadence(events: Sequence[Event], profile: Profile, *, interval: float, tolerance: float,
                  starvation: Starvation | None = None, wall_offset: float = 0.0) -> list[Finding]:
    """step-progress at least every ``interval`` while a stage works (by the server's ts). A gap
    that the target's own wait for a core in it explains (``starvation``; ts to our monotonic
    clock by ``wall_offset``, the recording's) is confounded, not the target's fail."""
    findings = []
    working: str | None = None
    last_ts = None
    for event in events:
        data = parse_data(event) or {}
        ts = data.get("ts")
        if event.type == profile.events["step_status"]:
            # Step status words are the contract's own (pending, running, succeeded, ...).
            working = data.get("stage") if data.get("status") == "running" else None
            last_ts = ts if working else None
            continue
        if working and is_number(ts) and last_ts is not None:
            gap = (ts - last_ts) / 1000
            if gap > interval + tolerance:
                began = last_ts / 1000 - wall_offset
                explained = starvation.explained(began, began + gap, own=False) if starvation is not None else None
                findings += over_limit(f"no progress for {gap:.2f}s while {working} worked", measured=gap,
                                       limit=interval + tolerance, explained=explained,
                                       expected=f"<= {interval + tolerance:.2f}s", observed=f"{gap:.2f}s",
                                       event_id=event.id)
        if working and is_number(ts):
            last_ts = ts
        if len(findings) >= 20:
            break
    return findings


def check_replay(received: Sequence[Event], reference: Sequence[Event]) -> list[Finding]:
    """Invariant 6: what arrived across connections equals one uninterrupted stream,
    id for id and byte for byte."""
    findings = []
    got = {}
    for event in received:
        if event.id in got:
            findings.append(Finding("duplicate event across reconnects", "each id once", event.id, event.id))
        got.setdefault(event.id, event)
    for ref in reference:
        mine = got.pop(ref.id, None)
        if mine is None:
            findings.append(Finding("event missing across reconnects", ref.id, None, ref.id))
        elif mine.raw != ref.raw:
            findings.append(Finding("replayed event differs from the original", ref.raw[:200].decode(errors="replace"),
                                    mine.raw[:200].decode(errors="replace"), ref.id))
        if len(findings) >= 20:
            return findings
    for extra in got:
        findings.append(Finding("event that the uninterrupted stream does not have", None, extra, extra))
    order = [int(e.id) for e in received if e.id.isdigit()]
    if order != sorted(order):
        findings.append(Finding("events out of order across reconnects", "ascending ids", order[:50]))
    return findings[:20]


def first_record_is_retry(segment: Segment) -> bool:
    for rec in segment.records:
        if isinstance(rec, Notice):
            continue
        return isinstance(rec, Retry)
    return False


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)[:500]


# -- any stream (family 12): checks that need only what a stream shows -------------------------

def _non_strict(message: str, expected: Any = None, observed: Any = None) -> Finding:
    return Finding(message, expected, observed, None, Severity.NON_STRICT)


def check_stream_headers(segment: Segment, *, advice: bool = True) -> list[Finding]:
    """A stream's response headers, as any SSE reader needs them: the media type (EventSource
    refuses any other), UTF-8 if a charset is named, no Content-Length (a stream has no length)
    and no compression (a compressor holds events until its block fills). With ``advice``, what
    deployments need but no reader checks is non-strict: Cache-Control no-cache / no-store and
    X-Accel-Buffering: no (nginx buffers the stream without it)."""
    findings = [f for f in check_headers(segment) if f.message not in (
        "Cache-Control lacks no-cache / no-store", "X-Accel-Buffering: no is missing")]
    if advice:
        cache = (segment.header("cache-control") or "").lower()
        if "no-cache" not in cache and "no-store" not in cache:
            findings.append(_non_strict("Cache-Control lacks no-cache / no-store: a cache or proxy may store or "
                                        "coalesce the stream", "no-cache", cache or None))
        if (segment.header("x-accel-buffering") or "").lower() != "no":
            findings.append(_non_strict("X-Accel-Buffering: no is missing: nginx in front buffers the stream "
                                        "unless its deployment turns buffering off", "no",
                                        segment.header("x-accel-buffering")))
    return findings


def check_cors(segment: Segment, origin: str) -> list[Finding]:
    """CORS on a stream asked for with ``Origin``, judged only when the response speaks CORS at
    all (no Access-Control-Allow-Origin: a same-origin stream, the server's choice). A browser
    refuses a wildcard with credentials and a list of origins; an origin echoed without
    ``Vary: Origin`` lets a cache hand one origin's answer to another (non-strict)."""
    allow = segment.header("access-control-allow-origin")
    if allow is None:
        return []
    allow = allow.strip()
    findings = []
    credentials = (segment.header("access-control-allow-credentials") or "").strip().lower() == "true"
    if "," in allow or " " in allow:
        findings.append(Finding("Access-Control-Allow-Origin names several origins: browsers refuse it",
                                "one origin or *", allow))
    elif allow == "*" and credentials:
        findings.append(Finding("Access-Control-Allow-Origin * with Allow-Credentials true: browsers refuse it "
                                "(an EventSource withCredentials gets nothing)", f"{origin} echoed", allow))
    elif allow == origin:
        vary = [v.strip().lower() for v in (segment.header("vary") or "").split(",")]
        if "origin" not in vary and "*" not in vary:
            findings.append(_non_strict("the Origin is echoed without Vary: Origin: a cache may serve one origin's "
                                        "answer to another", "Vary: Origin", segment.header("vary")))
    return findings


def check_compressed_when_asked(asked: Segment) -> list[Finding]:
    """The stream's answer to a request that accepts compression as a browser's does: a
    Content-Encoding there is a stream a compressor holds (proxies and servers buffer compressed
    output until a block fills), though a reader asking for identity gets it plain."""
    encoding = asked.header("content-encoding")
    if encoding in (None, "identity"):
        return []
    accepted = dict((k.lower(), v) for k, v in asked.request_headers).get("accept-encoding")
    return [Finding("a stream must not be compressed", None,
                    f"Content-Encoding: {encoding} to Accept-Encoding: {accepted}")]


def line_endings(raw: bytes) -> dict[str, int]:
    """How the body's lines end: LF, CRLF, lone CR."""
    crlf = raw.count(b"\r\n")
    return {"LF": raw.count(b"\n") - crlf, "CRLF": crlf, "CR": raw.count(b"\r") - crlf}


# Notices of things the spec allows and readers handle by its rules, each a known hazard.
_FRAMING_HAZARDS = {
    "bom": "a byte order mark opens the stream: legal, but httpx-sse and others do not strip it",
    "cr": "lone CR line endings: legal, but httpx-sse delays dispatch on a trailing CR",
    "unknown-field": "a field no reader knows, ignored by the spec's rule: if it was meant as data, event, id or "
                     "retry (a typo, a capital), its content is lost",
    "id-with-nul": "an id containing NUL: every reader ignores it, so a reconnect resumes from an older id",
    "retry-invalid": "a retry value that is not all digits: every reader ignores it",
}


def check_framing(segment: Segment) -> list[Finding]:
    """The stream's framing as the WHATWG rules read it: what no reader can accept (the
    decoder's violations, bytes that are not UTF-8, a response that the server closed inside an
    event, which every reader drops) is a fail; what the spec allows but readers trip on
    (a BOM, lone CR, mixed line endings, unknown fields...) is non-strict."""
    findings = []
    for rec in segment.records:
        if isinstance(rec, Violation):
            findings.append(Finding(f"framing violation: {rec.kind}", "lines and events within a reader's bounds",
                                    f"{rec.detail} at byte {rec.offset}"))
        elif isinstance(rec, Notice):
            if rec.kind == "invalid-utf8":
                findings.append(Finding("bytes that are not UTF-8 (an event stream is UTF-8 only)", "UTF-8",
                                        f"{rec.detail} at byte {rec.offset}"))
            elif rec.kind == "partial-event-discarded" and segment.end == End.SERVER_CLOSED:
                findings.append(Finding("the server ended the response inside an event: every reader drops it",
                                        "a blank line after the last event", f"from byte {rec.offset}"))
            elif rec.kind in _FRAMING_HAZARDS:
                findings.append(_non_strict(_FRAMING_HAZARDS[rec.kind], None, rec.detail))
    if segment.raw:
        endings = {k: v for k, v in line_endings(segment.raw).items() if v}
    else:  # without the bytes: what the decoder noticed (it counts CRLF and CR, not LF)
        endings = {k.upper(): 1 for k in ("crlf", "cr") if any(isinstance(r, Notice) and r.kind == k
                                                              for r in segment.records)}
    if len(endings) > 1:
        findings.append(_non_strict("mixed line endings: legal, but a reader that splits on one kind misframes "
                                    "the others", "one kind of line end", endings))
    return findings


def bursts(segment: Segment, *, silence: float, min_events: int) -> list[tuple[float, float, int]]:
    """Reads that brought at least ``min_events`` events after at least ``silence`` seconds with
    no bytes at all (since the previous read, or the response head): (when, silence, events)."""
    by_read: dict[float, int] = {}
    for event in segment.events:
        by_read[event.arrived_at] = by_read.get(event.arrived_at, 0) + 1
    out = []
    previous = segment.head_at if segment.head_at is not None else segment.started_at
    for at, _ in segment.chunks:
        events = by_read.get(at, 0)
        if events >= min_events and at - previous >= silence:
            out.append((at, at - previous, events))
        previous = at
    return out


def check_arrival_pattern(segment: Segment, *, silence: float = 1.0, min_events: int = 4,
                          starvation: Starvation | None = None) -> list[Finding]:
    """Delivery not buffered, judged without timestamps: many events in one read after a long
    silence is what a buffer looks like when it flushes. Twice or more, carrying half the
    events or more: buffered (fail). Once: the source may have produced them at once
    (non-strict; map a timestamp in the profile to judge it). When the bursts whose silence the
    machine's measured ``starvation`` (our loop's stall, the target's wait for a core) does not
    explain would give a lesser verdict, the machine may have decided it: confounded (tried
    again), with the figures."""
    found = bursts(segment, silence=silence, min_events=min_events)
    verdict = _burst_finding(segment, found, silence, min_events)
    if verdict is None or starvation is None:
        return [verdict] if verdict is not None else []
    windows = [(b, starvation.explained(b[0] - b[1], b[0])) for b in found]
    unexplained = [b for b, explained in windows if b[1] - explained.total >= silence]
    lesser = _burst_finding(segment, unexplained, silence, min_events)
    if lesser is not None and lesser.severity == verdict.severity:
        return [verdict]
    worst = max((explained for _, explained in windows), key=lambda explained: explained.total)
    return [dataclasses.replace(verdict, severity=Severity.CONFOUNDED, observed=(
        f"{verdict.observed}; {len(found) - len(unexplained)} of {len(found)} silence(s) explained by the machine's "
        f"starvation (the most: {worst.describe()})"))]


def _burst_finding(segment: Segment, found: list[tuple[float, float, int]], silence: float,
                   min_events: int) -> Finding | None:
    if not found:
        return None
    total = len(segment.events)
    carried = sum(n for _, _, n in found)
    shown = [f"{n} events after {quiet:.2f}s of silence, {at - segment.started_at:.2f}s in" for at, quiet, n in found[:5]]
    if len(found) >= 2 and carried * 2 >= total:
        return Finding("events arrive in bursts after silences (buffered)", f"no read of >= {min_events} events "
                       f"after >= {silence:g}s of silence", f"{len(found)} bursts carried {carried} of {total} events: "
                       + "; ".join(shown))
    return _non_strict("a burst of events after a silence: buffered, or produced at once (a timestamp in the "
                       "profile's [meaning] would tell)", f"no read of >= {min_events} events after >= {silence:g}s "
                       f"of silence", "; ".join(shown))


def check_retry_claim(segment: Segment, claimed_ms: int) -> list[Finding]:
    """The stream sends a retry field, and it says what the target claims."""
    retries = [r.ms for r in segment.records if isinstance(r, Retry)]
    if not retries:
        return [Finding("no retry field on the stream", f"retry: {claimed_ms}", None)]
    wrong = sorted({ms for ms in retries if ms != claimed_ms})
    if wrong:
        return [Finding("retry differs from the claimed value", claimed_ms, wrong)]
    return []


def check_after_end(segment: Segment, *, require_204: bool, starvation: Starvation | None = None,
                    head_within: float = 1.0) -> list[Finding]:
    """What a reconnect to a finished stream got. 204 is right: an EventSource stops. Events
    again (the same stream replayed, or the work started anew) are a fail: an EventSource
    reconnects at each end and restarts the work forever. A 200 with nothing (closed or held
    open), another status, or no answer at all stops no browser properly: a fail where 204 is
    claimed, else non-strict. No response head is a timing (owed within ``head_within``):
    confounded when the machine's measured ``starvation`` explains the wait."""
    if segment.status == 204:
        return []
    if segment.status is None:  # no response head (a tap's connection records no head_at)
        waited = segment.ended_at - segment.started_at
        explained = starvation.explained(segment.started_at, segment.ended_at) if starvation is not None else None
        severity = timing_severity(waited, head_within, explained)
        if severity == Severity.FAIL and not require_204:
            severity = Severity.NON_STRICT
        return [Finding("a reconnect after the end got no response head: an EventSource stays CONNECTING, neither "
                        "stopped nor served", "204 No Content",
                        f"no head in {waited:.2f}s ({segment.end}: {segment.end_detail})"
                        + (f"; {explained.describe()}" if explained is not None else ""), None, severity)]
    if segment.status == 200 and segment.events:
        return [Finding("a reconnect after the end got events again: an EventSource would restart the stream at "
                        "every end, forever", "204 No Content",
                        f"HTTP 200 and {len(segment.events)} event(s) (first: {segment.events[0].raw[:120]!r})")]
    if segment.status == 200:
        how = "held open with no event" if segment.end != End.SERVER_CLOSED else "closed with no event"
        message = (f"a reconnect after the end got HTTP 200, {how}: an EventSource "
                   + ("stays connected to a finished stream" if segment.end != End.SERVER_CLOSED
                      else "reconnects every retry period, forever"))
    else:
        message = (f"a reconnect after the end got HTTP {segment.status}: an EventSource fires an error rather than "
                   f"stopping cleanly")
    observed = f"HTTP {segment.status}: {segment.end}: {segment.end_detail}"
    return [Finding(message, "204 No Content", observed, None, Severity.FAIL if require_204 else Severity.NON_STRICT)]


def check_scoped_replay(reply: Sequence[Event], *, own: Sequence[Event], other: Sequence[Event],
                        key: Callable[[Event], Any]) -> list[Finding]:
    """A reconnect to one stream with another stream's Last-Event-ID must not bring the other
    stream's events. ``key`` says whose an event is (its job id, or its bytes): an event that
    keys as the other stream's and not as this one's is a leak."""
    own_keys = {key(e) for e in own}
    other_keys = {key(e) for e in other} - own_keys - {None}
    leaked = [e for e in reply if key(e) in other_keys]
    if not leaked:
        return []
    return [Finding("a Last-Event-ID from another stream brought that stream's events", "none of its events",
                    f"{len(leaked)} event(s), first: {leaked[0].raw[:160]!r}", leaked[0].id)]


def check_continuity(segments: Sequence[Segment]) -> list[Finding]:
    """Across a reader's connections to one per-request stream: no event twice, and, when the
    first connection's ids count up by one (decimal), no id skipped between first and last."""
    findings = []
    seen: dict[str, int] = {}
    for number, segment in enumerate(segments, 1):
        for event in segment.events:
            if not event.has_id:
                continue
            if event.id in seen:
                findings.append(Finding("an event came twice across reconnects", "each id once",
                                        f"id {event.id} on connections {seen[event.id]} and {number}", event.id))
                if len(findings) >= 20:
                    return findings
            seen.setdefault(event.id, number)
    first = [e.id for e in segments[0].events if e.has_id] if segments else []
    counting = len(first) >= 3 and all(i.isdigit() for i in first) and \
        all(int(b) - int(a) == 1 for a, b in zip(first, first[1:]))
    if counting and all(i.isdigit() for i in seen):
        numbers = sorted(int(i) for i in seen)
        skipped = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        if skipped:
            findings.append(Finding("ids skipped across reconnects (the stream counts up by one)", "every id",
                                    f"{len(skipped)} missing, first: {skipped[:10]}", str(skipped[0])))
    return findings
