"""What went by on one proxied connection, as the harness's own decoder reads it (sans-IO).

The fault proxy feeds one tap with the bytes it received from the target and one with the
bytes it forwarded to the client, so that a case that finds events missing can say where
they went: never sent by the target, held by the proxy at a cut, or forwarded and then not
decoded by the reader (a harness bug). HTTP/1.1 framing (status line, headers, chunked or
length-delimited body) is undone here; the body of a 200 response goes to the decoder.
Every buffer is bounded: the head, a chunk-size line, the decoder's line and event, and
the ids kept (a shared budget; past it only counts go on).
"""

from __future__ import annotations

import dataclasses

from ._decoder import Decoder, Event, Violation

__all__ = ["ConnectionWire", "IdBudget", "StreamTap", "TapRecord"]

_MAX_HEAD = 64 << 10  # a response head (status line and headers) longer than this is not parsed
_MAX_SIZE_LINE = 1024  # a chunk-size line, with its extensions
# The decoder's bounds, per tap (two taps per open connection): under the reader's, so an
# event or line the tap cannot hold is noted (TapRecord.problem) and a loss near it is
# left unplaced rather than placed wrong.
_MAX_LINE = 256 << 10
_MAX_EVENT = 256 << 10


class IdBudget:
    """How many event ids the taps of one proxy may keep, all together."""

    def __init__(self, ids: int = 200_000) -> None:
        self.left = ids

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclasses.dataclass(frozen=True)
class TapRecord:
    """One direction of one connection, as seen so far."""

    nbytes: int  # everything on the wire, HTTP head and framing included
    body: int  # the responses' body bytes, framing undone (what a reader's decoder is fed)
    status: int | None  # the last response's status code, when a head was parsed
    events: int  # events decoded from 200 bodies
    last_id: str | None  # the last one's id, even past the budget
    ids: tuple[str, ...]  # their ids, in order (up to the budget)
    at: tuple[float, ...]  # when each kept id's event was complete (time.monotonic)
    ids_complete: bool  # False when the budget ran out: ids holds only the first ones
    problem: str  # "" or why the record may be incomplete (unparsed HTTP, an event over the tap's bound)

    @property
    def first_id(self) -> str | None:
        return self.ids[0] if self.ids else None


