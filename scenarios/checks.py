"""Invariant checks: pure functions over recorded traces, each returning its findings."""

from __future__ import annotations

import json
import statistics
from typing import Any, Sequence

from harness import End, Event, Notice, Profile, Retry, Segment
from harness._invariants import (ID_NOT_DECIMAL, Breach, IdOrder, JobAndTs, ProgressOrder, TerminalWatch,
                                 blocked_during, is_number, silence_breach)

from ._core import Finding, parse_data

__all__ = [
    "blocked_during", "check_cadence", "check_format", "check_headers", "check_ids", "check_job_and_ts", "check_keepalive",
    "check_lateness", "check_progress", "check_replay", "check_terminal", "lateness_ms", "longest_silence",
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


def check_terminal(segment: Segment, profile: Profile, *, close_within: float) -> list[Finding]:
    """Invariant 3: exactly one terminal event, it is the last, and the server ends the
    response within ``close_within`` seconds of it."""
    watch = TerminalWatch(profile.terminal_events)
    for event in segment.events:
        watch.see(event)
    ended = watch.end(server_closed=segment.end == End.SERVER_CLOSED, ended_at=segment.ended_at,
                      close_within=close_within, how=f"{segment.end}: {segment.end_detail}")
    if watch.terminal is None:
        return [_finding(b) for b in ended]
    findings = []
    if len(watch.terminals) > 1:
        findings.append(Finding("more than one terminal event", 1, [f"{e.id}:{e.type}" for e in watch.terminals],
                                watch.terminals[1].id))
    if watch.after:
        findings.append(Finding("events after the terminal event", "none",
                                [f"{e.id}:{e.type}" for e in watch.after], watch.after[0].id))
    return findings + [_finding(b) for b in ended]


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
                    end: float | None = None, lag_samples: Sequence[tuple[float, float]] = ()) -> list[Finding]:
    """Invariant 5: no silence on the open stream longer than interval + tolerance.

    A silence is measured by when we read the bytes; the time our own event loop was
    measurably blocked during it is the harness's delay, not the server's, and is taken off.
    """
    silence, at = longest_silence(segment, start=start, end=end)
    breach = silence_breach(silence, at, interval=interval, tolerance=tolerance,
                            own=blocked_during(lag_samples, at, at + silence), since_start=at - segment.started_at)
    return [_finding(breach)] if breach else []


def lateness_ms(segment: Segment) -> list[float]:
    """For each event: arrival (wall clock) minus its ts, in ms."""
    out = []
    for event in segment.events:
        ts = (parse_data(event) or {}).get("ts")
        if is_number(ts):
            out.append(segment.wall(event.arrived_at) * 1000 - ts)
    return out


def check_lateness(segment: Segment, *, p50_limit_ms: float, p95_limit_ms: float) -> list[Finding]:
    """Delivery not buffered: most events arrive within p50_limit of their ts."""
    values = sorted(lateness_ms(segment))
    if len(values) < 5:
        return [Finding("too few events with ts to judge delivery", ">= 5", len(values))]
    p50 = statistics.median(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    findings = []
    if p50 > p50_limit_ms:
        findings.append(Finding("events are delivered late (buffered or batched)", f"p50 <= {p50_limit_ms} ms", f"p50 {p50:.0f} ms"))
    if p95 > p95_limit_ms:
        findings.append(Finding("events are delivered late (buffered or batched)", f"p95 <= {p95_limit_ms} ms", f"p95 {p95:.0f} ms"))
    return findings


def check_cadence(events: Sequence[Event], profile: Profile, *, interval: float, tolerance: float) -> list[Finding]:
    """step-progress at least every ``interval`` while a stage works (by the server's ts)."""
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
                findings.append(Finding(f"no progress for {gap:.2f}s while {working} worked",
                                        f"<= {interval + tolerance:.2f}s", f"{gap:.2f}s", event.id))
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
