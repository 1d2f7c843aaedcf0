"""Our background tasks around a caller's block, without wrapping the caller's exception."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Self

import trio

__all__ = ["BackgroundServer", "background_nursery"]


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@contextlib.asynccontextmanager
async def background_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose tasks serve the block and are cancelled when it ends.

    A nursery wraps whatever leaves it in an ExceptionGroup; a caller's own exception
    (``KeyError('mine')`` raised in the ``async with`` body) must come out as itself. When
    exactly one exception is in the group, it is re-raised unwrapped, its own cause and
    context intact; several stay grouped (nothing is lost).
    """
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) != 1:
            raise
        leaf = leaves[0]
        cause, context, suppress = leaf.__cause__, leaf.__context__, leaf.__suppress_context__
        try:
            raise leaf
        finally:
            leaf.__cause__, leaf.__context__, leaf.__suppress_context__ = cause, context, suppress
            del leaf, group


class BackgroundServer:
    """A TCP server for the length of an ``async with`` block: each connection is handed to
    ``self._handle`` in the background, on ``self.listen`` (host, port; port 0: any free one),
    and ``self.port`` is the port it got. The block's own exception leaves as itself."""

    listen: tuple[str, int] = ("127.0.0.1", 0)
    port = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            self._nursery = await stack.enter_async_context(background_nursery())
            listeners = await trio.open_tcp_listeners(self.listen[1], host=self.listen[0])
            self.port = listeners[0].socket.getsockname()[1]
            self._nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc) -> bool | None:
        return await self._stack.__aexit__(*exc)