class StreamTap:
    """Feed it one direction of an HTTP/1.1 connection (server to client); read ``record()``."""

    def __init__(self, budget: IdBudget | None = None) -> None:
        self._budget = budget or IdBudget()
        self.nbytes = 0
        self.body = 0
        self.status: int | None = None
        self.events = 0
        self._last_id: str | None = None
        self._ids: list[str] = []
        self._at: list[float] = []
        self._ids_complete = True
        self._problem = ""
        self._state = "head"  # head, chunk-size, chunk-data, chunk-crlf, trailers, length, until-close, stopped
        self._head = b""
        self._left = 0  # bytes left in a chunk or a length-delimited body
        self._decoder: Decoder | None = None

    def record(self) -> TapRecord:
        return TapRecord(self.nbytes, self.body, self.status, self.events, self._last_id, tuple(self._ids), tuple(self._at),
                         self._ids_complete, self._problem)

    def feed(self, data: bytes, at: float) -> None:
        self.nbytes += len(data)
        while data and self._state != "stopped":
            data = self._step(data, at)

    def _stop(self, problem: str) -> None:
        self._state, self._problem, self._head = "stopped", problem, b""

    def _step(self, data: bytes, at: float) -> bytes:
        """Consume some of ``data`` in the current state; return the rest."""
        state = self._state
        if state in ("head", "chunk-size", "trailers"):
            limit = _MAX_HEAD if state != "chunk-size" else _MAX_SIZE_LINE
            buffer = self._head + data
            end = buffer.find(b"\r\n\r\n" if state == "head" else b"\r\n")
            if end < 0:
                if len(buffer) > limit:
                    self._stop(f"an HTTP {'head' if state != 'chunk-size' else 'chunk-size line'} over {limit} bytes")
                else:
                    self._head = buffer
                return b""
            line, rest = buffer[:end], buffer[end + (4 if state == "head" else 2):]
            self._head = b""
            if state == "head":
                self._start_response(line)
            elif state == "chunk-size":
                self._chunk_size(line)
            elif not line:  # trailers end with an empty line: the response is complete
                self._end_body(at)
            return rest
        if state in ("chunk-data", "length"):
            piece, rest = data[:self._left], data[self._left:]
            self._body(piece, at)
            self._left -= len(piece)
            if not self._left:
                if state == "length":
                    self._end_body(at)
                else:
                    self._state = "chunk-crlf"
            return rest
        if state == "chunk-crlf":
            buffer = self._head + data
            if len(buffer) < 2:
                self._head = buffer
                return b""
            self._head = b""
            if buffer[:2] != b"\r\n":
                self._stop("a chunk not followed by CRLF")
                return b""
            self._state = "chunk-size"
            return buffer[2:]
        # until-close: the body runs to the end of the connection
        self._body(data, at)
        return b""

    def _start_response(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            self._stop(f"not an HTTP/1.x response: {lines[0][:60]!r}")
            return
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if 100 <= status < 200:
            return  # an interim response: the real one follows
        self.status = status
        self._decoder = Decoder(max_line=_MAX_LINE, max_event=_MAX_EVENT) if status == 200 else None
        if headers.get(b"content-encoding", b"identity") != b"identity" and self._decoder is not None:
            self._decoder = None
            self._problem = f"a {headers[b'content-encoding'].decode(errors='replace')}-encoded body is not decoded"
        if status in (204, 304):
            self._state = "head"
        elif b"chunked" in headers.get(b"transfer-encoding", b""):
            self._state = "chunk-size"
        elif headers.get(b"content-length", b"").isdigit():
            self._left = int(headers[b"content-length"])
            self._state = "length" if self._left else "head"
        else:
            self._state = "until-close"

    def _chunk_size(self, line: bytes) -> None:
        size = line.split(b";", 1)[0].strip()
        try:
            self._left = int(size, 16)
        except ValueError:
            self._stop(f"a chunk size that is not hexadecimal: {line[:40]!r}")
            return
        self._state = "chunk-data" if self._left else "trailers"

    def _body(self, piece: bytes, at: float) -> None:
        self.body += len(piece)
        if self._decoder is not None and piece:
            self._take(self._decoder.feed(piece, at))

    def _end_body(self, at: float) -> None:
        if self._decoder is not None:
            self._take(self._decoder.close(at))
            self._decoder = None
        self._state = "head"

    def _take(self, records: list) -> None:
        for rec in records:
            if isinstance(rec, Event):
                self.events += 1
                self._last_id = rec.id
                if self._ids_complete and self._budget.take():
                    self._ids.append(rec.id)
                    self._at.append(rec.arrived_at)
                else:
                    self._ids_complete = False
            elif isinstance(rec, Violation) and not self._problem:
                self._problem = f"the tap's decoder: {rec.detail}"


@dataclasses.dataclass(frozen=True)
class ConnectionWire:
    """One proxied connection: what the target sent the proxy, what the proxy forwarded."""

    number: int  # the proxy's count, in accept order
    peer_port: int | None  # the client's TCP port
    opened_at: float  # time.monotonic() at accept
    closed_at: float | None  # None while it is open
    ended_by: str  # "cut" (by the harness), "client", "target", "unreachable", "proxy-exit", "" while open
    received: TapRecord  # from the target
    forwarded: TapRecord  # to the client

    def summary(self) -> dict:
        """Compact, for a report's evidence."""
        return {"connection": self.number, "endedBy": self.ended_by or "open",
                "fromTarget": _tap_summary(self.received), "toReader": _tap_summary(self.forwarded)}


def _tap_summary(tap: TapRecord) -> dict:
    out = {"bytes": tap.nbytes, "bodyBytes": tap.body, "events": tap.events, "firstId": tap.first_id, "lastId": tap.last_id}
    if tap.status not in (None, 200):
        out["status"] = tap.status
    if tap.problem:
        out["problem"] = tap.problem
    return out
