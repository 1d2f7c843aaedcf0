"""Before a stream profile's run: its [meaning] and [claims] checked against the first events the
stream brings, so that a pointer that matches nothing, or a claim the stream plainly does not
make, is the user's error naming the key (exit 2), not a run of wrong verdicts."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ._decoder import Event
from ._profile import Profile, ProfileError
from ._stream_profile import pointer_get

__all__ = ["PREFLIGHT_EVENTS", "check_profile_against", "raise_for"]

PREFLIGHT_EVENTS = 20  # the first events a profile is checked against


def check_profile_against(profile: Profile, events: Sequence[Event]) -> list[str]:
    """What the first ``events`` of the stream say against the profile (pure): each problem
    names its key. Nothing can be said without events (a quiet channel): no problem then."""
    if not events:
        return []
    events = list(events)[:PREFLIGHT_EVENTS]
    meaning, problems = profile.meaning, []
    seen = f"the first {len(events)} event(s) (types {', '.join(sorted({e.type for e in events}))})"
    for field in dataclasses.fields(meaning):
        where = getattr(meaning, field.name)
        if field.name not in ("job_id", "progress", "stage", "timestamp", "end_field") or not where:
            continue
        if meaning.is_end(events[-1]) and len(events) == 1:
            break  # one event, the end: too little to say
        if not any(pointer_get(e, where) is not None for e in events):
            problems.append(f"[meaning].{field.name} = {where!r} matches nothing in {seen}")
        elif field.name == "timestamp" and not any(meaning.timestamp_ms(e) is not None for e in events):
            problems.append(f"[meaning].timestamp = {where!r} holds no {meaning.timestamp_format} time in {seen}")
    if profile.claims.has("ids") and not any(e.has_id for e in events):
        problems.append(f"[claims].ids = true, but none of {seen} has an id")
    return problems


def raise_for(profile: Profile, events: Sequence[Event]) -> None:
    problems = check_profile_against(profile, events)
    if problems:
        raise ProfileError("the profile does not fit the stream: " + "; ".join(problems))
