"""What ``sse-harness probe`` makes of a stream it recorded: from the first connection, a
reconnect with the last id it saw and (for a stream that ended) a resume from an id in its
middle, the findings (headers, event types, the id pattern, keep-alive, retry, fields that look
like progress, timestamps and a job id, how the stream ended, what the reconnects got) and a
draft stream profile that claims only what was observed, each line commented with why.

Pure: Segments in, Findings out (the recording is harness._probe_cli's, the draft profile's text
harness._probe_render's).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from typing import Any, Iterator
from urllib.parse import urlsplit

from ._client import End, Segment
from ._decoder import Comment, Event
from ._stream_profile import parse_data, rfc3339_seconds

__all__ = ["Findings", "Pick", "Reconnect", "analyse", "reconnect_pause", "resume_id", "sent_header", "stream_problem"]

# Words that make an event type (or a status field's value) look like the end of a stream.
_END_WORDS = {"done", "complete", "completed", "end", "ended", "finish", "finished", "error", "failed", "failure",
              "fail", "cancelled", "canceled", "close", "closed", "stop", "stopped", "succeeded", "aborted",
              "terminated"}
_SENTINEL = re.compile(r"^\[[A-Z][A-Z_ ]*\]$")  # [DONE], [END]
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_NEAR = 86_400.0  # a timestamp within a day of the arrival is "near now"


@dataclasses.dataclass(frozen=True)
class Pick:
    """A place in the events (a pointer_get path) and what was seen there."""

    where: str
    note: str


@dataclasses.dataclass(frozen=True)
class Reconnect:
    """What one reconnect got."""

    sent_id: str | None  # the Last-Event-ID it sent
    got: str  # "204", "status", "unreachable", "from-start", "continued", "newer", "repeat", "nothing"
    note: str


@dataclasses.dataclass(frozen=True)
class Findings:
    url: str
    method: str
    body: str | None
    request_headers: dict[str, str]
    status: int | None
    response_headers: tuple[tuple[str, str], ...]
    problem: str  # why this is not a stream ("" when it is)
    seconds: float  # how long the first connection lasted
    events: int
    types: dict[str, int]
    comments: int
    ids: str  # "all", "some", "none"
    ids_note: str
    keepalive_seconds: float
    keepalive_note: str
    retry_ms: int | None
    progress: Pick | None
    progress_scale: float
    progress_note: str  # why none, when none
    timestamp: Pick | None
    timestamp_format: str
    timestamp_note: str
    # Why a timestamp that was seen is not claimed ("" when it is): the stream's path names one job
    # that has ended, so every run reads its replay, whose timestamps are as old as the job.
    timestamp_withheld: str
    per_job: bool  # the stream's path holds the job id
    job_id: Pick | None
    job_id_note: str
    ended: bool  # the server closed the response
    end_note: str
    end_types: tuple[str, ...]
    end_data: str
    end_field: str
    end_values: tuple[str, ...]
    reconnect: Reconnect | None
    resume: Reconnect | None
    replay: bool
    replay_note: str
    finished_204: bool
    finished_note: str

    @property
    def ends(self) -> bool:
        return bool(self.end_types or self.end_data or self.end_field)


def stream_problem(segment: Segment) -> str:
    """Why the first connection gave no event stream ("" when it did)."""
    if segment.end == End.CONNECT_FAILED:
        return f"could not connect: {segment.end_detail}"
    if segment.status is None:
        return f"no response: {segment.end}: {segment.end_detail}"
    if segment.status != 200:
        body = segment.body[:300].decode("utf-8", "replace")
        return f"the server answered HTTP {segment.status}, not a stream" + (f": {body}" if body else "")
    content_type = segment.header("content-type") or ""
    if content_type.split(";")[0].strip().lower() != "text/event-stream":
        return f"the response is {content_type or 'without a Content-Type'}, not text/event-stream"
    return ""


def reconnect_pause(first: Segment) -> float:
    """How long to wait before reconnecting to a stream we closed ourselves: long enough for a
    live stream to have emitted events meanwhile (so a reconnect that resumes right after the
    last id shows replay, not just the next live event), short enough to stay a probe."""
    if first.end == End.SERVER_CLOSED:
        return 0.0
    times = [e.arrived_at for e in first.events]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return min(2.0, max(0.2, 2 * statistics.median(gaps))) if gaps else 0.2


def resume_id(first: Segment, reconnect: Segment | None) -> str | None:
    """For a stream that ended: an id in its middle, to see whether Last-Event-ID resumes after
    it (a reconnect with the last id can show only that nothing is left). None otherwise."""
    if first.end != End.SERVER_CLOSED or reconnect is None:
        return None
    with_ids = [e for e in first.events if e.has_id and e.id]
    if len(with_ids) < 2 or len(with_ids) != len(first.events):
        return None
    return with_ids[len(with_ids) // 2 - 1].id


def analyse(first: Segment, reconnect: Segment | None = None, resume: Segment | None = None, *,
            method: str = "GET", body: str | None = None, request_headers: dict[str, str] | None = None,
            paused: float = 0.0) -> Findings:
    """Everything the probe can say from what it recorded."""
    events = first.events
    types: dict[str, int] = {}
    for event in events:
        types[event.type] = types.get(event.type, 0) + 1
    objects = [(e, parse_data(e)) for e in events]
    objects = [(e, o) for e, o in objects if o is not None]
    ids, ids_note = _ids(events)
    keepalive, keepalive_note = _keepalive(first)
    progress, scale, progress_note = _progress(objects)
    timestamp, stamp_format, timestamp_note = _timestamp(first, objects)
    job_id, job_id_note, per_job = _job_id(objects, first.url)
    withheld = ""
    if timestamp is not None and per_job and first.end == End.SERVER_CLOSED:
        withheld = ("seen, but the path names one job, which has ended: a run would read its replay, whose "
                    "timestamps are as old as the job, and judge them late. Claim it once [stream] opens a new "
                    "job each time (the [[setup]] above)")
    again = _reconnect(first, reconnect, paused) if reconnect is not None else None
    resumed = _resume(first, resume) if resume is not None else None
    end = _end(first, objects, again)
    replay, replay_note = _replay(ids, again, resumed)
    finished_204 = bool(end["ends"] and again is not None and again.got == "204")
    if finished_204:
        finished_note = f"the reconnect after the end ({sent_header(again.sent_id)}) got 204"
    elif again is not None and again.got == "204":
        finished_note = "the reconnect got 204, but no end of the stream was recognised to go with it"
    elif again is not None:
        finished_note = f"the reconnect after the end got {again.note}" if first.end == End.SERVER_CLOSED else \
            "the stream did not end while probed"
    else:
        finished_note = "no reconnect was made"
    return Findings(
        url=first.url, method=method, body=body, request_headers=dict(request_headers or {}), status=first.status,
        response_headers=first.headers, problem=stream_problem(first), seconds=first.ended_at - first.started_at,
        events=len(events), types=types, comments=len(first.comments), ids=ids, ids_note=ids_note,
        keepalive_seconds=keepalive, keepalive_note=keepalive_note, retry_ms=first.retry_ms,
        progress=progress, progress_scale=scale, progress_note=progress_note,
        timestamp=timestamp, timestamp_format=stamp_format, timestamp_note=timestamp_note,
        timestamp_withheld=withheld, per_job=per_job, job_id=job_id, job_id_note=job_id_note, ended=first.end == End.SERVER_CLOSED, end_note=end["note"],
        end_types=end["types"], end_data=end["data"], end_field=end["field"], end_values=end["values"],
        reconnect=again, resume=resumed, replay=replay, replay_note=replay_note,
        finished_204=finished_204, finished_note=finished_note)


def _leaves(value: dict[str, Any], prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(pointer, value) of every scalar in nested objects (lists are not entered)."""
    for key, item in value.items():
        pointer = prefix + "/" + str(key).replace("~", "~0").replace("/", "~1")
        if isinstance(item, dict) and depth < 3:
            yield from _leaves(item, pointer, depth + 1)
        elif not isinstance(item, (dict, list)):
            yield pointer, item


