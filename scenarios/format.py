"""Family 2, format: event shape, UTF-8, unbuffered delivery, and what httpx-sse makes of it."""

from __future__ import annotations

from harness import Decoder, Event, Notice, checks

from ._core import Context, Judge, Measure, case
from ._shared import judge_lateness, lifecycle


@case("2.1", "every event has an id, a known type and one line of JSON with its fields", invariants=("1", "4"))
async def event_shape(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    events = recording.segment.events
    judge.step(f"checked {len(events)} events of job {recording.job_id}")
    judge.evidence["eventTypes"] = sorted({e.type for e in events})
    judge.expect(bool(events), "the stream carried no events", "events", 0)
    judge.add(checks.check_format(events, ctx.profile))


@case("2.2", "the stream is UTF-8 without surprises", invariants=("stream headers",))
async def utf8(ctx: Context, judge: Judge) -> None:
    segment = (await lifecycle(ctx)).segment
    notices = {r.kind: r.detail for r in segment.records if isinstance(r, Notice)}
    judge.evidence["notices"] = notices
    judge.expect("invalid-utf8" not in notices, "bytes that are not UTF-8", "UTF-8", notices.get("invalid-utf8"))
    if "bom" in notices:
        judge.non_strict("a byte order mark opens the stream: legal, but httpx-sse and others do not strip it")
    if "cr" in notices:
        judge.non_strict("lone CR line endings: legal, but httpx-sse delays dispatch on a trailing CR", "LF", notices["cr"])


@case("2.3", "delivery is not buffered: events arrive right after their ts", invariants=("4", "delivery"),
      measures=(Measure("lateness p50", "ms", ("latenessMs", "p50"), 5.0),
                Measure("lateness p95", "ms", ("latenessMs", "p95"), 5.0),
                Measure("lateness max", "ms", ("latenessMs", "max"), 10.0)))
async def not_buffered(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    judge_lateness(ctx, judge, recording.segment, sorted(checks.lateness_ms(recording.segment)))


def _spec_events(raw: bytes) -> list[tuple[str, str, str]]:
    decoder = Decoder()
    records = decoder.feed(raw, 0.0) + decoder.close(0.0)
    return [(e.id, e.type, e.data) for e in records if isinstance(e, Event)]


def _httpx_sse_events(raw: bytes) -> tuple[list[tuple[str, str, str]], int]:
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    lines, decoder, out, empty = SSELineDecoder(), SSEDecoder(), [], 0
    for line in [*lines.decode(raw.decode("utf-8", errors="replace")), *lines.flush()]:
        sse = decoder.decode(line.rstrip("\n"))
        if sse is not None:
            if sse.data == "":
                empty += 1  # the spec dispatches nothing for a block without data
            else:
                out.append((sse.id, sse.event or "message", sse.data))
    return out, empty


@case("2.4", "interop: httpx-sse yields the events the spec yields", invariants=("interop",))
async def httpx_sse_interop(ctx: Context, judge: Judge) -> None:
    raw = (await lifecycle(ctx)).segment.raw
    spec = _spec_events(raw)
    typical, empty = _httpx_sse_events(raw)
    judge.evidence.update(specEvents=len(spec), httpxSseEvents=len(typical), httpxSseEmptyEvents=empty)
    judge.step(f"decoded the same {len(raw)} bytes with both decoders")
    if empty:
        judge.step(f"httpx-sse also yields {empty} empty event(s) for blocks without data (its own quirk)")
    if typical != spec:
        diff = next(i for i, (a, b) in enumerate(zip(spec + [None], typical + [None])) if a != b)
        judge.non_strict("a typical Python consumer (httpx-sse) sees different events than the spec",
                         spec[diff] if diff < len(spec) else None, typical[diff] if diff < len(typical) else None)
