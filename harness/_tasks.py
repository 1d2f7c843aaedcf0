"""Our background tasks around a caller's block, without wrapping the caller's exception."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

import trio

__all__ = ["background_nursery"]


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