def _columns(objects: list[tuple[Event, dict[str, Any]]]) -> dict[str, list[tuple[Event, Any]]]:
    """Per JSON pointer, the (event, value) pairs in stream order."""
    out: dict[str, list[tuple[Event, Any]]] = {}
    for event, obj in objects:
        for pointer, value in _leaves(obj):
            out.setdefault(pointer, []).append((event, value))
    return out


def _name(pointer: str) -> str:
    return pointer.rsplit("/", 1)[-1].lower()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _words(text: str) -> set[str]:
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    return {w.lower() for w in re.split(r"[^A-Za-z]+", text) if w}


def _looks_terminal(text: str) -> bool:
    return bool(_words(text) & _END_WORDS)


def sent_header(last_id: str | None) -> str:
    return f"Last-Event-ID: {last_id}" if last_id else "no Last-Event-ID (no id seen)"


def _ids(events: list[Event]) -> tuple[str, str]:
    if not events:
        return "none", "no events"
    own = [e for e in events if e.has_id and e.id]
    if not own:
        return "none", f"none of the {len(events)} events had an id"
    values = [e.id for e in own]
    if all(v.isdigit() for v in values):
        numbers = [int(v) for v in values]
        if all(b > a for a, b in zip(numbers, numbers[1:])):
            steps = "increasing by 1" if all(b == a + 1 for a, b in zip(numbers, numbers[1:])) else "increasing"
            pattern = f"decimal, {steps} ({numbers[0]}..{numbers[-1]})"
        else:
            pattern = f"decimal, not increasing ({', '.join(values[:6])}{'...' if len(values) > 6 else ''})"
    else:
        pattern = f"opaque (e.g. {values[0]!r}, {values[-1]!r})"
    if len(own) == len(events):
        return "all", f"every event had an id: {pattern}"
    missing = sorted({e.type for e in events if not (e.has_id and e.id)})
    return "some", f"{len(own)} of {len(events)} events had an id ({pattern}); none on: {', '.join(missing)}"


