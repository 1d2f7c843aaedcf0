"""Family 6, cancellation: in every stage, while queued, during a stall; idempotence and errors."""

from __future__ import annotations

import time

import trio

from harness import Event, checks

from ._core import Context, Judge, Measure, Plot, Skip, case, parse_data
from ._queue import queued_job
from ._shared import ResourceWatcher, lifecycle, verify_cleanup
from .transport import expect_problem

CONTRACT_STAGES = ("script", "tts", "visuals", "compose", "render")
LATENCY = Plot("across", "cancelLatencyMs", "cancel latency per case (ms)", unit=" ms", limit=("deadlineMs",))
CANCEL_LATENCY = (Measure("cancel latency", "ms", ("cancelLatencyMs",), 5.0),)


async def cancel_and_judge(ctx: Context, judge: Judge, job_id: str, ready, *, expect_stage: str | None,
                           awaited: str, ready_within: float, ready_basis: str, settle: float = 0.0,
                           between_events: float | None = None) -> None:
    """Watch the job; once ``ready(event)`` says so, cancel; then judge the ending."""
    watcher = ResourceWatcher(ctx, job_id)
    limits = ctx.limits() if between_events is None else ctx.limits(between_events=between_events)
    async with ctx.live(job_id, limits=limits) as live, trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run)
        try:
            aimed_at = await live.wait_for(ready, within=ready_within, awaited=awaited, basis=ready_basis)
            await trio.sleep(settle)
            await watcher.poll_once()
            sent = time.monotonic()
            reply = await ctx.api.cancel(job_id)
            answered = time.monotonic()
            judge.step(f"POST cancel: HTTP {reply.status} after {(answered - sent) * 1000:.0f} ms")
            if reply.status == 202:
                await live.wait_for_end_after_cancel(f"{ctx.events['cancelled']} after the cancel's 202")
            segment = await live.finish()
        finally:
            nursery.cancel_scope.cancel()
    if reply.status != 202 and _lost_the_race(ctx, judge, segment, aimed_at, answered):
        return
    judge.expect(reply.status == 202, "cancel was not accepted", 202, reply.status)
    body = reply.json if isinstance(reply.json, dict) else {}
    judge.expect(body.get("status") == ctx.profile.statuses["canceling"] and body.get("jobId") == job_id,
                 "cancel reply body", {"jobId": job_id, "status": ctx.profile.statuses["canceling"]},
                 {k: body.get(k) for k in ("jobId", "status", "cleanupScheduled")})
    events = segment.events
    cancelled = [e for e in events if e.type == ctx.events["cancelled"]]
    if not judge.expect(bool(cancelled), "no cancellation event", ctx.events["cancelled"],
                        [e.type for e in events[-3:]]):
        return
    latency = cancelled[0].arrived_at - sent
    deadline = ctx.cancel_deadline
    during = ctx.starved().explained(sent, cancelled[0].arrived_at)
    judge.evidence["cancelLatencyMs"] = round(latency * 1000, 1)
    judge.evidence["deadlineMs"] = deadline * 1000
    judge.evidence["starvation"] = during.figures()
    # ctx.cancel_limit: 100 ms on top of the deadline covers our own request and read on this host.
    judge.add(checks.over_limit("the job did not end within the cancel deadline", measured=latency,
                                limit=ctx.cancel_limit, explained=during,
                                expected=f"<= {deadline * 1000:.0f} ms", observed=f"{latency * 1000:.0f} ms",
                                event_id=cancelled[0].id))
    data = parse_data(cancelled[0]) or {}
    judge.expect(data.get("status") == ctx.profile.statuses["canceled"], "cancellation event status",
                 ctx.profile.statuses["canceled"], data.get("status"), cancelled[0].id)
    if expect_stage is not None and data.get("stage") != expect_stage:
        moved_on = next((e for e in events if int(e.id or 0) > int(aimed_at.id or 0)
                         and (parse_data(e) or {}).get("stage") not in (None, expect_stage)), None)
        # The cancel took effect when the job says it was cancelled (its ts): a stage that ended
        # before that was missed by a cancel that came late, our request or the target's work.
        took_effect = data.get("ts")
        took_effect = took_effect / 1000 - segment.wall_offset if isinstance(took_effect, (int, float)) else answered
        if moved_on is None or not _raced(ctx, judge, segment, aimed_at, moved_on, took_effect,
                                          f"stage {expect_stage} ended ({moved_on.id}: {moved_on.type} in "
                                          f"{(parse_data(moved_on) or {}).get('stage')}) before the cancel took "
                                          f"effect"):
            judge.fail("cancelled in the wrong stage", expect_stage, data.get("stage"))
    judge.add(checks.check_terminal(segment, ctx.profile, close_within=ctx.close_within,
                                    starvation=ctx.starved()))
    judge.add(checks.check_ids(events))
    snap = await ctx.api.snapshot(job_id)
    status = snap.json.get("status") if isinstance(snap.json, dict) else snap.status
    judge.expect(status == ctx.profile.statuses["canceled"], "snapshot after cancel", ctx.profile.statuses["canceled"], status)
    art = await ctx.api.artifact(job_id, ctx.profile.artifact)
    judge.expect(art.status == 404, "a cancelled job published its artifact", 404, art.status)
    verify_cleanup(ctx, judge, watcher, data.get("cleanup"))


