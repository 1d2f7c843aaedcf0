"""The recording client: one HTTP response or a browser-like chain of reconnects, kept as a Trace."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import time
from typing import AsyncIterator, Awaitable, Callable, Iterable

import httpx
import trio

from ._decoder import Comment, Decoder, Event, Record
from ._errors import TargetFault
from ._tasks import background_nursery

__all__ = ["End", "Limits", "ReconnectPolicy", "Segment", "Stream", "StreamError", "Trace", "follow", "record", "stream"]

class End(enum.StrEnum):
    """How a connection ended. Only SERVER_CLOSED is the server finishing the response."""

    SERVER_CLOSED = "server-closed"
    CLIENT_CLOSED = "client-closed"  # we stopped: the caller asked, or the close after a terminal event was late
    RESET = "reset"
    TIMEOUT = "timeout"  # no bytes within Limits.read, or the total limit
    CONNECT_FAILED = "connect-failed"
    HTTP_STATUS = "http-status"  # a status other than 200: the body is kept, no stream
    OVERFLOW = "overflow"
    NO_EVENTS = "no-events"  # the open stream brought no event within Limits.between_events


END_SERVER, END_CLIENT, END_RESET, END_TIMEOUT = End.SERVER_CLOSED, End.CLIENT_CLOSED, End.RESET, End.TIMEOUT
END_CONNECT, END_STATUS, END_OVERFLOW, END_NO_EVENTS = End.CONNECT_FAILED, End.HTTP_STATUS, End.OVERFLOW, End.NO_EVENTS


@dataclasses.dataclass(frozen=True)
class Limits:
    """Every wait has a timeout and every buffer a bound."""

    connect: float = 5.0
    read: float = 30.0  # the longest silence we sit through before calling it a timeout
    total: float = 120.0
    max_bytes: int = 64 << 20
    max_line: int = 1 << 20
    after_terminal: float = 3.0  # how long we wait for the server to close after a terminal event
    # The longest wait for the next event (keep-alive comments do not count); None: no bound.
    # For a target that owes events (a working job), ending there makes the wait a verdict.
    between_events: float | None = None
    # The longest wait for the response head (status line and headers); None: the read timeout.
    head: float | None = None


@dataclasses.dataclass(frozen=True)
class Segment:
    """One HTTP request/response of an event stream, as observed."""

    url: str
    request_headers: tuple[tuple[str, str], ...]
    last_event_id_sent: str | None
    started_at: float  # time.monotonic()
    wall_offset: float  # add to a monotonic time to get epoch seconds
    status: int | None
    headers: tuple[tuple[str, str], ...]  # lower-case names
    records: tuple[Record, ...]
    chunks: tuple[tuple[float, int], ...]  # (arrival, size) of every read
    ended_at: float
    end: str
    end_detail: str
    body: bytes  # a non-200 response's body (first 16 KiB)
    last_event_id: str  # the decoder's last event id when the segment ended
    retry_ms: int | None
    raw: bytes = b""  # the body as received, when asked for (keep_bytes)
    # The TCP port our end of the connection had (None when none was made): it pairs the
    # segment with what a proxy in between saw of the same connection.
    local_port: int | None = None
    # When the response head (status and headers) arrived (time.monotonic()); None: it never did.
    head_at: float | None = None

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)]

    @property
    def comments(self) -> list[Comment]:
        return [r for r in self.records if isinstance(r, Comment)]

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def wall(self, monotonic: float) -> float:
        return monotonic + self.wall_offset


@dataclasses.dataclass(frozen=True)
class Trace:
    """Everything one client saw, across all its connections."""

    segments: tuple[Segment, ...]
    # Why following stopped short of a terminal event or a 204 ("" when it did not):
    # attempts spent, a refusing status, an overflow, or events overdue.
    gave_up: str = ""

    @property
    def events(self) -> list[Event]:
        return [e for s in self.segments for e in s.events]

    @property
    def last(self) -> Segment:
        return self.segments[-1]

    def kinds(self, cls: type) -> list:
        return [r for s in self.segments for r in s.records if isinstance(r, cls)]


@dataclasses.dataclass(frozen=True)
class ReconnectPolicy:
    """EventSource-like reconnection: wait the server's retry (or delay_ms), back off, give up."""

    max_attempts: int = 10  # connections that end without a terminal event
    delay_ms: int | None = None  # None: use the server's retry, else default_ms
    default_ms: int = 1000
    backoff: float = 1.0
    cap_ms: int = 30_000