def _keepalive(segment: Segment) -> tuple[float, str]:
    """The comment interval: spacing between comments with no event in between (a timer and an
    idle keep-alive alike), else the silence before each comment."""
    comments = segment.comments
    silence = _longest_silence(segment)
    if not comments:
        return 0.0, f"no comments in {segment.ended_at - segment.started_at:.1f} s (longest silence {silence:.2f} s)"
    spacing, before = [], []
    previous_time, previous_comment = segment.started_at, False
    for rec in segment.records:
        at = getattr(rec, "arrived_at", None)
        if at is None:
            continue
        if isinstance(rec, Comment):
            (spacing if previous_comment else before).append(at - previous_time)
            previous_comment = True
            previous_time = at
        elif isinstance(rec, Event):
            previous_comment = False
            previous_time = at
    texts = sorted({c.text.split(" ")[0] for c in comments})
    # Comments in a row (no event between) are spaced by the interval itself; the silence before
    # a comment that follows an event is at most the interval (a timer that moves with writes
    # makes it the interval, a fixed one anything below): its largest is the estimate. Too few
    # of either and nothing is claimed: a claim too short fails the server for our guess.
    if len(spacing) >= 2:
        samples, estimate, how = spacing, statistics.median(spacing), "apart, in a row"
    elif len(before) >= 3:
        samples, estimate, how = before, max(before), "after the event before each"
    else:
        return 0.0, (f"{len(comments)} comment(s) ({', '.join(repr(t) for t in texts[:3])}): too few in a row to "
                     f"tell their interval (events kept the stream busy); watch longer with --seconds "
                     f"(longest silence {silence:.2f} s)")
    interval = round(estimate, 1) if estimate < 2 else round(estimate * 2) / 2
    return max(interval, 0.1), (f"{len(comments)} comment(s) ({', '.join(repr(t) for t in texts[:3])}), "
                                f"{min(samples):.2f}-{max(samples):.2f} s {how} (taken: {estimate:.2f} s); "
                                f"longest silence {silence:.2f} s")


