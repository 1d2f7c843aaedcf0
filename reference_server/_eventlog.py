"""A job's event log: append-only, each event encoded once, replay and live fan-out by cursor."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable

import trio


def encode_event(event_id: int, event_type: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\nevent: {event_type}\ndata: {payload}\n\n".encode()


# Listeners offered an event between two checkpoints of a durable log's fan-out (about 25 us each).
FANOUT_SLICE = 256
# Past this many listeners on one job, a durable log's fan-out goes to the store's task, in slices.
# Not lower: every slice waits for a whole pass of the scheduler, and at 14,000 streams (700 a job)
# with every job's fan-out sliced, passes were so long that delivery fell 108 s behind.
FANOUT_DEFER = 1024
# Events offered joined to a listener in one write, at most this many bytes (a subscriber's write bound).
MAX_JOINED = 64 * 1024

# Called with (log, event id, type, encoded bytes) when an event is appended to a durable log,
# once the event is on disk; True: publish it now. Otherwise the store publishes it later
# (``publish_through`` / ``publish_sliced``), in order with whatever else is pending.
Sink = Callable[["EventLog", int, str, bytes], bool]


class EventLog:
    """Events of one job, ids 1, 2, 3, ...

    Subscribers hold a cursor (an index into ``encoded``), never a queue of their own: an
    event is stored once and every subscriber writes the same bytes. Replay and live
    delivery are the same loop ("write everything past my cursor, then wait for more"),
    so an event appended while a replay is being written is picked up by the next pass:
    no gap and no duplicate by construction.

    A caught-up subscriber may instead ``listen`` with a plain callable: ``append`` calls it
    with the new event's bytes before returning, so the event can be written without waking
    the subscriber's task. A listener must not raise and must not block; it leaves with
    ``unlisten`` (also from inside the call).

    With a ``sink`` (the durable store) an appended event is *published* (put in ``encoded``,
    offered to listeners, the log closed by a terminal one) only once the store has it on
    disk: no client ever sees an event that a crash could take back, so after a restart ids
    go on from the last one anyone saw. Without a sink, append publishes at once.
    """

    def __init__(self, sink: Sink | None = None, history: Iterable[tuple[str, bytes]] = (),
                 closed: bool = False) -> None:
        self.encoded: list[bytes] = []
        self.types: list[str] = []
        for event_type, encoded in history:
            self.encoded.append(encoded)
            self.types.append(event_type)
        self.size = sum(len(e) for e in self.encoded)  # bytes stored, for the size bound
        self.closed = closed  # the terminal event is in (published)
        self._sink = sink
        self._pending: list[tuple[str, bytes, bool]] = []  # appended, not yet on disk
        self._changed = trio.Event()
        self._listeners: dict[Callable[[bytes], None], None] = {}  # insertion-ordered set

    @property
    def last_id(self) -> int:
        """The last published id (what a client can have seen)."""
        return len(self.encoded)

    @property
    def next_id(self) -> int:
        return len(self.encoded) + len(self._pending) + 1

    def append(self, event_type: str, data: dict[str, Any], *, terminal: bool = False) -> int:
        if self.closed:
            raise RuntimeError("event after the terminal event")
        data.setdefault("ts", int(time.time() * 1000))
        event_id = self.next_id
        encoded = encode_event(event_id, event_type, data)
        self.size += len(encoded)
        if self._sink is None or self._sink(self, event_id, event_type, encoded):
            self._publish(event_type, encoded, terminal)
        else:
            self._pending.append((event_type, encoded, terminal))  # the store publishes it
        return event_id

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def publish_through(self, event_id: int) -> None:
        """The store has every event up to ``event_id`` on disk: publish them, in order."""
        while self._pending and len(self.encoded) < event_id:
            self._publish(*self._pending.pop(0))

    async def publish_sliced(self, event_id: int) -> None:
        """``publish_through`` for the store's writer task, with two differences.

        The fan-out to listeners goes in slices of FANOUT_SLICE with a checkpoint between them,
        so that with thousands of subscribers on one job the loop still answers requests (and
        cancels) meanwhile. And the events a batch brings are offered joined (up to
        MAX_JOINED bytes per offer), one write per listener rather than one per event: when
        the server falls behind, batches grow, and each write carries more; every subscriber
        of the job gets the same run of events in the same pass, so lateness grows evenly.

        Only this task publishes to a durable log, and it finishes one fan-out before the next,
        so a listener's "is this my next event" test holds across the checkpoints. A listener
        that left meanwhile is skipped: its task now writes from its cursor, an offer would
        write twice."""
        first = len(self.encoded)
        while self._pending and len(self.encoded) < event_id:
            self._publish(*self._pending.pop(0), offer=False)
        if not self._listeners or first == len(self.encoded):
            return
        listeners = list(self._listeners)
        start = first
        while start < len(self.encoded):
            end, size = start, 0
            while end < len(self.encoded) and (end == start or size + len(self.encoded[end]) <= MAX_JOINED):
                size += len(self.encoded[end])
                end += 1
            joined = self.encoded[start] if end == start + 1 else b"".join(self.encoded[start:end])
            for offset in range(0, len(listeners), FANOUT_SLICE):
                if offset:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                current = self._listeners
                for listener in listeners[offset:offset + FANOUT_SLICE]:
                    if listener not in current:
                        continue
                    if end == start + 1:
                        listener(joined)
                        continue
                    many = getattr(getattr(listener, "__self__", None), "offer_many", None)
                    if many is not None:
                        many(joined, start, end - start)
                    else:
                        for encoded in self.encoded[start:end]:
                            listener(encoded)
            start = end

    def _publish(self, event_type: str, encoded: bytes, terminal: bool, offer: bool = True) -> list:
        """Put the event in the log; offer it to every listener now (``offer``), else return them."""
        self.encoded.append(encoded)
        self.types.append(event_type)
        if terminal:
            self.closed = True
        self._changed.set()
        self._changed = trio.Event()
        if not self._listeners:
            return []
        if not offer:
            return list(self._listeners)
        for listener in list(self._listeners):
            listener(encoded)
        return []

    def listen(self, listener: Callable[[bytes], None]) -> None:
        self._listeners[listener] = None

    def unlisten(self, listener: Callable[[bytes], None]) -> None:
        self._listeners.pop(listener, None)

    async def wait_beyond(self, cursor: int) -> None:
        """Return once there is an event past ``cursor`` or the log is closed."""
        while cursor >= len(self.encoded) and not self.closed:
            await self._changed.wait()