def _headers(extra: dict[str, str] | None, last_event_id: str | None) -> dict[str, str]:
    # identity: the recorder keeps and decodes the bytes as they come (aiter_raw), so it asks for
    # them uncompressed (httpx would ask for gzip, deflate...). Whether a server compresses when a
    # browser asks is a check of its own (scenarios/_shared.py as_a_browser_asks); a caller's
    # ``Accept-Encoding`` in ``extra`` wins.
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "Accept-Encoding": "identity"}
    given = {name.lower() for name in extra or {}}
    headers = {name: value for name, value in headers.items() if name.lower() not in given}
    headers.update(extra or {})
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


async def record(
    url: str,
    *,
    client: httpx.AsyncClient | None = None,
    headers: dict[str, str] | None = None,
    last_event_id: str | None = None,
    limits: Limits = Limits(),
    stop: Callable[[Event], bool] | None = None,
    terminal_types: Iterable[str] = (),
    sink: Callable[[Record], Awaitable[None]] | None = None,
    record_lines: bool = False,
    keep_bytes: bool = False,
    patient: Callable[[Event], bool] | None = None,
    method: str = "GET",
    content: bytes | None = None,
    terminal: Callable[[Event], bool] | None = None,
) -> Segment:
    """Open one event stream and record it until it ends, ``stop`` says so, or a limit hits.

    After an event whose type is in ``terminal_types`` (or for which ``terminal`` holds: a data
    sentinel such as ``[DONE]``, a field's value) we keep reading (at most
    ``limits.after_terminal``) to see whether and when the server closes the response.
    ``method`` and ``content``: a stream opened by a POST (an LLM completion, say).
    ``patient(event)`` says after which events a silence is legitimate (say, a job that
    reports itself queued): ``limits.between_events`` is lifted until the next event.
    """
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient())
        return await _record(client, url, _headers(headers, last_event_id), last_event_id, limits, stop,
                             _is_terminal(terminal_types, terminal), sink, record_lines, keep_bytes, patient,
                             method, content)


def _is_terminal(terminal_types: Iterable[str], terminal: Callable[[Event], bool] | None) -> Callable[[Event], bool]:
    """One predicate for "this event ends the stream": by type, or by what the caller says."""
    types = frozenset(terminal_types)
    if terminal is None:
        return lambda event: event.type in types
    return lambda event: event.type in types or terminal(event)