def _longest_silence(segment: Segment) -> float:
    times = [segment.started_at] + [t for t, _ in segment.chunks] + [segment.ended_at]
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


_PROGRESS_HINTS = ("percent", "progress", "pct", "ratio", "fraction", "completion")


def _progress(objects) -> tuple[Pick | None, float, str]:
    candidates = []
    for pointer, pairs in _columns(objects).items():
        values = [v for _, v in pairs]
        if len(values) < 2 or not all(_number(v) for v in values):
            continue
        low, high = min(values), max(values)
        if low < 0 or high > 100 or high == low or any(b < a for a, b in zip(values, values[1:])):
            continue
        hinted = any(h in _name(pointer) for h in _PROGRESS_HINTS)
        counter = all(isinstance(v, int) for v in values) and all(b == a + 1 for a, b in zip(values, values[1:]))
        if counter and not hinted:
            continue  # a sequence number, not progress
        scale = 1.0 if high <= 1 else 100.0
        candidates.append((not hinted, -len(values), pointer, scale, values))
    if not candidates:
        return None, 100.0, "no numeric field within 0..100 or 0..1 that changed and never decreased"
    candidates.sort()
    _, _, pointer, scale, values = candidates[0]
    others = [c[2] for c in candidates[1:4]]
    note = (f"{values[0]:g} -> {values[-1]:g} ({'a fraction' if scale == 1 else 'percent'}), never decreased, "
            f"in {len(values)} of {len(objects)} JSON events" + (f"; also like it: {', '.join(others)}" if others else ""))
    return Pick("data:" + pointer, note), scale, ""


_TIME_HINTS = ("ts", "time", "timestamp", "created", "at", "date")


def _as_stamp(value: Any, arrival: float) -> tuple[str, float] | None:
    """(format, epoch seconds) when the value is a timestamp within a day of its arrival."""
    if _number(value):
        for fmt, seconds in (("epoch_s", float(value)), ("epoch_ms", float(value) / 1000)):
            if abs(seconds - arrival) < _NEAR:
                return fmt, seconds
        return None
    if isinstance(value, str) and _RFC3339.match(value):
        seconds = rfc3339_seconds(value)
        if seconds is not None and abs(seconds - arrival) < _NEAR:
            return "rfc3339", seconds
    return None


def _timestamp(segment: Segment, objects) -> tuple[Pick | None, str, str]:
    candidates = []
    for pointer, pairs in _columns(objects).items():
        stamps = [_as_stamp(v, segment.wall(e.arrived_at)) for e, v in pairs]
        if not stamps or any(s is None for s in stamps) or len({s[0] for s in stamps}) != 1:
            continue
        seconds = [s[1] for s in stamps]
        if any(b < a for a, b in zip(seconds, seconds[1:])):
            continue
        arrivals = [e.arrived_at for e, _ in pairs]
        if len(set(seconds)) == 1 and arrivals[-1] - arrivals[0] > 2:
            continue  # one time for the whole stream (a creation time): not each event's own
        lag = statistics.median(segment.wall(e.arrived_at) - s for (e, _), s in zip(pairs, seconds))
        hinted = _name(pointer) in _TIME_HINTS or any(h in _name(pointer) for h in ("time", "stamp"))
        candidates.append((not hinted, -len(pairs), pointer, stamps[0][0], lag, len(pairs)))
    if not candidates:
        return None, "epoch_ms", "no field held epoch seconds, epoch ms or an RFC 3339 time near the arrival"
    candidates.sort()
    _, _, pointer, fmt, lag, count = candidates[0]
    words = {"epoch_s": "epoch seconds", "epoch_ms": "epoch milliseconds", "rfc3339": "RFC 3339"}[fmt]
    return (Pick("data:" + pointer, f"{words} in {count} of {len(objects)} JSON events, never going back; events "
                 f"arrived {lag:.3f} s after it (median)"), fmt, "")


_JOB_HINTS = ("job", "run", "task", "session", "request", "stream", "conversation", "thread")


