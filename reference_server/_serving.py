"""Hypercorn's trio worker, trimmed to plain TCP: writes without waiting where possible, and a limit where not.

Why: with thousands of event streams the cost per event is the server's whole budget
(benchmarks/streams.py; figures in docs/reference-server.md).

1. Hypercorn's ``TCPServer.protocol_send`` takes a lock and a shielded ``send_all`` for every
   write: two scheduler round trips. When nothing holds the connection's send lock, no write
   is in progress or waiting, so the bytes may go straight to the non-blocking socket. Only
   what the kernel does not take (or an error) goes hypercorn's way, which keeps order,
   back-pressure and error handling exactly hypercorn's.
2. ``Connections.for_scope`` gives the event-stream route a ``BodyWriter`` for its request's
   HTTP/1.1 connection: a synchronous "frame this with h11 and give it to the kernel now".
   The route uses it from the event log's append, so a live event reaches a caught-up
   subscriber without waking that subscriber's task or passing hypercorn's ASGI layers.
3. Connections are accepted in batches: as many as the kernel has queued (up to ACCEPT_BATCH)
   each time the listening socket is readable. trio's ``serve_listeners`` accepts one per pass
   of the scheduler; past saturation a pass takes hundreds of milliseconds, and a burst of
   thousands of new streams waited minutes in the kernel's queue while the streams already
   open were served (docs/reference-server.md, "Past the knee").
4. A write that must wait (the kernel's buffer for that client is full) waits at most
   ``patience`` seconds without progress, or until shutdown: then the connection is closed.
   Hypercorn shields such a write without limit, so a client that stops reading would hold
   its task, its socket and the server's shutdown forever. Closed, it reconnects with
   Last-Event-ID and loses nothing: the event log still has everything.

Everything else is hypercorn 0.18's ``worker_serve`` without TLS, QUIC and worker recycling,
which this server does not use; the version range in pyproject.toml pins what this mirrors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import errno
import logging
import socket
from functools import partial

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, repr_socket_addr, wrap_app

__all__ = ["BodyWriter", "Connections", "serve"]

_log = logging.getLogger("reference_server")

# Connections taken from the kernel's queue per wake of the listening socket.
ACCEPT_BATCH = 512
# accept() errors that concern one connection only (as trio's SocketListener ignores them).
_IGNORABLE_ACCEPT = {getattr(errno, name) for name in (
    "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH") if hasattr(errno, name)}
# accept() errors that say the process or the system is out of something: wait and retry.
_ACCEPT_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class BodyWriter:
    """The body of the response now being sent on one HTTP/1.1 connection, written synchronously."""

    __slots__ = ("_connection", "_server")

    def __init__(self, server: _DirectWriteTCPServer, connection: h11.Connection) -> None:
        self._server = server
        self._connection = connection

    def ready(self) -> bool:
        """True when no other write is in progress or waiting and the body is being sent."""
        return not self._server.send_lock.locked() and self._connection.our_state is h11.SEND_BODY

    def write_now(self, data: bytes) -> bytes:
        """Frame ``data`` as the body's next piece and hand it to the kernel, never waiting.

        Returns the framed bytes the kernel did not take (``b""`` when all went). They must be
        sent with ``send_rest`` before anything else is written. Call only when ``ready()``.
        """
        framed = self._connection.send(h11.Data(data=data))
        sent = self._server.send_now(framed)
        return framed[sent:] if sent < len(framed) else b""

    async def send_rest(self, rest: bytes) -> None:
        """Send what ``write_now`` left, hypercorn's way (waits for the client, in order)."""
        await self._server.protocol_send(RawData(data=rest))


class Connections:
    """The open connections, by client address (so that an ASGI request can find its own), and
    the rule for a write that has to wait."""

    def __init__(self, patience: float) -> None:
        self.patience = patience  # seconds a waiting write may go without progress
        self._servers: dict[tuple, _DirectWriteTCPServer] = {}
        self._waiting: set[trio.CancelScope] = set()

    def for_scope(self, scope: dict) -> BodyWriter | None:
        """The request's BodyWriter, or None where this server cannot offer one (then use ``send``)."""
        server = self._servers.get(scope.get("client"))
        protocol = getattr(getattr(server, "protocol", None), "protocol", None)
        if not isinstance(protocol, H11Protocol) or type(protocol.connection) is not h11.Connection:
            return None  # not (or no longer) plain HTTP/1.1: an h2c upgrade, a websocket
        return BodyWriter(server, protocol.connection)


    def stop_waiting(self) -> None:
        """Shutting down: writes waiting on clients now, and any from here on, give up at once."""
        self.patience = 0.0
        for scope in self._waiting:
            scope.cancel()