async def _record(client, url, headers, last_event_id, limits, stop, is_terminal, sink, record_lines,
                  keep_bytes=False, patient=None, method="GET", content=None, waiting=False) -> Segment:
    """One connection. ``waiting``: the last event before it (on an earlier connection) said a
    silence is legitimate (a queued job): the events deadline starts lifted, as it would have
    stayed on that connection."""
    decoder = Decoder(max_line=limits.max_line, record_lines=record_lines)
    records: list[Record] = []
    chunks: list[tuple[float, int]] = []
    started = time.monotonic()
    wall_offset = time.time() - time.monotonic()
    status: int | None = None
    response_headers: tuple[tuple[str, str], ...] = ()
    end, detail, body = END_CLIENT, "", b""
    timeout = httpx.Timeout(connect=limits.connect, read=limits.read, write=limits.connect, pool=limits.connect)
    terminal_at: float | None = None
    kept: list[bytes] = []
    stopped_id: str | None = None  # when the caller stops us mid-chunk: the id we really reached
    local_port: int | None = None
    head_at: float | None = None

    async def take(new: list[Record]) -> bool:
        """Keep records; True when the caller asked us to stop."""
        nonlocal terminal_at, stopped_id
        for rec in new:
            records.append(rec)
            if sink is not None:
                await sink(rec)
            if isinstance(rec, Event):
                if terminal_at is None and is_terminal(rec):
                    terminal_at = rec.arrived_at
                if stop is not None and stop(rec):
                    stopped_id = rec.id
                    return True
        return False

    with trio.move_on_after(limits.total) as total_scope, trio.CancelScope() as after_terminal, \
            trio.CancelScope() as no_events, trio.CancelScope() as no_head:
        if limits.between_events is not None and not waiting:
            no_events.deadline = trio.current_time() + limits.between_events
        if limits.head is not None:
            no_head.deadline = trio.current_time() + limits.head
        try:
            async with client.stream(method, url, headers=headers, timeout=timeout, content=content) as response:
                head_at = time.monotonic()
                no_head.deadline = math.inf
                status = response.status_code
                local_port = _local_port(response)
                response_headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1"))
                                         for k, v in response.headers.raw)
                if status != 200:
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) >= 16384:
                            break
                    end, detail = END_STATUS, f"HTTP {status}"
                else:
                    end, detail = END_SERVER, "the server ended the response"
                    seen = 0
                    async for chunk in response.aiter_raw():
                        now = time.monotonic()
                        chunks.append((now, len(chunk)))
                        seen += len(chunk)
                        if keep_bytes:
                            kept.append(chunk)
                        before = len(records)
                        if await take(decoder.feed(chunk, now)):
                            end, detail = END_CLIENT, "stopped by the caller"
                            break
                        if limits.between_events is not None and terminal_at is None:
                            last = next((r for r in reversed(records[before:]) if isinstance(r, Event)), None)
                            if last is not None:
                                no_events.deadline = (math.inf if patient is not None and patient(last)
                                                      else trio.current_time() + limits.between_events)
                        if seen > limits.max_bytes:
                            end, detail = END_OVERFLOW, f"more than {limits.max_bytes} bytes"
                            break
                        if terminal_at is not None:
                            # Keep listening for the close, but no longer than after_terminal.
                            # (trio's clock has its own offset: convert from time.monotonic.)
                            left = terminal_at + limits.after_terminal - time.monotonic()
                            after_terminal.deadline = min(after_terminal.deadline, trio.current_time() + left)
                            no_events.deadline = math.inf
        except httpx.ConnectError as exc:
            end, detail = END_CONNECT, str(exc) or type(exc).__name__
        except httpx.ConnectTimeout as exc:
            end, detail = END_CONNECT, f"connect timeout: {exc}"
        except httpx.ReadTimeout:
            if terminal_at is not None:
                end, detail = END_CLIENT, f"still open {limits.read}s after the terminal event"
            else:
                end, detail = END_TIMEOUT, f"no bytes for {limits.read}s"
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            end, detail = END_RESET, f"{type(exc).__name__}: {exc}"
        except httpx.HTTPError as exc:
            end, detail = END_RESET, f"{type(exc).__name__}: {exc}"
    if no_head.cancelled_caught:
        end, detail = END_TIMEOUT, f"no response head within {limits.head:g}s"
    elif no_events.cancelled_caught:
        comments = sum(1 for r in records if isinstance(r, Comment))
        end, detail = END_NO_EVENTS, (f"no event for {limits.between_events:g}s "
                                      f"({comments} comment(s) on this connection)")
    elif after_terminal.cancelled_caught:
        end, detail = END_CLIENT, f"still open {limits.after_terminal}s after the terminal event"
    elif total_scope.cancelled_caught:
        end, detail = END_TIMEOUT, f"total time limit {limits.total}s reached"
    ended = time.monotonic()
    await take(decoder.close(ended))
    return Segment(
        url=url, request_headers=tuple(headers.items()), last_event_id_sent=last_event_id,
        started_at=started, wall_offset=wall_offset, status=status, headers=response_headers,
        records=tuple(records), chunks=tuple(chunks), ended_at=ended, end=end, end_detail=detail,
        body=body, last_event_id=decoder.last_event_id if stopped_id is None else stopped_id,
        retry_ms=decoder.retry_ms, raw=b"".join(kept), local_port=local_port, head_at=head_at,
    )


def _local_port(response: httpx.Response) -> int | None:
    stream = response.extensions.get("network_stream")
    try:
        address = stream.get_extra_info("client_addr") if stream is not None else None
    except (AttributeError, OSError):
        return None
    return address[1] if isinstance(address, tuple) and len(address) >= 2 else None


