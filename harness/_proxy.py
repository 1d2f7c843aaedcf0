"""A fault-injecting TCP proxy on 127.0.0.1: cut, stall, delay, slice, throttle, refuse."""

from __future__ import annotations

import collections
import dataclasses
import socket
import struct
import time

import trio

from ._tasks import BackgroundServer
from ._wiretap import ConnectionWire, IdBudget, StreamTap

__all__ = ["ConnectionWire", "FaultProxy", "ProxyLogEntry"]


@dataclasses.dataclass(frozen=True)
class ProxyLogEntry:
    at: float  # time.monotonic()
    action: str
    detail: str


class _Connection:
    def __init__(self, client: trio.SocketStream, number: int, budget: IdBudget) -> None:
        self.client = client
        self.server: trio.SocketStream | None = None
        self.number = number
        self.scope = trio.CancelScope()
        self.down_bytes = 0
        self.cut_after: int | None = None
        self.rst = False
        self.opened_at = time.monotonic()
        try:
            self.peer_port: int | None = client.socket.getpeername()[1]  # the client's end: pairs it with a reader's
        except (OSError, IndexError, TypeError):
            self.peer_port = None
        self.closed_at: float | None = None
        self.ended_by = ""  # the first cause wins: cut, client, target, unreachable
        self.received = StreamTap(budget)  # what the target sent
        self.forwarded = StreamTap(budget)  # what went on to the client

    def end(self, cause: str) -> None:
        if not self.ended_by:
            self.ended_by = cause

    def wire(self) -> ConnectionWire:
        return ConnectionWire(self.number, self.peer_port, self.opened_at, self.closed_at, self.ended_by,
                              self.received.record(), self.forwarded.record())