class _DirectWriteTCPServer(TCPServer):
    def __init__(self, connections: Connections, *args) -> None:
        super().__init__(*args)
        self._connections = connections
        self._socket = self.stream.socket._sock  # the stdlib socket under trio's: non-blocking

    async def run(self) -> None:
        try:
            client = parse_socket_addr(self._socket.family, self._socket.getpeername())
        except OSError:
            client = None  # already gone
        if client is not None:
            self._connections._servers[client] = self
        try:
            await super().run()
        finally:
            if client is not None and self._connections._servers.get(client) is self:
                del self._connections._servers[client]

    def send_now(self, data: bytes) -> int:
        """Give ``data`` to the kernel without waiting; how many bytes it took (0 on any error:
        the waiting path meets the error and closes the connection). Only when not locked."""
        try:
            return self._socket.send(data)
        except OSError:
            return 0

    async def protocol_send(self, event: Event) -> None:
        if type(event) is not RawData:
            await super().protocol_send(event)
            return
        data = event.data
        # Not locked means no write in progress and none waiting (trio's Lock hands itself
        # straight to a waiter), so writing now cannot reorder bytes.
        if not self.send_lock.locked():
            sent = self.send_now(data)
            if sent == len(data):
                return
            data = memoryview(data)[sent:]  # no copy: this write may wait, holding it
        await self._send_waiting(data)

    async def _send_waiting(self, data: bytes | memoryview) -> None:
        """Hypercorn's locked, shielded write, except that a client that takes nothing for
        ``patience`` seconds (or a shutdown) closes the connection."""
        gone = False
        # Shielded as hypercorn's is, and from before taking the lock (we may have written part
        # of this chunk already): a cancelled request must not leave half a chunk on a
        # connection that stays open. The deadline is ours, and it closes the connection.
        with trio.CancelScope(shield=True) as waiting:
            self._connections._waiting.add(waiting)
            try:
                async with self.send_lock:
                    view = memoryview(data)
                    while view:
                        waiting.deadline = trio.current_time() + self._connections.patience
                        sent = await self.stream.socket.send(view)
                        view = view[sent:]
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                gone = True
            finally:
                self._connections._waiting.discard(waiting)
        gave_up = waiting.cancelled_caught
        if gave_up or gone:
            if gave_up:
                _log.info("closing a connection: its client took no bytes for %.1f s", self._connections.patience)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
                await self.protocol.handle(Closed())


async def serve(app: Callable, config: Config, connections: Connections, *,
                shutdown_trigger: Callable[[], Awaitable[None]],
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve an ASGI app on ``config.bind`` until ``shutdown_trigger`` returns; started with the binds.

    ``connections`` learns each connection for as long as it is open.
    """
    app = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: dict = {}
    lifespan = Lifespan(app, config, state)
    context = WorkerContext(None)
    sockets = config.create_sockets()
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            binds = []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                sock.setblocking(False)
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            task_status.started(binds)
            try:
                async with trio.open_nursery() as nursery:
                    handler = partial(_DirectWriteTCPServer, connections, app, config, context,
                                      ConnectionState(state.copy()))
                    for sock in sockets.insecure_sockets:
                        nursery.start_soon(_accept_batches, sock, handler, server_nursery)
                    await shutdown_trigger()
                    nursery.cancel_scope.cancel()
            finally:
                for sock in sockets.insecure_sockets:
                    sock.close()
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _accept_batches(listening: socket.socket, handler: Callable, handler_nursery: trio.Nursery) -> None:
    """Accept connections on ``listening`` for ever, each served by ``handler(stream)`` in
    ``handler_nursery``: every time the socket is readable, everything queued (at most
    ACCEPT_BATCH) in one go, then back to the scheduler."""
    while True:
        await trio.lowlevel.wait_readable(listening)
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = listening.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _IGNORABLE_ACCEPT:
                    continue
                if exc.errno not in _ACCEPT_CAPACITY:
                    raise
                _log.error("accept failed: %s; retrying in 0.1 s", exc)
                await trio.sleep(0.1)
                break
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(connection))
            handler_nursery.start_soon(_run_handler, handler, stream)


async def _run_handler(handler: Callable, stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)
