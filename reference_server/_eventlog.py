"""A job's event log: append-only, each event encoded once, replay and live fan-out by cursor."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import trio


def encode_event(event_id: int, event_type: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\nevent: {event_type}\ndata: {payload}\n\n".encode()


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
    """

    def __init__(self) -> None:
        self.encoded: list[bytes] = []
        self.types: list[str] = []
        self.closed = False  # the terminal event is in
        self._changed = trio.Event()
        self._listeners: dict[Callable[[bytes], None], None] = {}  # insertion-ordered set

    @property
    def last_id(self) -> int:
        return len(self.encoded)

    def append(self, event_type: str, data: dict[str, Any], *, terminal: bool = False) -> int:
        if self.closed:
            raise RuntimeError("event after the terminal event")
        data.setdefault("ts", int(time.time() * 1000))
        self.encoded.append(encode_event(len(self.encoded) + 1, event_type, data))
        self.types.append(event_type)
        if terminal:
            self.closed = True
        self._changed.set()
        self._changed = trio.Event()
        if self._listeners:
            encoded = self.encoded[-1]
            for listener in list(self._listeners):
                listener(encoded)
        return len(self.encoded)

    def listen(self, listener: Callable[[bytes], None]) -> None:
        self._listeners[listener] = None

    def unlisten(self, listener: Callable[[bytes], None]) -> None:
        self._listeners.pop(listener, None)

    async def wait_beyond(self, cursor: int) -> None:
        """Return once there is an event past ``cursor`` or the log is closed."""
        while cursor >= len(self.encoded) and not self.closed:
            await self._changed.wait()
