"""Family 8, failure path: failAt each stage, and warnAt."""

from __future__ import annotations

import trio
from harness import checks

from ._core import Context, Judge, Skip, case
from ._shared import ResourceWatcher, data_of, verify_cleanup

CONTRACT_STAGES = ("script", "tts", "visuals", "compose", "render")


def _fail_case(number: int, name: str):
    @case(f"8.{number}", f"failAt stage {number} ({name}): error, then job-failed, cleaned up", invariants=("3", "7"))
    async def fail_at(ctx: Context, judge: Judge) -> None:
        if number > len(ctx.profile.stages):
            raise Skip(f"the target has {len(ctx.profile.stages)} stages")
        stage = ctx.profile.stages[number - 1]
        # A short stall before the failure lets the watcher see the job's resources first.
        job_id = await ctx.create_job(judge, **ctx.knobs(failAt=stage, stageSeconds=ctx.quick(),
                                                         stallSeconds={stage: 0.3}))
        watcher = ResourceWatcher(ctx, job_id)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.run)
            segment = await ctx.watch(job_id)
            nursery.cancel_scope.cancel()
        events = segment.events
        types = [e.type for e in events]
        judge.evidence["lastEvents"] = types[-3:]
        ctx.expect_delivered(judge, segment, f"the failure in {stage}: an error event, then {ctx.events['failed']}")
        judge.add(checks.check_terminal(segment, ctx.profile, close_within=ctx.close_within,
                                        starvation=ctx.starved()))
        judge.add(checks.check_ids(events))
        errors = data_of(events, ctx.events["error"])
        failed = data_of(events, ctx.events["failed"])
        if not judge.expect(bool(failed), "no job-failed event", ctx.events["failed"], types[-3:]):
            return
        judge.expect(bool(errors) and types.index(ctx.events["error"]) < types.index(ctx.events["failed"]),
                     "no error event before job-failed", [ctx.events["error"], ctx.events["failed"]], types[-3:])
        if errors:
            judge.expect(errors[0].get("stage") == stage, "error event names the wrong stage", stage, errors[0].get("stage"))
        error = failed[0].get("error") if isinstance(failed[0].get("error"), dict) else {}
        judge.evidence["error"] = error
        for key in ("code", "message"):
            judge.expect(isinstance(error.get(key), str) and error.get(key), f"job-failed error lacks {key}", "text",
                         error.get(key))
        judge.expect(isinstance(error.get("remediation"), list) and error["remediation"],
                     "job-failed error lacks a remediation list", "[...]", error.get("remediation"))
        judge.expect(failed[0].get("stage") == stage, "job-failed names the wrong stage", stage, failed[0].get("stage"))
        snap = await ctx.api.snapshot(job_id)
        body = snap.json if isinstance(snap.json, dict) else {}
        judge.expect(body.get("status") == ctx.profile.statuses["failed"], "snapshot status after failure",
                     ctx.profile.statuses["failed"], body.get("status"))
        judge.expect(isinstance(body.get("error"), dict), "snapshot has no error object", "{code,...}", body.get("error"))
        art = await ctx.api.artifact(job_id, ctx.profile.artifact)
        judge.expect(art.status == 404, "a failed job published its artifact", 404, art.status)
        verify_cleanup(ctx, judge, watcher, failed[0].get("cleanup"))

    return fail_at


for _number, _name in enumerate(CONTRACT_STAGES, start=1):
    _fail_case(_number, _name)


@case("8.6", "warnAt: a warning in that stage, and the job still completes", invariants=("3",))
async def warn_at(ctx: Context, judge: Judge) -> None:
    stage = ctx.profile.stages[min(2, len(ctx.profile.stages) - 1)]
    job_id = await ctx.create_job(judge, **ctx.knobs(warnAt=stage, stageSeconds=ctx.quick()))
    segment = await ctx.watch(job_id)
    events = segment.events
    ctx.expect_delivered(judge, segment, "the job's next event, up to its terminal event")
    warnings = [d for d in data_of(events, ctx.events["warning"]) if d.get("stage") == stage]
    judge.evidence["warnings"] = data_of(events, ctx.events["warning"])
    if judge.expect(bool(warnings), f"no warning in {stage}", stage, None):
        for key in ("code", "message"):
            judge.expect(bool(warnings[0].get(key)), f"warning lacks {key}", "text", warnings[0].get(key))
    judge.expect(bool(events) and events[-1].type == ctx.events["completed"], "the job did not complete after a warning",
                 ctx.events["completed"], events[-1].type if events else None)
    judge.add(checks.check_terminal(segment, ctx.profile, close_within=ctx.close_within,
                                    starvation=ctx.starved()))