def _lost_the_race(ctx: Context, judge: Judge, segment, aimed_at: Event, answered: float) -> bool:
    """A cancel refused because the job had already ended is no fault of the target's refusal (a
    finished job's cancel is a 409): the cancel came too late for what it was aimed at (``_raced``)."""
    ended = next((e for e in segment.events if e.type in ctx.profile.terminal_events), None)
    return ended is not None and _raced(ctx, judge, segment, aimed_at, ended, answered,
                                        f"the job ended ({ended.id}:{ended.type}) before the cancel reached it")


def _raced(ctx: Context, judge: Judge, segment, aimed_at: Event, moved_on: Event, until: float,
           message: str) -> bool:
    """Whether the cancel lost a race: what it was aimed at (the job running, a stage) was over by
    the target's ts (``moved_on``) before the cancel took effect (``until``: answered, or the
    job's cancelled event). Then it is judged as a timing,
    and True is returned: from the event the cancel was aimed at to the cancel's answer, against
    the time the job still had then (both by the target's ts). When the machine's starvation in
    that window explains why we were late, the case is confounded (tried again); when it does
    not, the target moved on sooner than it was asked to, and that is what is reported. False:
    the target moved on after answering, and its verdict is its own."""
    over_ts = (parse_data(moved_on) or {}).get("ts")
    aimed_ts = (parse_data(aimed_at) or {}).get("ts")
    if not (isinstance(over_ts, (int, float)) and isinstance(aimed_ts, (int, float))):
        return False
    over_at, aimed_at_time = over_ts / 1000 - segment.wall_offset, aimed_ts / 1000 - segment.wall_offset
    if over_at > until:
        return False
    judge.evidence["cancelTooLate"] = {"stillHadMs": round((over_at - aimed_at_time) * 1000),
                                       "cancelTookMs": round((until - aimed_at_time) * 1000)}
    judge.add(checks.over_limit(
        message, measured=until - aimed_at_time, limit=over_at - aimed_at_time,
        # Two of our own steps lie in this window, one after the other: reading the event the
        # cancel was aimed at, then sending the cancel; each can be held up by a stall of our own.
        explained=ctx.starved().explained(aimed_at_time, until, own_steps=2),
        expected=f"the cancel in effect within the {(over_at - aimed_at_time) * 1000:.0f} ms left after event "
                 f"{aimed_at.id}", observed=f"in effect {(until - aimed_at_time) * 1000:.0f} ms after it",
        event_id=moved_on.id))
    return True


def _in_stage(ctx: Context, stage: str):
    def ready(event: Event) -> bool:
        data = parse_data(event) or {}
        # Wait for real work in the stage: its first progress past 0 (or its start when none).
        return event.type == ctx.events["progress"] and data.get("stage") == stage and (data.get("stagePercent") or 0) > 0
    return ready


def _stage_case(number: int, name: str):
    @case(f"6.{number}", f"cancel during stage {number} ({name}): ends within the deadline, cleaned up",
          invariants=("7", "3"), plots=(LATENCY,), measures=CANCEL_LATENCY)
    async def cancel_in_stage(ctx: Context, judge: Judge) -> None:
        if number > len(ctx.profile.stages):
            raise Skip(f"the target has {len(ctx.profile.stages)} stages")
        stage = ctx.profile.stages[number - 1]
        job_id = await ctx.create_job(judge, **ctx.knobs(stageSeconds=ctx.quick(**{stage: 3.0})))
        await cancel_and_judge(ctx, judge, job_id, _in_stage(ctx, stage), expect_stage=stage,
                               awaited=f"progress past 0 in stage {stage}", ready_within=ctx.job_timeout,
                               ready_basis="the profile's job_timeout_seconds")

    return cancel_in_stage


