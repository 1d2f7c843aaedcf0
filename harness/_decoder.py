"""A sans-IO event-stream decoder: bytes and arrival times in, typed records out.

Written by hand rather than taken from httpx-sse because the judge must follow the WHATWG
rules exactly and see comments; httpx-sse bends both (see docs/decoder.md).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Union

__all__ = ["Comment", "Decoder", "Event", "Line", "Notice", "Record", "Retry", "Violation"]

_BOM = b"\xef\xbb\xbf"
# A canonical event at a line start: id, event, data, blank line (no NUL in the id, no CR).
_CANONICAL = re.compile(rb"(?<![^\n])id: ([^\n\x00]*)\nevent: ([^\n]*)\ndata: ([^\n]*)\n\n")


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A dispatched event, as an EventSource would deliver it."""

    id: str  # the last event id in effect at dispatch (it persists across events)
    type: str
    data: str
    retry: int | None  # a valid retry field inside this event's block, if any
    arrived_at: float  # arrival of the blank line that dispatched it
    first_arrived_at: float  # arrival of its first line
    has_id: bool  # whether this block carried its own id line
    raw: bytes  # the block's lines as received, without the dispatching blank line
    offset: int  # byte offset of the block's first line in the stream


@dataclasses.dataclass(frozen=True, slots=True)
class Comment:
    text: str  # after the colon, one leading space removed
    arrived_at: float
    offset: int


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    ms: int
    arrived_at: float
    offset: int


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    """Something the stream did that no reader can accept (e.g. an unbounded line)."""

    kind: str
    detail: str
    offset: int


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """Legal but worth knowing: first occurrence of each kind (BOM, CRLF, unknown field...)."""

    kind: str
    detail: str
    offset: int


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One line's arrival, recorded only when the decoder is asked to."""

    offset: int
    length: int
    arrived_at: float


# Events are built without the frozen dataclass __init__ (nine object.__setattr__ calls):
# setting the slots directly is twice as fast, and the decoder makes one per event.
(_set_id, _set_type, _set_data, _set_retry, _set_arrived, _set_first, _set_has_id, _set_raw,
 _set_offset) = (Event.__dict__[f.name].__set__ for f in dataclasses.fields(Event))


def _new_event(id_, type_, data, retry, arrived_at, first_arrived_at, has_id, raw, offset) -> Event:
    event = object.__new__(Event)
    _set_id(event, id_)
    _set_type(event, type_)
    _set_data(event, data)
    _set_retry(event, retry)
    _set_arrived(event, arrived_at)
    _set_first(event, first_arrived_at)
    _set_has_id(event, has_id)
    _set_raw(event, raw)
    _set_offset(event, offset)
    return event


Record = Union[Event, Comment, Retry, Violation, Notice, Line]


def _too_long(max_line: int) -> str:
    # One wording whether the line came whole or was skipped across chunks: same records.
    return f"a line exceeds {max_line} bytes; skipped to its end"


