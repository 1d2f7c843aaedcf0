"""A run's places for cases running at once: a case that waits on another case's shared recording
lends its place to a case with work to do, so ``parallel`` counts cases working, not cases waiting."""

from __future__ import annotations

import contextvars
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

__all__ = ["Places", "lent_place"]


class _Place:
    """One case's place; the case's task and its children share it (a context variable)."""

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self._limiter = limiter
        self.held = False

    async def take(self) -> None:
        await self._limiter.acquire_on_behalf_of(self)
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self._limiter.release_on_behalf_of(self)


_current: contextvars.ContextVar[_Place | None] = contextvars.ContextVar("sse_harness_place", default=None)


class Places:
    """At most ``count`` cases hold a place at once."""

    def __init__(self, count: int) -> None:
        self._limiter = trio.CapacityLimiter(max(1, count))

    @property
    def held(self) -> int:
        return self._limiter.borrowed_tokens

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Run the body (one case) in a place of its own."""
        place = _Place(self._limiter)
        await place.take()
        token = _current.set(place)
        try:
            yield
        finally:
            _current.reset(token)
            place.give_back()


@asynccontextmanager
async def lent_place() -> AsyncIterator[None]:
    """Wait in the body without a place (it does no work of its own), then take one again.
    Outside a place (an exclusive case, a case run alone) this only runs the body. On an
    exception the place is not taken again: the case is ending."""
    place = _current.get()
    if place is None or not place.held:
        yield
        return
    place.give_back()
    yield
    await place.take()
