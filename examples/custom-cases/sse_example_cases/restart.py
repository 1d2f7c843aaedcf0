"""Case 100.3, a restart: a job that finished before our server restarted still has its history
afterwards (its snapshot and its whole stream, replayed from the first event)."""

from __future__ import annotations

from harness import Context, Judge, Skip, TargetFault, case, checks


@case("100.3", "a finished job keeps its snapshot and its stream across a restart (SIGTERM)",
      invariants=("ours: history",), exclusive=True)
async def history_survives_a_restart(ctx: Context, judge: Judge) -> None:
    if ctx.restart is None:
        raise Skip("the harness cannot restart this target: give its profile a [restart] command")
    knobs = ctx.knobs(stageSeconds=ctx.quick()) if ctx.profile.knobs else {}
    job_id = await ctx.create_job(judge, **knobs)
    before = await ctx.watch(job_id)
    ctx.expect_delivered(judge, before, "the finished job's events")
    if not before.events or before.events[-1].type not in ctx.profile.terminal_events:
        raise TargetFault("the job's stream ended without a terminal event", "a terminal event",
                          f"{before.end}: {before.end_detail}")
    snapshot = await ctx.api.snapshot(job_id)
    judge.step(f"job {job_id} ended with {before.events[-1].type}; restarting the target (SIGTERM)")
    await ctx.restart("TERM")  # back once it answers healthz; TargetFault when it does not come back
    after = await ctx.api.snapshot(job_id)
    judge.expect(after.status == 200, "the finished job's snapshot is gone after the restart", 200, after.status)
    if after.status == 200 and isinstance(after.json, dict) and isinstance(snapshot.json, dict):
        judge.expect(after.json.get("status") == snapshot.json.get("status"),
                     "the finished job's status changed across the restart", snapshot.json.get("status"),
                     after.json.get("status"))
    replay = await ctx.watch(job_id)
    judge.evidence.update(eventsBefore=len(before.events), eventsAfter=len(replay.events))
    judge.add(checks.check_replay(replay.events, before.events))