class Decoder:
    """Feed it chunks; it returns records. One instance per HTTP response.

    Guarantees: records come out in stream order; any chunking of the same bytes gives the
    same records except for arrival times, limits and violations included; memory is
    bounded by ``max_line`` plus one event's lines (``max_event``).
    """

    def __init__(self, *, max_line: int = 1 << 20, max_event: int = 16 << 20, record_lines: bool = False) -> None:
        self.max_line = max_line
        self.max_event = max_event
        self.record_lines = record_lines
        self.last_event_id = ""  # committed at each blank line, as EventSource does
        self._id_buffer = ""
        self.retry_ms: int | None = None
        self.line_endings: dict[str, int] = {"LF": 0, "CRLF": 0, "CR": 0}
        self.bytes_seen = 0
        self._buffer = b""
        self._buffer_offset = 0  # stream offset of _buffer[0]
        self._bom_checked = False
        self._cr_pending = False  # the last chunk ended in CR: a leading LF belongs to it
        self._skipping = False  # inside an over-long line: drop bytes until its end
        self._noticed: set[str] = set()
        self._data: list[bytes] = []
        self._block_lines: list[bytes] = []
        self._reset_block()

    def _reset_block(self) -> None:
        # Lists are cleared in place: feed() holds them in locals for speed.
        self._data.clear()
        self._block_size = 0
        self._type = ""
        self._block_retry: int | None = None
        self._block_has_id = False
        self._block_lines.clear()
        self._block_start: tuple[float, int] | None = None
        self._dropping = False  # the block passed max_event: it will not be dispatched

    def _notice(self, out: list, kind: str, detail: str, offset: int) -> None:
        if kind not in self._noticed:
            self._noticed.add(kind)
            out.append(Notice(kind, detail, offset))

    def feed(self, data: bytes, arrived_at: float) -> list[Record]:
        out: list[Record] = []
        if not data:
            return out
        self.bytes_seen += len(data)
        if self._cr_pending:
            self._cr_pending = False
            if data[:1] == b"\n":
                self.line_endings["CR"] -= 1
                self.line_endings["CRLF"] += 1
                data = data[1:]
                self._buffer_offset += 1
        buffer = self._buffer + data if self._buffer else data
        if not self._bom_checked:
            if len(buffer) < 3 and _BOM.startswith(buffer):
                self._buffer = buffer
                return out
            self._bom_checked = True
            if buffer.startswith(_BOM):
                buffer = buffer[3:]
                self._buffer_offset += 3
                self._notice(out, "bom", "a UTF-8 byte order mark opens the stream (stripped)", 0)
        if b"\r" not in buffer and not self.record_lines and not self._skipping:
            # The common case, LF only. Canonical events (id, event, data, blank line) are
            # taken whole by one regex; what lies between them goes line by line.
            offset, rest = self._feed_lf(buffer, arrived_at, out)
        else:
            raw_lines = buffer.splitlines(keepends=True)
            rest = b""
            if raw_lines and not raw_lines[-1].endswith((b"\n", b"\r")):
                rest = raw_lines.pop()
            bodies, lengths = [], []
            for raw in raw_lines:
                if raw.endswith(b"\r\n"):
                    bodies.append(raw[:-2])
                    self.line_endings["CRLF"] += 1
                elif raw.endswith(b"\n"):
                    bodies.append(raw[:-1])
                    self.line_endings["LF"] += 1
                else:
                    bodies.append(raw[:-1])
                    self.line_endings["CR"] += 1
                lengths.append(len(raw))
            if raw_lines and raw_lines[-1].endswith(b"\r") and not rest:
                self._cr_pending = True
            offset = self._lines(bodies, lengths, arrived_at, self._buffer_offset, out)
        max_line = self.max_line
        if len(rest) > max_line:
            if not self._skipping:
                out.append(Violation("line-too-long", _too_long(max_line), offset))
            self._skipping = True
            offset += len(rest)
            rest = b""
        self._buffer = rest
        self._buffer_offset = offset
        return out

    def _feed_lf(self, buffer: bytes, arrived_at: float, out: list) -> tuple[int, bytes]:
        base = self._buffer_offset
        pos = 0
        max_line = self.max_line
        append = out.append
        for match in _CANONICAL.finditer(buffer):
            start, end = match.span()
            if start > pos:
                gap = buffer[pos:start].split(b"\n")
                gap.pop()  # the gap ends with a line end: its last piece is empty
                self.line_endings["LF"] += len(gap)
                self._lines(gap, None, arrived_at, base + pos, out)
            pos = end
            if self._block_lines or self._dropping or end - start > max_line or \
                    end - start - 4 > self.max_event:
                # Inside an open block (or too long): the general path must judge these lines.
                lines = buffer[start:end].split(b"\n")
                lines.pop()
                self.line_endings["LF"] += len(lines)
                self._lines(lines, None, arrived_at, base + start, out)
                continue
            self.line_endings["LF"] += 4
            at = base + start
            raw_id, raw_type, raw_data = match.groups()
            event_id = raw_id.decode("ascii") if raw_id.isascii() else self._text(raw_id, at, out)
            if not raw_type:
                event_type = "message"
            else:
                event_type = raw_type.decode("ascii") if raw_type.isascii() else self._text(raw_type, at, out)
            data = raw_data.decode("utf-8", "replace")
            if "\ufffd" in data:
                data = self._text(raw_data, at, out)  # tells invalid UTF-8, if that is what it was
            self.last_event_id = self._id_buffer = event_id
            append(_new_event(event_id, event_type, data, None, arrived_at, arrived_at, True, buffer[start:end - 2], at))
        tail = buffer[pos:].split(b"\n")
        rest = tail.pop()
        if tail:
            self.line_endings["LF"] += len(tail)
            self._lines(tail, None, arrived_at, base + pos, out)
        return base + len(buffer) - len(rest), rest

    def _lines(self, bodies: list[bytes], lengths: list[int] | None, arrived_at: float, offset: int,
               out: list) -> int:
        """Lines one by one; returns the offset after them."""
        max_line = self.max_line
        block_lines = self._block_lines
        for i, body in enumerate(bodies):
            length = len(body) + 1 if lengths is None else lengths[i]
            if self._skipping:
                self._skipping = False  # the end of an over-long line, already reported
            elif len(body) > max_line:
                out.append(Violation("line-too-long", _too_long(max_line), offset))
            elif self.record_lines:
                out.append(Line(offset, length, arrived_at))
                self._line(body, arrived_at, offset, out)
            elif not body:
                self._dispatch(arrived_at, out)
            elif body[0] == 58:  # ":" a comment
                self._comment(body, arrived_at, offset, out)
            else:
                # Inline for speed: a field line of the current block (as _block_line does).
                if not block_lines and not self._dropping:
                    self._block_start = (arrived_at, offset)
                field, colon, value = body.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if field == b"data":
                    self._data_line(body, value, offset, out)
                else:
                    self._block_line(body, offset, out)
                    if field == b"id" and b"\x00" not in value and value.isascii():
                        self._id_buffer = value.decode("ascii")
                        self._block_has_id = True
                    elif field == b"event" and value.isascii():
                        self._type = value.decode("ascii")
                    else:
                        self._field(field, value, arrived_at, offset, out)
            offset += length
        return offset

    def close(self, arrived_at: float) -> list[Record]:
        """End of stream: an event without its blank line is discarded, as the spec says."""
        out: list[Record] = []
        if self._buffer and not self._skipping:
            out.append(Notice("unterminated-line", f"{len(self._buffer)} bytes after the last line end", self._buffer_offset))
        if self._block_lines or self._dropping:
            out.append(Notice("partial-event-discarded", "the stream ended inside an event block", self._block_start[1]))
        # Line endings are told at the end: a CR closing one chunk may yet prove to be a CRLF.
        for kind in ("CRLF", "CR"):
            if self.line_endings[kind]:
                self._notice(out, kind.lower(), f"{self.line_endings[kind]} line(s) end with {kind}", self.bytes_seen)
        self._buffer = b""
        self._reset_block()
        return out

    def _line(self, body: bytes, arrived_at: float, offset: int, out: list) -> None:
        """One line, the slow general way (used when lines are recorded); never over max_line."""
        if not body:
            self._dispatch(arrived_at, out)
        elif body[0] == 58:
            self._comment(body, arrived_at, offset, out)
        else:
            if not self._block_lines and not self._dropping:
                self._block_start = (arrived_at, offset)
            field, colon, value = body.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data_line(body, value, offset, out)
            else:
                self._block_line(body, offset, out)
                self._field(field, value, arrived_at, offset, out)

    def _data_line(self, body: bytes, value: bytes, offset: int, out: list) -> None:
        if self._block_line(body, offset, out):
            self._data.append(value)

    def _block_line(self, body: bytes, offset: int, out: list) -> bool:
        """Keep a field line of the current block, unless the block's lines pass max_event;
        then the event is dropped (one Violation): its later lines are not kept and its blank
        line dispatches nothing, though its id still commits there, as for any block without
        data. Returns whether the line was kept."""
        if self._dropping:
            return False
        self._block_size += len(body)
        if self._block_size > self.max_event:
            out.append(Violation("event-too-large", f"an event's lines exceed {self.max_event} bytes; dropped", offset))
            self._dropping = True
            self._data.clear()
            self._block_lines.clear()
            return False
        self._block_lines.append(body)
        return True

    def _comment(self, body: bytes, arrived_at: float, offset: int, out: list) -> None:
        text = body[2:] if body[1:2] == b" " else body[1:]
        out.append(Comment(self._text(text, offset, out), arrived_at, offset))

    def _text(self, value: bytes, offset: int, out: list) -> str:
        text = value.decode("utf-8", errors="replace")
        if "\ufffd" in text and b"\xef\xbf\xbd" not in value:
            self._notice(out, "invalid-utf8", "bytes that are not UTF-8 (replaced by U+FFFD)", offset)
        return text

    def _field(self, field: bytes, value: bytes, arrived_at: float, offset: int, out: list) -> None:
        if field == b"event":
            self._type = self._text(value, offset, out)
        elif field == b"id":
            if b"\x00" in value:
                self._notice(out, "id-with-nul", "an id containing NUL was ignored", offset)
            else:
                self._id_buffer = self._text(value, offset, out)
                self._block_has_id = True
        elif field == b"retry":
            if value and value.isdigit():  # bytes.isdigit: ASCII digits only, as the spec wants
                self.retry_ms = int(value)
                self._block_retry = self.retry_ms
                out.append(Retry(self.retry_ms, arrived_at, offset))
            else:
                self._notice(out, "retry-invalid", f"retry value {value!r} is not all ASCII digits (ignored)", offset)
        else:
            self._notice(out, "unknown-field", f"field {field.decode('utf-8', 'replace')!r} ignored", offset)

    def _dispatch(self, arrived_at: float, out: list) -> None:
        self.last_event_id = self._id_buffer
        if self._data:
            first_at, offset = self._block_start
            out.append(_new_event(self.last_event_id, self._type or "message",
                                  self._text(b"\n".join(self._data), offset, out), self._block_retry, arrived_at,
                                  first_at, self._block_has_id, b"\n".join(self._block_lines), offset))
        self._reset_block()
