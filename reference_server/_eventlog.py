"""A job's event log: append-only, each event encoded once, replay and live fan-out by cursor."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable

import trio


def encode_event(event_id: int, event_type: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\nevent: {event_type}\ndata: {payload}\n\n".encode()


# A fan-out to at most this many listeners is done in ``append`` itself (25-30 us each, so up to
# about 8 ms): a subscriber gets the event with no pass of the scheduler in between. A larger one
# is the Fanout task's, which works through it under a time budget. Why not lower: an event's ts is
# stamped at append, so with jobs ticking in step (the benchmark's 20 at once) a fan-out in the
# Fanout's queue shows its wait as lateness, where in append it delays the next job's tick instead;
# with 64 here, 4,000 streams over 20 jobs read p50 88 ms and p99 268 ms against 4-5 and 15 ms
# (docs/reference-server.md). Past 256, one fan-out in append holds every request for its length.
INLINE_LISTENERS = 256
# The Fanout task's work between two checkpoints (seconds). Every other runnable task (a request,
# a cancel, a new stream) runs between two slices, so this bounds what each pass of the scheduler
# adds to a request, however many subscribers there are.
FANOUT_BUDGET = 0.002
# Events offered joined to a listener in one write, at most this many bytes (a subscriber's write bound).
MAX_JOINED = 64 * 1024

# Called with (log, event id, type, encoded bytes) when an event is appended, before anyone can see
# it: the durable store writes it to disk there (a client never sees an event a crash could take back).
Sink = Callable[["EventLog", int, str, bytes], None]


class Fanout:
    """Offers published events to the listeners of every log with many of them, in one task.

    One task for all logs, round robin by log, under a time budget per pass of the scheduler:
    with thousands of subscribers the loop still answers requests and cancels within a few
    passes, and past saturation every job's subscribers fall behind alike, never some jobs' or
    some subscribers' more than others'. A log that gets more events while waiting for its turn
    has them all offered at its turn, joined (up to MAX_JOINED bytes) into one write per
    listener: the further behind the server is, the more each write carries, so lateness stays
    bounded by one round instead of growing without end.
    """

    def __init__(self, budget: float = FANOUT_BUDGET) -> None:
        self.budget = budget
        self._due: dict[EventLog, None] = {}  # logs with events not yet offered, in turn order
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._slice_ends = 0.0

    def due(self, log: EventLog) -> None:
        """``log`` has events past ``log.offered``; offer them at its turn."""
        self._due[log] = None
        self._wake.set()

    async def flushed(self) -> None:
        """Return once every published event has been offered."""
        while self._due or not self._idle.is_set():
            await self._idle.wait()
            await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._idle = trio.Event()
            try:
                self._slice_ends = time.perf_counter() + self.budget
                while self._due:
                    log = next(iter(self._due))
                    del self._due[log]  # events appended from here on bring it back, at the end
                    await self._offer(log)
            finally:
                self._idle.set()

    async def _offer(self, log: EventLog) -> None:
        """Offer ``log``'s events from ``log.offered`` to its end now, to its listeners now.

        Only this task offers past ``offered`` while ``log.fanning``, and it finishes one run of
        events before the next, so a listener's "is this my next event" test holds across the
        checkpoints. A listener that left meanwhile is skipped (its task writes from its cursor:
        an offer would write twice); one that came back meanwhile already has what it is offered.
        """
        first, last = log.offered, len(log.encoded)
        if first >= last:
            return
        log.offered = last
        listeners = list(log._listeners)
        log.fanning = True
        try:
            start = first
            while start < last:
                end, size = start, 0
                while end < last and (end == start or size + len(log.encoded[end]) <= MAX_JOINED):
                    size += len(log.encoded[end])
                    end += 1
                joined = log.encoded[start] if end == start + 1 else b"".join(log.encoded[start:end])
                for index, listener in enumerate(listeners):
                    if index & 15 == 15 and time.perf_counter() >= self._slice_ends:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        self._slice_ends = time.perf_counter() + self.budget
                    if listener not in log._listeners:
                        continue
                    many = getattr(getattr(listener, "__self__", None), "offer_many", None)
                    if many is not None:
                        many(joined, start, end - start)
                    else:
                        for encoded in log.encoded[start:end]:
                            listener(encoded)
                start = end
        finally:
            log.fanning = False


class EventLog:
    """Events of one job, ids 1, 2, 3, ...

    Subscribers hold a cursor (an index into ``encoded``), never a queue of their own: an
    event is stored once and every subscriber writes the same bytes. Replay and live
    delivery are the same loop ("write everything past my cursor, then wait for more"),
    so an event appended while a replay is being written is picked up by the next pass:
    no gap and no duplicate by construction.

    A caught-up subscriber may instead ``listen`` with a plain callable: ``append`` (or, for
    a log with many listeners, the Fanout's task) calls it with the new event's bytes, so the
    event can be written without waking the subscriber's task. A listener must not raise and
    must not block; it leaves with ``unlisten`` (also from inside the call).

    A ``sink`` (the durable store) is called with each event before it is published (put in
    ``encoded``, offered to listeners, the log closed by a terminal one): no client ever sees
    an event that a crash could take back, so after a restart ids go on from the last one
    anyone saw.

    With a ``fanout``, more than INLINE_LISTENERS listeners are offered an event by the
    Fanout's task rather than in ``append`` (see Fanout). ``offered`` counts the events
    handed to the fan-out so far.
    """

    def __init__(self, sink: Sink | None = None, history: Iterable[tuple[str, bytes]] = (),
                 closed: bool = False, fanout: Fanout | None = None) -> None:
        self.encoded: list[bytes] = []
        self.types: list[str] = []
        for event_type, encoded in history:
            self.encoded.append(encoded)
            self.types.append(event_type)
        self.size = sum(len(e) for e in self.encoded)  # bytes stored, for the size bound
        self.closed = closed  # the terminal event is in (published)
        self.offered = len(self.encoded)  # events handed to listeners (history: to nobody)
        self.fanning = False  # the Fanout's task is part way through offering this log's events
        self._sink = sink
        self._fanout = fanout
        self._changed = trio.Event()
        self._listeners: dict[Callable[[bytes], None], None] = {}  # insertion-ordered set

    @property
    def last_id(self) -> int:
        """The last published id (what a client can have seen)."""
        return len(self.encoded)

    def append(self, event_type: str, data: dict[str, Any], *, terminal: bool = False) -> int:
        if self.closed:
            raise RuntimeError("event after the terminal event")
        data.setdefault("ts", int(time.time() * 1000))
        event_id = len(self.encoded) + 1
        encoded = encode_event(event_id, event_type, data)
        self.size += len(encoded)
        if self._sink is not None:
            self._sink(self, event_id, event_type, encoded)
        self.encoded.append(encoded)
        self.types.append(event_type)
        if terminal:
            self.closed = True
        self._changed.set()
        self._changed = trio.Event()
        if not self._listeners:
            self.offered = len(self.encoded)
        elif self._fanout is None or (len(self._listeners) <= INLINE_LISTENERS and not self.fanning
                                      and self.offered == event_id - 1):
            self.offered = event_id
            for listener in list(self._listeners):
                listener(encoded)
        else:
            self._fanout.due(self)
        return event_id

    def listen(self, listener: Callable[[bytes], None]) -> None:
        self._listeners[listener] = None

    def unlisten(self, listener: Callable[[bytes], None]) -> None:
        self._listeners.pop(listener, None)

    async def wait_beyond(self, cursor: int) -> None:
        """Return once there is an event past ``cursor`` or the log is closed."""
        while cursor >= len(self.encoded) and not self.closed:
            await self._changed.wait()
