"""The stream invariants judged event by event: pure, no I/O, cheap enough for every event under load.

One copy of the rules for ids, progress, stages, job ownership, ts and the terminal event:
``harness.checks`` runs these over a recorded trace, the locust user (``harness.load``)
feeds them live events. Each broken rule is a :class:`Breach` whose ``kind`` names the
invariant in a few words (the name a load failure is reported under) and whose ``message``,
``expected`` and ``observed`` are what a finding says.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ._decoder import Event

if TYPE_CHECKING:
    from ._profile import Profile

__all__ = [
    "KINDS", "AnyStreamJudge", "Breach", "Excused", "IdOrder", "JobAndTs", "ProgressOrder", "StreamIds", "StreamJudge",
    "TerminalWatch", "blocked_during", "judge_timing", "silence_breach",
]

# The short names of broken invariants; load failures are reported under these.
ID_NOT_DECIMAL = "id not decimal"
ID_GAP = "id gap"
ID_REPEAT = "id repeat"
UNKNOWN_STAGE = "unknown stage"
STAGE_BACKWARDS = "stage backwards"
PERCENT_RANGE = "percent out of range"
PERCENT_REGRESS = "percent regress"
PERCENT_STAGE_RANGE = "percent outside stage range"
STAGE_PERCENT_RANGE = "stage percent out of range"
STAGE_PERCENT_REGRESS = "stage percent regress"
OTHER_JOB = "other job's event"
TS_BACKWARDS = "ts backwards"
AFTER_TERMINAL = "event after terminal"
NOT_CLOSED = "not closed after terminal"
NO_TERMINAL = "no terminal event"
SILENCE = "keep-alive silence"
KINDS = (ID_NOT_DECIMAL, ID_GAP, ID_REPEAT, UNKNOWN_STAGE, STAGE_BACKWARDS, PERCENT_RANGE, PERCENT_REGRESS,
         PERCENT_STAGE_RANGE, STAGE_PERCENT_RANGE, STAGE_PERCENT_REGRESS, OTHER_JOB, TS_BACKWARDS, AFTER_TERMINAL,
         NOT_CLOSED, NO_TERMINAL, SILENCE)

_NONE: tuple = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Breach:
    kind: str  # one of KINDS
    message: str
    expected: Any = None
    observed: Any = None
    event_id: str | None = None


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (JSON's true is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class IdOrder:
    """Invariant 1: decimal ids first, first+1, ... with no gap or repeat (across reconnects,
    when one instance sees every connection of a subscriber)."""

    __slots__ = ("expected",)

    def __init__(self, first: int = 1) -> None:
        self.expected = first

    def see(self, event: Event) -> Breach | None:
        event_id = event.id
        if not event.has_id or not event_id.isdigit():
            return Breach(ID_NOT_DECIMAL, "event without a decimal id", "id: <n>", event_id if event.has_id else None,
                          event_id)
        number = int(event_id)
        expected = self.expected
        self.expected = number + 1
        if number == expected:
            return None
        if number < expected:
            return Breach(ID_REPEAT, "id repeated: sequence broken", expected, number, event_id)
        return Breach(ID_GAP, "id skipped: sequence broken", expected, number, event_id)


class ProgressOrder:
    """Invariant 2: percent in [0, 100], never decreasing and inside its stage's range; stages
    go forward; stagePercent in [0, 100] and never decreasing within a stage."""

    __slots__ = ("_order", "_stages", "_ranges", "_cancelled", "_progress", "last_percent", "_last_stage_index",
                 "_stage_percent")

    def __init__(self, profile: Profile) -> None:
        self._stages = profile.stages
        self._order = {stage: i for i, stage in enumerate(profile.stages)}
        self._ranges = profile.ranges
        self._cancelled = profile.events["cancelled"]
        self._progress = profile.events["progress"]
        self.last_percent = -1.0
        self._last_stage_index = -1
        self._stage_percent: dict[str, float] = {}

    def see(self, event: Event, data: dict) -> Sequence[Breach]:
        out: list[Breach] | tuple = _NONE
        stage = data.get("stage")
        percent = data.get("percent")
        if stage is not None:
            index = self._order.get(stage) if isinstance(stage, str) else None
            if index is None:
                out = [Breach(UNKNOWN_STAGE, "unknown stage", list(self._stages), stage, event.id)]
            elif index < self._last_stage_index:
                out = [Breach(STAGE_BACKWARDS, "stage went backwards",
                              f"{self._stages[self._last_stage_index]} or later", stage, event.id)]
            else:
                self._last_stage_index = index
        if percent is not None:
            if not is_number(percent) or not 0 <= percent <= 100:
                return [*out, Breach(PERCENT_RANGE, "percent out of [0, 100]", "0..100", percent, event.id)]
            if percent < self.last_percent:
                out = [*out, Breach(PERCENT_REGRESS, "percent decreased", f">= {self.last_percent}", percent, event.id)]
            else:
                self.last_percent = percent
            if stage in self._ranges and event.type != self._cancelled:
                low, high = self._ranges[stage]
                if not low <= percent <= high:
                    out = [*out, Breach(PERCENT_STAGE_RANGE, f"percent outside the {stage} range", [low, high],
                                        percent, event.id)]
        if stage is not None and event.type == self._progress:
            value = data.get("stagePercent")
            if not is_number(value) or not 0 <= value <= 100:
                out = [*out, Breach(STAGE_PERCENT_RANGE, "stagePercent out of [0, 100]", "0..100", value, event.id)]
            elif value < self._stage_percent.get(stage, -1):
                out = [*out, Breach(STAGE_PERCENT_REGRESS, f"stagePercent decreased within {stage}",
                                    f">= {self._stage_percent[stage]}", value, event.id)]
            else:
                self._stage_percent[stage] = value
        return out


class JobAndTs:
    """Invariant 4: every event is this job's (``job_id`` None: the first event's job), and
    ts never decreases."""

    __slots__ = ("job_id", "last_ts")

    def __init__(self, job_id: str | None) -> None:
        self.job_id = job_id
        self.last_ts: float | None = None

    def see(self, event: Event, data: dict) -> Sequence[Breach]:
        out: list[Breach] | tuple = _NONE
        job = data.get("jobId")
        if self.job_id is None and isinstance(job, str):
            self.job_id = job
        if job != self.job_id:
            out = [Breach(OTHER_JOB, "event of another job in this stream", self.job_id, job, event.id)]
        ts = data.get("ts")
        if is_number(ts):
            last = self.last_ts
            if last is None or ts >= last:
                self.last_ts = ts
            else:
                out = [*out, Breach(TS_BACKWARDS, "ts decreased", f">= {last}", ts, event.id)]
        return out


class TerminalWatch:
    """Invariant 3: one terminal event, the last, and the response ends soon after it.

    ``see`` reports the first event after the terminal one as it comes; ``end`` judges how
    the response ended. ``terminals`` (up to 20) and ``after`` (the first 5 events after the
    terminal one) are kept for a finding that lists them.
    """

    __slots__ = ("_terminal_types", "_is_end", "terminal", "terminals", "after", "after_count", "_last_types")

    def __init__(self, terminal_types: Iterable[str], is_end: Callable[[Event], bool] | None = None) -> None:
        """``terminal_types`` end the stream, or ``is_end`` says which event does (a stream
        profile's meaning; the types then only name the end in a finding)."""
        self._terminal_types = frozenset(terminal_types)
        self._is_end = is_end
        self.terminal: Event | None = None
        self.terminals: list[Event] = []
        self.after: list[Event] = []
        self.after_count = 0
        self._last_types: collections.deque[str] = collections.deque(maxlen=3)

    def see(self, event: Event) -> Breach | None:
        self._last_types.append(event.type)
        is_terminal = self._is_end(event) if self._is_end is not None else event.type in self._terminal_types
        if self.terminal is None:
            if is_terminal:
                self.terminal = event
                self.terminals.append(event)
            return None
        if is_terminal and len(self.terminals) < 20:
            self.terminals.append(event)
        self.after_count += 1
        if len(self.after) < 5:
            self.after.append(event)
        if self.after_count == 1:
            return Breach(AFTER_TERMINAL, "events after the terminal event", "none", [f"{event.id}:{event.type}"],
                          event.id)
        return None

    def end(self, *, server_closed: bool, ended_at: float, close_within: float, how: str = "") -> list[Breach]:
        """How the response ended: by the server (at ``ended_at``, on the events' clock) or not
        (``how`` says what happened instead)."""
        terminal = self.terminal
        if terminal is None:
            return [Breach(NO_TERMINAL, "no terminal event", sorted(self._terminal_types), list(self._last_types))]
        if not server_closed:
            return [Breach(NOT_CLOSED, "the server did not end the response after the terminal event",
                           f"closed within {close_within}s", how)]
        waited = ended_at - terminal.arrived_at
        if waited > close_within:
            return [Breach(NOT_CLOSED, "response ended too late after the terminal event", f"<= {close_within}s",
                           f"{waited:.3f}s", terminal.id)]
        return []


def blocked_during(lag_samples: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """The observer's own longest stall overlapping [start, end]: a sample (t, lag) says its
    event loop was blocked from t - lag to t, so what arrived then was read that much late."""
    return max((lag for t, lag in lag_samples if t >= start and t - lag <= end), default=0.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Excused:
    """A timing over its limit by no more than the machine's measured starvation in its window
    may have added (the observer's own stalls, a same-host target's wait for a core): not a
    measurement of the target. The conformance cases call it confounded and try again; the load
    tool counts it apart from the target's breaches."""

    kind: str  # one of KINDS, or what was timed ("cancel")
    measured: float  # seconds
    limit: float
    explained: float  # seconds the starvation may have added


def judge_timing(kind: str, message: str, *, measured: float, limit: float, explained: float = 0.0,
                 starvation: str = "", expected: Any = None, observed: str = "",
                 event_id: str | None = None) -> Breach | Excused | None:
    """A timing against its limit, net of what the machine's starvation in the measured window
    may have added (``explained`` seconds, ``starvation`` says what it was): None within the
    limit; :class:`Excused` when the excess is within ``explained``; else the target's
    :class:`Breach`, with the starvation figure beside the observation."""
    if measured <= limit:
        return None
    if measured - explained <= limit:
        return Excused(kind, measured, limit, explained)
    if starvation:
        observed = f"{observed}; {starvation}: not enough to explain it"
    elif explained:
        observed = f"{observed} ({explained:.2f}s of it our own delay)"
    return Breach(kind, message, f"<= {limit:.2f}s" if expected is None else expected, observed, event_id)


def silence_breach(silence: float, began: float, *, interval: float, tolerance: float, own: float = 0.0,
                   since_start: float | None = None, starvation: str = "") -> Breach | Excused | None:
    """Invariant 5: a silence on the open stream longer than interval + tolerance, net of the
    delay ``own`` the machine may have added to it (the observer's own stalls, and a same-host
    target's wait for a core, which ``starvation`` describes)."""
    where = f" starting {since_start:.2f}s into the stream" if since_start is not None else ""
    return judge_timing(SILENCE, "silence longer than the keep-alive interval", measured=silence,
                        limit=interval + tolerance, explained=own, starvation=starvation,
                        observed=f"{silence:.2f}s{where}")


class StreamJudge:
    """Every per-event invariant of one subscriber's view of one job, across its connections:
    ids, progress and stages, job and ts, the terminal event."""

    __slots__ = ("ids", "progress", "job", "terminal", "_repeating")

    def __init__(self, profile: Profile, job_id: str | None, *, first_id: int = 1) -> None:
        self.ids = IdOrder(first_id)
        self.progress = ProgressOrder(profile)
        self.job = JobAndTs(job_id)
        self.terminal = TerminalWatch(profile.terminal_events)
        self._repeating = False

    def see(self, event: Event, data: dict) -> list[Breach]:
        """``data`` is the event's data as a JSON object (a caller that cannot parse it says so
        itself); returns what this event broke, usually nothing."""
        job = self.job
        job_id = data.get("jobId")
        if job_id != job.job_id and job.job_id is not None:
            # Another job's event says nothing about this job's order: judged as what it is only.
            return [Breach(OTHER_JOB, "event of another job in this stream", job.job_id, job_id, event.id)]
        ids = self.ids
        event_id = event.id
        if event.has_id and event_id.isdigit() and int(event_id) < ids.expected:
            # An event this subscriber already has (a replay gone wrong): one breach per run of
            # them, and they are not judged again for progress, ts or the terminal event.
            if self._repeating:
                return []
            self._repeating = True
            return [Breach(ID_REPEAT, "id repeated: sequence broken", ids.expected, int(event_id), event_id)]
        self._repeating = False
        out: list[Breach] = []
        breach = ids.see(event)
        if breach is not None:
            out.append(breach)
        found = self.progress.see(event, data)
        if found:
            out.extend(found)
        found = self.job.see(event, data)
        if found:
            out.extend(found)
        breach = self.terminal.see(event)
        if breach is not None:
            out.append(breach)
        return out


class StreamIds:
    """Ids on any stream whose profile claims them (one instance per reader, across its
    connections, so that a resume with Last-Event-ID is judged too): an id is never carried
    twice, decimal ids increase, and once the reader's first ids have counted up by one (as
    ``harness.checks.check_continuity`` decides it), a jump is a gap. Events without an id
    line of their own are not judged; non-decimal ids only for repeats among the recent ones."""

    __slots__ = ("last", "counting", "_steps", "_recent", "_order", "_repeating")

    COUNTING_AFTER = 2  # steps of one (three ids) before a jump counts as a gap
    RECENT = 1000  # non-decimal ids remembered for repeats

    def __init__(self) -> None:
        self.last: int | None = None
        self.counting: bool | None = None  # None: not yet known
        self._steps = 0
        self._recent: set[str] = set()
        self._order: collections.deque[str] = collections.deque()
        self._repeating = False

    def see(self, event: Event) -> Breach | None:
        if not event.has_id or not event.id:
            return None
        event_id = event.id
        if not event_id.isdigit():
            if event_id in self._recent:
                return Breach(ID_REPEAT, "id repeated", "each id once", event_id, event_id)
            self._recent.add(event_id)
            self._order.append(event_id)
            if len(self._order) > self.RECENT:
                self._recent.discard(self._order.popleft())
            return None
        number, last = int(event_id), self.last
        if last is not None and number <= last:
            # Already had (a replay gone wrong): one breach per run of them.
            if self._repeating:
                return None
            self._repeating = True
            return Breach(ID_REPEAT, "id repeated or went backwards: sequence broken", f"> {last}", number, event_id)
        self._repeating = False
        self.last = number
        if last is None:
            return None
        if self.counting is None:
            if number == last + 1:
                self._steps += 1
                if self._steps >= self.COUNTING_AFTER:
                    self.counting = True
            else:
                self.counting = False  # sparse ids (timestamps, say): a jump is not a gap
            return None
        if self.counting and number != last + 1:
            return Breach(ID_GAP, "id skipped: the stream counts up by one", last + 1, number, event_id)
        return None


class AnyStreamJudge:
    """The per-event invariants of one reader's view of a stream profile's stream, across its
    connections: ids when the profile claims them, and the end as the profile's meaning says it
    (``meaning.is_end``): one end, the last event, and the response closed soon after it."""

    __slots__ = ("ids", "terminal")

    def __init__(self, profile: Profile) -> None:
        self.ids = StreamIds() if profile.claims.has("ids") else None
        meaning = profile.meaning
        self.terminal = TerminalWatch(meaning.end_names, meaning.is_end) if meaning.ends else None

    def see(self, event: Event) -> list[Breach]:
        out: list[Breach] = []
        if self.ids is not None:
            breach = self.ids.see(event)
            if breach is not None:
                out.append(breach)
        if self.terminal is not None:
            breach = self.terminal.see(event)
            if breach is not None:
                out.append(breach)
        return out