for _number, _name in enumerate(CONTRACT_STAGES, start=1):
    _stage_case(_number, _name)


@case("6.6", "cancel while queued", invariants=("7",), exclusive=True, plots=(LATENCY,), measures=CANCEL_LATENCY)
async def cancel_queued(ctx: Context, judge: Judge) -> None:
    async with queued_job(ctx, judge) as job_id:
        # The queued job's stored events (its status) are owed at once on connecting.
        await cancel_and_judge(ctx, judge, job_id, lambda e: True, expect_stage=None,
                               awaited="the queued job's first event", ready_within=ctx.event_deadline,
                               ready_basis="stored events are owed at once; allowed the events deadline",
                               between_events=ctx.job_timeout)


@case("6.7", "cancel during a stall (no events flowing)", invariants=("7",), plots=(LATENCY,),
      measures=CANCEL_LATENCY)
async def cancel_in_stall(ctx: Context, judge: Judge) -> None:
    stage = ctx.profile.stages[min(3, len(ctx.profile.stages) - 1)]
    job_id = await ctx.create_job(judge, **ctx.knobs(stallSeconds={stage: 20}, stageSeconds=ctx.quick()))

    def stalled(event: Event) -> bool:
        # The stage has begun; the stall follows at once and nothing else will arrive.
        return (parse_data(event) or {}).get("stage") == stage

    await cancel_and_judge(ctx, judge, job_id, stalled, expect_stage=stage, settle=0.5,
                           awaited=f"the start of stage {stage}", ready_within=ctx.job_timeout,
                           ready_basis="the profile's job_timeout_seconds", between_events=20 + ctx.event_deadline)


@case("6.8", "cancel, then again at once: 202 both times while not yet terminal, one ending", invariants=("7",))
async def cancel_twice(ctx: Context, judge: Judge) -> None:
    stage = ctx.profile.stages[min(2, len(ctx.profile.stages) - 1)]
    job_id = await ctx.create_job(judge, **ctx.knobs(stageSeconds=ctx.quick(**{stage: 5.0})))
    replies = {}

    async def cancel(n: int) -> None:
        reply = await ctx.api.cancel(job_id)
        replies[n] = (reply, time.monotonic())

    async with ctx.live(job_id) as live:
        await live.wait_for(_in_stage(ctx, stage), within=ctx.job_timeout, awaited=f"progress past 0 in stage {stage}",
                            basis="the profile's job_timeout_seconds")
        await cancel(1)
        # At once, not concurrently: two racing requests may both be read before either is
        # handled, and then a server that refuses a second cancel while canceling is not seen.
        await cancel(2)
        if any(r.status == 202 for r, _ in replies.values()):
            await live.wait_for_end_after_cancel("a terminal event after the cancel's 202")
        events = (await live.finish()).events
    ended = next((e.arrived_at for e in events if e.type == ctx.events["cancelled"]), None)
    statuses = sorted(r.status for r, _ in replies.values())
    judge.evidence["statuses"] = statuses
    judge.expect(202 in statuses, "neither cancel was accepted", 202, statuses)
    for reply, answered in replies.values():
        if reply.status == 409:
            # Legal only when the job was already terminal: its event must precede the answer.
            judge.expect(ended is not None and ended <= answered + 0.05,
                         "409 for a cancel while the job was still canceling", 202, 409)
        else:
            judge.expect(reply.status == 202, "second cancel answered neither 202 nor 409", "202 or 409", reply.status)
    judge.expect(len([e for e in events if e.type in ctx.profile.terminal_events]) == 1,
                 "not exactly one terminal event", 1, [e.type for e in events if e.type in ctx.profile.terminal_events])


@case("6.9", "cancel a finished job: 409 problem", invariants=("7", "9"))
async def cancel_finished(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    reply = await ctx.api.cancel(recording.job_id)
    expect_problem(judge, reply, 409, "cancel of a completed job")
    snap = await ctx.api.snapshot(recording.job_id)
    status = snap.json.get("status") if isinstance(snap.json, dict) else None
    judge.expect(status == ctx.profile.statuses["completed"], "the completed job changed status", "completed", status)


@case("6.10", "cancel an unknown job: 404 problem", invariants=("7", "9"))
async def cancel_unknown(ctx: Context, judge: Judge) -> None:
    reply = await ctx.api.cancel("AAAAAAAAAAAAAAAAAAAAAA")
    expect_problem(judge, reply, 404, "cancel of an unknown job")
