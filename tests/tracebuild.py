"""Hand-built traces for the invariant checks: bytes with arrival times in, a Segment out."""

from __future__ import annotations

import json

from harness import Decoder, Segment

JOB = "job1"


def ev(n: int, type_: str, **data) -> bytes:
    payload = {"jobId": JOB, "correlationId": "c", "ts": 1_000_000 + n * 100, **data}
    return f"id: {n}\nevent: {type_}\ndata: {json.dumps(payload)}\n\n".encode()


def segment(chunks: list[tuple[float, bytes]], *, end: str = "server-closed", ended_at: float | None = None,
            headers: dict[str, str] | None = None, wall_offset: float = 0.0) -> Segment:
    decoder = Decoder()
    records = []
    for at, data in chunks:
        records += decoder.feed(data, at)
    last = chunks[-1][0] if chunks else 0.0
    ended_at = last + 0.01 if ended_at is None else ended_at
    records += decoder.close(ended_at)
    base = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}
    return Segment(
        url="http://test/events", request_headers=(), last_event_id_sent=None, started_at=0.0,
        wall_offset=wall_offset, status=200, headers=tuple((headers if headers is not None else base).items()),
        records=tuple(records), chunks=tuple((at, len(d)) for at, d in chunks), ended_at=ended_at, end=end,
        end_detail="", body=b"", last_event_id=decoder.last_event_id, retry_ms=decoder.retry_ms,
    )


def good_job() -> list[bytes]:
    """A small correct job: status, each stage's start/progress/end, completion."""
    out = [ev(1, "job-status", status="running", stage="script", percent=0, message="go")]
    n = 2
    ranges = {"script": (0, 15), "tts": (15, 35), "visuals": (35, 65), "compose": (65, 85), "render": (85, 100)}
    for stage, (low, high) in ranges.items():
        out.append(ev(n, "step-status", stage=stage, status="running", percent=low)); n += 1
        for sp in (0, 50, 100):
            out.append(ev(n, "step-progress", stage=stage, stagePercent=sp, percent=low + (high - low) * sp / 100,
                          message="m", elapsedMs=1, etaMs=1)); n += 1
        out.append(ev(n, "step-status", stage=stage, status="succeeded", percent=high)); n += 1
    out.append(ev(n, "job-completed", status="completed", percent=100, artifacts=[], durationMs=5))
    return out
