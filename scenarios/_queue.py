"""Filling a target's capacity so that a job waits in the queue (for the queued cases)."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

import trio

from ._core import Context, Judge, Skip

MAX_BLOCKERS = 48


@contextlib.asynccontextmanager
async def queued_job(ctx: Context, judge: Judge) -> AsyncIterator[str]:
    """Start stalled blocker jobs until a new job stays queued; yield that job; cancel all."""
    knobs = ctx.knobs(stallSeconds={ctx.profile.stages[0]: 30}, stageSeconds=ctx.quick())
    blockers: list[str] = []
    try:
        while len(blockers) < MAX_BLOCKERS:
            job_id = await ctx.create_job(None, **knobs)
            blockers.append(job_id)
            await trio.sleep(0.15)
            reply = await ctx.api.snapshot(job_id)
            if isinstance(reply.json, dict) and reply.json.get("status") == ctx.profile.statuses["queued"]:
                blockers.pop()
                judge.step(f"{len(blockers)} stalled jobs fill the target; job {job_id} is queued")
                judge.evidence["blockers"] = len(blockers)
                try:
                    yield job_id
                finally:
                    blockers.append(job_id)
                return
        raise Skip(f"{MAX_BLOCKERS} running jobs did not fill the target's capacity: no job ever queued")
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            for job_id in blockers:
                await ctx.api.cancel(job_id)
