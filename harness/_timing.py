"""Timing verdicts: a breach of a deadline or cadence is the target's fail, or confounded when the
machine's measured starvation explains it; and what a stream brought before it went quiet."""

from __future__ import annotations

from ._client import End, Segment
from ._decoder import Event
from ._outcomes import Finding, Severity
from ._starvation import Explained, Starvation

__all__ = ["PATIENCE", "describe_arrivals", "overdue", "stopped_delivering", "timing_severity"]


def describe_arrivals(records: list) -> str:
    """What a stream brought in a window, for a finding: events by type, comments."""
    events = [r for r in records if isinstance(r, Event)]
    comments = sum(1 for r in records if type(r).__name__ == "Comment")
    if not events:
        return f"no event, {comments} comment(s)"
    tail = ", ".join(f"{e.id}:{e.type}" for e in events[-3:])
    return f"{len(events)} event(s) (last: {tail}), {comments} comment(s)"


def timing_severity(measured: float, limit: float, explained: Explained | None) -> Severity:
    """A timing past its limit: the target's fail, or confounded when the machine's measured
    starvation in the window (``explained``) is enough to explain the excess."""
    if explained is not None and measured - explained.total <= limit:
        return Severity.CONFOUNDED
    return Severity.FAIL


# At a deadline that no cadence of the contract sets (the job time limit), the share of the
# window the machine's starvation must explain for the target not to be blamed.
PATIENCE = 0.25


def stopped_delivering(segment: Segment, starvation: Starvation | None, owed_every: float,
                       patience: float = PATIENCE) -> tuple[Severity, str]:
    """Whose doing a recording's deadline end was (no event within the events deadline, no bytes
    within the read timeout, or the total time limit while events still came), with the
    starvation beside it. A target that owes an event every ``owed_every`` and was silent for S
    seconds while it waited W for a core would have been silent S - W on a quiet machine: past
    ``owed_every`` that is its fail, within it the machine's (confounded). At the total time
    limit the target was still delivering and nobody knows how much longer it needed: confounded
    when the machine took at least ``patience`` of the window."""
    if starvation is None:
        return Severity.FAIL, ""
    if segment.end == End.TIMEOUT and "total time limit" in segment.end_detail:
        explained = starvation.explained(segment.started_at, segment.ended_at)
        severity = Severity.CONFOUNDED if explained.total >= patience * explained.window else Severity.FAIL
        return severity, explained.describe()
    times = [segment.started_at] + [e.arrived_at for e in segment.events]
    if segment.end == End.TIMEOUT:  # no bytes at all for the read timeout
        times += [t for t, _ in segment.chunks]
    began = max(times)
    explained = starvation.explained(began, segment.ended_at)
    return timing_severity(segment.ended_at - began, owed_every, explained), explained.describe()


def overdue(segment: Segment, awaited: str, *, starvation: Starvation | None = None,
            owed_every: float = 0.0) -> list[Finding]:
    """A finding when a recording ended because the target stopped delivering what it owed
    (no event within the events deadline, or no bytes within the read timeout), confounded
    when the machine's starvation explains the silence (``stopped_delivering``)."""
    if segment.end not in (End.NO_EVENTS, End.TIMEOUT):
        return []
    severity, figures = stopped_delivering(segment, starvation, owed_every)
    return [Finding(f"waited for {awaited}; the target stopped delivering", awaited,
                    f"{segment.end_detail}; {describe_arrivals(list(segment.records))}"
                    + (f"; {figures}" if figures else ""), None, severity)]
