"""A case waiting on another case's shared recording lends its place: ``parallel`` counts cases
at work, never more, and a cancelled wait leaves no place taken."""

import httpx
import pytest
import trio

from harness import load_profile
from harness._context import Context
from harness._places import Places


@pytest.fixture
async def ctx():
    async with httpx.AsyncClient() as http:  # no request is sent: only ctx.shared is used
        yield Context(load_profile(base_url="http://127.0.0.1:9"), http, same_host=True)


async def test_a_case_waiting_on_a_shared_recording_lends_its_place(ctx, autojump_clock):
    places = Places(2)
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    most_held = 0

    async def record():
        await trio.sleep(10)
        return "recording"

    async def sharing(name):
        async with places.place():
            started[name] = trio.current_time()
            assert await ctx.shared("k", record) == "recording"
            ended[name] = trio.current_time()

    async def working():
        async with places.place():
            started["worker"] = trio.current_time()
            await trio.sleep(1)

    async def watch():
        nonlocal most_held
        while True:
            most_held = max(most_held, places.held)
            await trio.sleep(0.1)

    async with trio.open_nursery() as watcher:
        watcher.start_soon(watch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sharing, "maker")
            await trio.sleep(0.5)
            nursery.start_soon(sharing, "waiter")
            await trio.sleep(0.5)
            nursery.start_soon(working)
        watcher.cancel_scope.cancel()
    start = min(started.values())
    assert started["worker"] - start < 2  # held back until t=10 if the waiter kept its place
    assert ended["maker"] == ended["waiter"] == start + 10
    assert most_held <= 2 and places.held == 0


async def test_a_wait_cancelled_leaves_no_place_taken(ctx, autojump_clock):
    places = Places(2)

    async def sharing():
        async with places.place():
            await ctx.shared("k", lambda: trio.sleep(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sharing)  # makes it
        await trio.sleep(1)
        async with trio.open_nursery() as waiting:
            waiting.start_soon(sharing)
            await trio.sleep(1)
            assert places.held == 1  # the waiter lent its place
            waiting.cancel_scope.cancel()
        assert places.held == 1  # and did not take it again when cancelled
    assert places.held == 0
