"""A job's stream recorded in the background while a case acts on the job, every wait bounded."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Callable

import trio

from ._client import End, Segment
from ._decoder import Event
from ._errors import TargetFault
from ._outcomes import Severity
from ._tasks import background_nursery
from ._timing import PATIENCE, describe_arrivals, stopped_delivering, timing_severity

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["LiveStream"]


class LiveStream:
    """One connection to a job's stream, recorded in the background while the case acts.

    Every wait on the target goes through ``wait_for`` with a deadline taken from the
    contract or the profile; past it the wait ends in a TargetFault that names what was
    awaited, for how long, and what arrived instead.
    """

    def __init__(self, ctx: "Context", job_id: str, kwargs: dict[str, Any]) -> None:
        self.ctx, self.job_id, self._kwargs = ctx, job_id, kwargs
        self._user_sink = kwargs.pop("sink", None)
        self.records: list = []
        self.segment: Segment | None = None
        self._changed = trio.Event()
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)]

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _sink(self, record_: Any) -> None:
        self.records.append(record_)
        if self._user_sink is not None:
            await self._user_sink(record_)
        self._wake()

    async def _run(self) -> None:
        self.segment = await self.ctx.watch(self.job_id, sink=self._sink, **self._kwargs)
        self._wake()

    async def __aenter__(self) -> "LiveStream":
        async with contextlib.AsyncExitStack() as stack:
            # The recording serves the block and ends with it; the block's own exception
            # (a TargetFault from wait_for, say) leaves as itself.
            nursery = await stack.enter_async_context(background_nursery())
            nursery.start_soon(self._run)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._stack.__aexit__(*exc)

    async def wait_for(self, predicate: Callable[[Event], bool], *, within: float, awaited: str,
                       basis: str, owed_within: float | None = None) -> Event:
        """The first event (recorded already or still to come) for which ``predicate`` holds.
        ``owed_within``: what the contract owes (say, the cancel deadline) when ``within`` adds
        a margin to it: a wait past ``within`` that the machine's starvation explains down to
        ``owed_within`` is confounded, not the target's fail."""
        deadline = trio.current_time() + within
        started_at, seen, waited_since = len(self.records), 0, time.monotonic()
        while True:
            for record_ in self.records[seen:]:
                if isinstance(record_, Event) and predicate(record_):
                    return record_
            seen = len(self.records)
            if self.segment is not None:
                severity, figures = (stopped_delivering(self.segment, self.ctx.starved(), self.ctx.owed_every)
                                     if self.segment.end in (End.NO_EVENTS, End.TIMEOUT) else (Severity.FAIL, ""))
                raise TargetFault(f"the stream ended before {awaited}", awaited,
                                  f"{self.segment.end}: {self.segment.end_detail}; "
                                  f"{describe_arrivals(self.records)}" + (f"; {figures}" if figures else ""), severity)
            changed = self._changed
            with trio.move_on_at(deadline):
                await changed.wait()
                continue
            explained = self.ctx.starved().explained(waited_since, time.monotonic())
            if owed_within is not None:
                severity = timing_severity(within, owed_within, explained)
            else:
                # A wait bounded only by the job time limit (a stage to come): nobody knows how
                # long the target needed; the machine taking a quarter of it is reason enough
                # not to blame the target (as at a recording's total time limit).
                severity = Severity.CONFOUNDED if explained.total >= PATIENCE * explained.window else Severity.FAIL
            figures = f"; {explained.describe()}"
            raise TargetFault(f"waited {within:.1f}s for {awaited} ({basis}); it did not come", awaited,
                              f"meanwhile: {describe_arrivals(self.records[started_at:])}; the stream is still open"
                              + figures, severity)

    async def wait_for_end_after_cancel(self, awaited: str) -> Event:
        """After a cancel's 202: a terminal event is owed within the cancel wait."""
        ctx = self.ctx
        return await self.wait_for(lambda e: e.type in ctx.profile.terminal_events, within=ctx.cancel_wait,
                                   awaited=awaited, basis=f"cancel deadline {ctx.cancel_deadline * 1000:.0f} ms, "
                                                          f"waited {ctx.cancel_wait:.1f}s",
                                   owed_within=ctx.cancel_limit)

    async def finish(self) -> Segment:
        """The recording once it ends (bounded by the recorder's own limits)."""
        while self.segment is None:
            changed = self._changed
            await changed.wait()
        return self.segment