async def follow(
    url: str,
    *,
    client: httpx.AsyncClient | None = None,
    headers: dict[str, str] | None = None,
    last_event_id: str | None = None,
    limits: Limits = Limits(),
    policy: ReconnectPolicy = ReconnectPolicy(),
    terminal_types: Iterable[str] = (),
    sink: Callable[[Record], Awaitable[None]] | None = None,
    on_segment: Callable[[Segment], Awaitable[None]] | None = None,
    patient: Callable[[Event], bool] | None = None,
    method: str = "GET",
    content: bytes | None = None,
    terminal: Callable[[Event], bool] | None = None,
) -> Trace:
    """Behave like a browser's EventSource and record every connection.

    Reconnects with Last-Event-ID after each connection that ends without a terminal
    event; stops on a terminal event, on 204 (or any other non-200: EventSource fails
    there), or after ``policy.max_attempts`` connections in a row that brought no event.
    """
    is_terminal = _is_terminal(terminal_types, terminal)
    segments: list[Segment] = []
    failures = 0
    delay_factor = 1.0
    gave_up = ""
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient())
        while True:
            earlier = [e for s in segments for e in s.events]
            waiting = bool(earlier) and patient is not None and patient(earlier[-1])
            segment = await _record(client, url, _headers(headers, last_event_id), last_event_id, limits, None,
                                    is_terminal, sink, False, False, patient, method, content, waiting)
            segments.append(segment)
            if on_segment is not None:
                await on_segment(segment)
            if any(is_terminal(e) for e in segment.events):
                break
            if segment.end == END_STATUS:
                if segment.status != 204:  # 204 is the server's "nothing more": a normal end
                    gave_up = f"the server answered HTTP {segment.status}"
                break
            if segment.end in (END_OVERFLOW, END_NO_EVENTS):
                gave_up = segment.end_detail  # a browser would wait on; a judge stops here
                break
            if segment.events:
                failures, delay_factor = 0, 1.0
            else:
                failures += 1
            if failures >= policy.max_attempts:
                gave_up = (f"gave up after {failures} connection(s) in a row with no event; "
                           f"the last: {segment.end}: {segment.end_detail}")
                break
            last_event_id = segment.last_event_id or last_event_id
            base = policy.delay_ms if policy.delay_ms is not None else (segment.retry_ms or policy.default_ms)
            await trio.sleep(min(policy.cap_ms, base * delay_factor) / 1000)
            delay_factor *= policy.backoff
    return Trace(tuple(segments), gave_up)


class StreamError(TargetFault):
    """The stream could not be followed to its end: nothing listens, the server refused it,
    lost it, or the attempts were spent (``harness.stream()``; the load user's streams too).
    The target's fault. ``trace`` holds every connection as observed, when one was kept."""

    def __init__(self, message: str, trace: Trace | None = None) -> None:
        super().__init__(message)
        self.trace = trace


class Stream:
    """What ``harness.stream()`` yields: iterate it for events; ``trace`` once it is done."""

    def __init__(self, receive: trio.MemoryReceiveChannel) -> None:
        self._receive = receive
        self.trace: Trace | None = None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        async for record_ in self._receive:
            if isinstance(record_, Event):
                yield record_
        if self.trace is not None and self.trace.gave_up:
            raise StreamError(f"{self.trace.last.url}: {self.trace.gave_up}", self.trace)


def _single_failure(segment: Segment) -> str:
    """Why one connection did not deliver a stream at all ("" when it did)."""
    if segment.end == END_CONNECT:
        return f"could not connect: {segment.end_detail}"
    if segment.end == END_STATUS and segment.status != 204:
        return f"the server answered HTTP {segment.status}"
    return ""


@contextlib.asynccontextmanager
async def stream(url: str, *, reconnect: bool = True, **kwargs) -> AsyncIterator[Stream]:
    """``async with harness.stream(url) as s: async for event in s: ...``

    With ``reconnect`` (default) it follows like EventSource; otherwise one connection.
    Leaving the block stops the recording; an exception raised in the block leaves it as
    itself. When no stream could be had (nothing listening, a refusing status, attempts
    spent) the ``async for`` raises StreamError, which carries the trace.
    """
    send, receive = trio.open_memory_channel(256)
    result = Stream(receive)

    async def run() -> None:
        async with send:
            if reconnect:
                result.trace = await follow(url, sink=send.send, **kwargs)
            else:
                segment = await record(url, sink=send.send, **kwargs)
                result.trace = Trace((segment,), _single_failure(segment))

    async with background_nursery() as nursery:
        nursery.start_soon(run)
        yield result