class FaultProxy(BackgroundServer):
    """``async with FaultProxy(port) as proxy:`` then point the client at ``proxy.port``.

    Faults apply to the server-to-client direction (what an event-stream reader feels);
    the request direction is forwarded as it comes. Every fault is logged with its
    monotonic time, so that a trace can be lined up with what was done to it. Each
    connection's server-to-client bytes are tapped on both sides of the proxy (``wire()``):
    what the target sent and what was forwarded, with the event ids in them, so that a lost
    event can be placed. Bounded: the newest ``keep`` log entries and ended connections,
    ``max_ids`` ids in all, the taps' own buffers (harness._wiretap).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, max_connections: int = 256, keep: int = 10_000,
                 max_ids: int = 200_000) -> None:
        if target_host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the proxy only forwards to this host (127.0.0.1, ::1, localhost)")
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.max_connections = max_connections
        self.port = 0
        self.log: collections.deque[ProxyLogEntry] = collections.deque(maxlen=keep)
        self.connections: list[_Connection] = []  # the open ones
        self._ended: collections.deque[ConnectionWire] = collections.deque(maxlen=keep)
        self._ids = IdBudget(max_ids)
        self._count = 0
        self._nursery: trio.Nursery | None = None
        self._stalled_until = 0.0  # trio clock
        self._refuse_until = 0.0
        self.delay_seconds = 0.0
        self.slice_bytes: int | None = None
        self.slice_pause = 0.0
        self.throttle_bps: float | None = None
        self._next_cut_after: int | None = None

    def wire(self) -> tuple[ConnectionWire, ...]:
        """Every connection so far (the newest ``keep`` ended ones and the open ones), in accept order."""
        return tuple(sorted([*self._ended, *(c.wire() for c in self.connections)], key=lambda w: w.number))

    def url(self, path: str = "") -> str:
        return f"http://{self.listen[0]}:{self.port}{path}"

    def _note(self, action: str, detail: str = "") -> None:
        self.log.append(ProxyLogEntry(time.monotonic(), action, detail))

    # -- faults ---------------------------------------------------------------------------
    def cut(self, *, rst: bool = False) -> int:
        """Close every open connection now (both sides); with ``rst`` reset the client's."""
        live = [c for c in self.connections if not c.scope.cancel_called]
        for conn in live:
            conn.rst = rst
            conn.end("cut")
            conn.scope.cancel()
        self._note("cut", f"{len(live)} connection(s){' by RST' if rst else ''}")
        return len(live)

    def cut_after(self, nbytes: int) -> None:
        """Cut the next connection (or the open ones) after ``nbytes`` more bytes went down."""
        for conn in self.connections:
            if not conn.scope.cancel_called:
                conn.cut_after = conn.down_bytes + nbytes
        self._next_cut_after = nbytes
        self._note("cut-after", f"{nbytes} bytes")

    def stall(self, seconds: float) -> None:
        """Forward nothing downstream for ``seconds`` without closing anything."""
        self._stalled_until = max(self._stalled_until, trio.current_time() + seconds)
        self._note("stall", f"{seconds}s")

    def delay(self, seconds: float) -> None:
        self.delay_seconds = seconds
        self._note("delay", f"{seconds}s per chunk")

    def slice(self, nbytes: int, pause: float = 0.0) -> None:
        self.slice_bytes, self.slice_pause = max(1, nbytes), pause
        self._note("slice", f"{nbytes} bytes, {pause}s apart")

    def throttle(self, bytes_per_second: float | None) -> None:
        self.throttle_bps = bytes_per_second
        self._note("throttle", f"{bytes_per_second} B/s")

    def refuse(self, seconds: float) -> None:
        """New connections are reset at once for ``seconds`` (the network is down)."""
        self._refuse_until = trio.current_time() + seconds
        self._note("refuse", f"{seconds}s")

    def clear(self) -> None:
        self._stalled_until = self._refuse_until = 0.0
        self.delay_seconds, self.slice_bytes, self.slice_pause, self.throttle_bps = 0.0, None, 0.0, None
        self._next_cut_after = None
        self._note("clear")

    def schedule(self, after: float, action, *args, **kwargs) -> None:
        """Run a fault ``after`` seconds from now (e.g. ``proxy.schedule(2, proxy.cut)``)."""

        async def later() -> None:
            await trio.sleep(after)
            action(*args, **kwargs)

        self._nursery.start_soon(later)

    # -- forwarding -----------------------------------------------------------------------
    async def _handle(self, client: trio.SocketStream) -> None:
        self._count += 1
        conn = _Connection(client, self._count, self._ids)
        if trio.current_time() < self._refuse_until or len(self.connections) >= self.max_connections:
            self._note("refused", f"connection {conn.number}")
            _set_rst(client)
            await client.aclose()
            return
        if self._next_cut_after is not None:
            conn.cut_after, self._next_cut_after = self._next_cut_after, None
        self.connections.append(conn)
        try:
            with conn.scope:
                try:
                    conn.server = await trio.open_tcp_stream(*self.target)
                except OSError as exc:
                    self._note("target-unreachable", str(exc))
                    conn.rst = True
                    conn.end("unreachable")
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump_up, conn, nursery.cancel_scope)
                    nursery.start_soon(self._pump_down, conn, nursery.cancel_scope)
        finally:
            self.connections.remove(conn)
            conn.end("proxy-exit")  # nothing else ended it: the proxy stopped (a kept-alive connection)
            conn.closed_at = time.monotonic()
            self._ended.append(conn.wire())
            if conn.rst:
                _set_rst(client)
            with trio.CancelScope(shield=True):
                await client.aclose()
                if conn.server is not None:
                    await conn.server.aclose()

    async def _pump_up(self, conn: _Connection, done: trio.CancelScope) -> None:
        try:
            while chunk := await conn.client.receive_some(65536):
                await conn.server.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        # A client half-close is rare for HTTP; treat it as the end of the connection.
        conn.end("client")
        done.cancel()

    async def _pump_down(self, conn: _Connection, done: trio.CancelScope) -> None:
        # A reader stamps each chunk on arrival and a writer shapes it, so that a delay is
        # latency added to every chunk rather than a slower pipe. The channel is bounded.
        send, receive = trio.open_memory_channel[tuple[float, bytes]](64)

        async def read() -> None:
            async with send:
                try:
                    while chunk := await conn.server.receive_some(65536):
                        conn.received.feed(chunk, time.monotonic())
                        await send.send((trio.current_time(), chunk))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                async with receive:
                    async for arrived, chunk in receive:
                        if self.delay_seconds:
                            await trio.sleep_until(arrived + self.delay_seconds)
                        await self._forward(conn, chunk)
            conn.end("target")  # the target closed, and all it sent went on
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.end("client")
        done.cancel()

    async def _forward(self, conn: _Connection, chunk: bytes) -> None:
        if trio.current_time() < self._stalled_until:
            await trio.sleep_until(self._stalled_until)
        if conn.cut_after is not None and conn.down_bytes + len(chunk) >= conn.cut_after:
            keep = conn.cut_after - conn.down_bytes
            if keep > 0:
                await conn.client.send_all(chunk[:keep])
                conn.down_bytes += keep
                conn.forwarded.feed(chunk[:keep], time.monotonic())
            self._note("cut", f"connection {conn.number} after {conn.down_bytes} bytes")
            conn.end("cut")
            conn.scope.cancel()
            await trio.lowlevel.checkpoint()
            return
        piece = self.slice_bytes or len(chunk)
        if self.throttle_bps:
            piece = min(piece, max(1, int(self.throttle_bps / 20)))
        for start in range(0, len(chunk), piece):
            part = chunk[start:start + piece]
            await conn.client.send_all(part)
            conn.down_bytes += len(part)
            conn.forwarded.feed(part, time.monotonic())
            if self.throttle_bps:
                await trio.sleep(len(part) / self.throttle_bps)
            if self.slice_bytes and self.slice_pause:
                await trio.sleep(self.slice_pause)


def _set_rst(stream: trio.SocketStream) -> None:
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