def _job_id(objects, url: str) -> tuple[Pick | None, str, bool]:
    """The job id's place, or why none; and whether the stream's path holds it."""
    if len(objects) < 2:
        return None, "fewer than two JSON events", False
    segments = set(urlsplit(url).path.split("/")) - {""}
    candidates = []
    for pointer, pairs in _columns(objects).items():
        values = {v for _, v in pairs}
        if len(pairs) != len(objects) or len(values) != 1:
            continue
        value = next(iter(values))
        if not isinstance(value, str) or not value or re.search(r"\s", value):
            continue
        name = _name(pointer)
        if value in segments:
            rank = -1  # the stream's own path names it: the strongest sign of a job's id
        elif len(value) < 4:
            continue
        elif name.endswith("id"):
            rank = 0 if any(h in name for h in _JOB_HINTS) else 1
        elif re.search(r"\d", value) and len(value) >= 8:
            rank = 2
        else:
            continue
        candidates.append((rank, pointer, value))
    if not candidates:
        return None, "no string field with an id's look was the same in every JSON event", False
    candidates.sort()
    _, pointer, value = candidates[0]
    note = f"{value!r} in all {len(objects)} JSON events"
    per_job = value in segments
    if per_job:
        note += "; the stream's path holds it: a stream per job (see [stream])"
    others = [c[1] for c in candidates[1:3]]
    return Pick("data:" + pointer, note + (f"; also constant: {', '.join(others)}" if others else "")), "", per_job


def _same(a: Event, b: Event) -> bool:
    """The same event, by its id when it has one, else by type and data."""
    if a.has_id and b.has_id and a.id and b.id:
        return a.id == b.id
    return a.type == b.type and a.data == b.data


def _reconnect(first: Segment, again: Segment, paused: float) -> Reconnect:
    sent = again.last_event_id_sent
    if again.end == End.CONNECT_FAILED:
        return Reconnect(sent, "unreachable", f"could not connect: {again.end_detail}")
    if again.status == 204:
        return Reconnect(sent, "204", "HTTP 204 (nothing more)")
    if again.status != 200:
        return Reconnect(sent, "status", f"HTTP {again.status}")
    old, new = first.events, again.events
    if not new:
        how = "closed it" if again.end == End.SERVER_CLOSED else f"held it open ({again.end_detail})"
        return Reconnect(sent, "nothing", f"HTTP 200 and no event: the server {how}")
    if old and _same(new[0], old[0]):
        return Reconnect(sent, "from-start", f"the same stream again from the start ({_describe(new[0])} first)")
    repeated = next((i for i, e in enumerate(old) if _same(new[0], e)), None)
    if repeated is not None:
        return Reconnect(sent, "repeat", f"events already seen again, from the {repeated + 1}th ({_describe(new[0])})")
    if sent and sent.isdigit() and new[0].has_id and new[0].id.isdigit():
        consecutive = _consecutive(old)
        step = int(new[0].id) - int(sent)
        if consecutive and step == 1:
            return Reconnect(sent, "continued", f"resumed right after it at id {new[0].id} after a {paused:.1f} s "
                                                f"pause, no gap")
        if consecutive and step > 1:
            return Reconnect(sent, "newer", f"only newer events, from id {new[0].id}: ids {int(sent) + 1}.."
                                            f"{int(new[0].id) - 1} were not replayed")
    return Reconnect(sent, "newer", f"events not seen before ({_describe(new[0])} first)")


def _consecutive(events: list[Event]) -> bool:
    ids = [e.id for e in events if e.has_id]
    return (len(ids) >= 2 and all(i.isdigit() for i in ids)
            and all(int(b) == int(a) + 1 for a, b in zip(ids, ids[1:])))


def _describe(event: Event) -> str:
    return f"id {event.id} `{event.type}`" if event.has_id else f"`{event.type}` {event.data[:40]!r}"


def _resume(first: Segment, resume: Segment) -> Reconnect:
    sent = resume.last_event_id_sent
    if resume.status != 200:
        return Reconnect(sent, "204" if resume.status == 204 else "status",
                         f"HTTP {resume.status}" if resume.status else f"no answer: {resume.end_detail}")
    old = first.events
    after = next((i + 1 for i, e in enumerate(old) if e.id == sent), len(old))
    expected, got = old[after:], resume.events
    same = [(e.id, e.type, e.data) for e in expected] == [(e.id, e.type, e.data) for e in got[:len(expected)]]
    if expected and same:
        return Reconnect(sent, "continued", f"the {len(expected)} events after it, as the first time")
    if got and old and _same(got[0], old[0]):
        return Reconnect(sent, "from-start", "the same stream again from the start")
    if not got:
        return Reconnect(sent, "nothing", "HTTP 200 and no event")
    return Reconnect(sent, "newer", f"{len(got)} events, not the {len(expected)} after it "
                                    f"({_describe(got[0])} first)")


def _end(first: Segment, objects, again: Reconnect | None) -> dict[str, Any]:
    none: dict[str, Any] = {"types": (), "data": "", "field": "", "values": (), "ends": False}
    events = first.events
    seconds = first.ended_at - first.started_at
    if first.end != End.SERVER_CLOSED:
        why = {End.TIMEOUT: f"still open after {seconds:.1f} s; the probe closed it",
               End.CLIENT_CLOSED: f"still open after {seconds:.1f} s; the probe closed it",
               End.RESET: f"the connection broke: {first.end_detail}"}.get(first.end, f"{first.end}: {first.end_detail}")
        last = events[-1] if events else None
        if last is not None and (_looks_terminal(last.type) or _SENTINEL.match(last.data.strip())):
            why += (f"; its last event (`{last.type}` {last.data[:30]!r}) looks like an end, but the server kept the "
                    f"stream open {first.ended_at - last.arrived_at:.1f} s after it")
        return {**none, "note": why}
    if not events:
        return {**none, "note": f"the server closed the response after {seconds:.1f} s without an event"}
    last = events[-1]
    after = f"the server closed the response {first.ended_at - last.arrived_at:.2f} s after the last event"
    data = last.data.strip()
    if _SENTINEL.match(data) and sum(1 for e in events if e.data.strip() == data) == 1:
        return {**none, "data": data, "ends": True, "note": f"{after}, data {data}"}
    if _looks_terminal(last.type) and sum(1 for e in events if e.type == last.type) == 1:
        return {**none, "types": (last.type,), "ends": True, "note": f"{after}, of type `{last.type}`"}
    obj = parse_data(last)
    if obj is not None:
        earlier = _columns([(e, o) for e, o in objects if e is not last])
        for pointer, value in _leaves(obj):
            if (isinstance(value, str) and _looks_terminal(value)
                    and value not in {v for _, v in earlier.get(pointer, [])}):
                return {**none, "field": "data:" + pointer, "values": (value,), "ends": True,
                        "note": f"{after}, whose {pointer} was {value!r} (never before)"}
    if again is not None and again.got == "204" and last.type != "message" and _once(events, last.type):
        return {**none, "types": (last.type,), "ends": True,
                "note": f"{after}, of type `{last.type}` (not a name that looks like an end, but the reconnect got 204)"}
    return {**none, "note": f"{after} (`{last.type}` {last.data[:30]!r}), which does not look like an end"}


def _once(events: list[Event], type_: str) -> bool:
    return sum(1 for e in events if e.type == type_) == 1


def _replay(ids: str, again: Reconnect | None, resumed: Reconnect | None) -> tuple[bool, str]:
    if ids != "all":
        return False, "not every event had an id"
    for reconnect in (resumed, again):
        if reconnect is not None and reconnect.got == "continued":
            return True, f"a reconnect with {sent_header(reconnect.sent_id)} got {reconnect.note}"
    shown = [f"with {sent_header(r.sent_id)}: {r.note}" for r in (again, resumed) if r is not None]
    return False, ("no reconnect continued after its Last-Event-ID (" + "; ".join(shown) + ")" if shown
                   else "no reconnect was made")
