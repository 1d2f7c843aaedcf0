"""Family 7, concurrency: many jobs at once, isolation, cancel one of many, fan-out, the queue API."""

from __future__ import annotations

import trio

from harness import Segment, checks

from ._core import Context, Judge, case, parse_data
from ._shared import lifecycle
from .transport import expect_problem


async def run_many(ctx: Context, judge: Judge, count: int, *, cancel_index: int | None = None) -> tuple[list[str], list[Segment]]:
    knobs = ctx.knobs(stageSeconds=ctx.quick(**{ctx.profile.stages[1]: 1.5}))
    ids = [await ctx.create_job(None, **knobs) for _ in range(count)]
    judge.step(f"created {count} jobs at once")
    segments: list[Segment | None] = [None] * count

    async def watch(i: int) -> None:
        segments[i] = await ctx.watch(ids[i])

    async with trio.open_nursery() as nursery:
        for i in range(count):
            if i != cancel_index:
                nursery.start_soon(watch, i)
        if cancel_index is not None:
            stage = ctx.profile.stages[1]
            async with ctx.live(ids[cancel_index]) as live:
                await live.wait_for(lambda e: (parse_data(e) or {}).get("stage") == stage, within=ctx.job_timeout,
                                    awaited=f"job {cancel_index + 1}'s stage {stage}",
                                    basis="the profile's job_timeout_seconds")
                reply = await ctx.api.cancel(ids[cancel_index])
                judge.step(f"cancelled job {cancel_index + 1} of {count} mid-run: HTTP {reply.status}")
                if reply.status == 202:
                    await live.wait_for_end_after_cancel(f"job {cancel_index + 1}'s terminal event after the cancel's 202")
                segments[cancel_index] = await live.finish()
    return ids, segments


def judge_isolated(ctx: Context, judge: Judge, ids: list[str], segments: list[Segment], *, cancelled: int | None) -> None:
    outcomes = []
    for i, (job_id, segment) in enumerate(zip(ids, segments)):
        events = segment.events
        late = ctx.overdue(segment, f"job {i + 1}'s next event, up to its terminal event")
        judge.add(late)
        judge.add(checks.check_job_and_ts(events, job_id))
        judge.add(checks.check_ids(events))
        judge.add(checks.check_progress(events, ctx.profile))
        last = events[-1].type if events else None
        outcomes.append(last)
        wanted = ctx.events["cancelled"] if i == cancelled else ctx.events["completed"]
        if not late:  # a stream cut short at its deadline has that finding: its missing end is part of it
            judge.expect(last == wanted, f"job {i + 1} ended wrongly", wanted, last)
    judge.evidence["endings"] = outcomes


@case("7.1", "8 jobs at once: each stream holds only its job, all complete", invariants=("8", "1", "4"))
async def eight_jobs(ctx: Context, judge: Judge) -> None:
    ids, segments = await run_many(ctx, judge, 8)
    judge_isolated(ctx, judge, ids, segments, cancelled=None)


@case("7.2", "cancel one of 8 mid-run: the other 7 complete unchanged", invariants=("8", "7"))
async def cancel_one_of_eight(ctx: Context, judge: Judge) -> None:
    ids, segments = await run_many(ctx, judge, 8, cancel_index=3)
    judge_isolated(ctx, judge, ids, segments, cancelled=3)
    for i, job_id in enumerate(ids):
        # A job whose stream was cut short at its deadline has that finding; its artifact is not
        # owed yet (the job had not ended), and asking for it would blame the target twice.
        if i != 3 and not ctx.overdue(segments[i], ""):
            art = await ctx.api.artifact(job_id, ctx.profile.artifact)
            judge.expect(art.status == 200 and len(art.body) > 0, f"job {i + 1}'s artifact is missing", 200, art.status)


@case("7.3", "20 subscribers on one job see identical sequences", invariants=("6", "8"))
async def twenty_subscribers(ctx: Context, judge: Judge) -> None:
    job_id = await ctx.create_job(judge, **ctx.knobs(stageSeconds=ctx.quick(**{ctx.profile.stages[0]: 0.5})))
    segments: list[Segment] = []

    async def watch() -> None:
        segments.append(await ctx.watch(job_id))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(watch)
    reference = max(segments, key=lambda s: len(s.events)).events
    judge.evidence["eventsPerSubscriber"] = sorted({len(s.events) for s in segments})
    for segment in segments:
        judge.add(checks.check_replay(segment.events, reference))
        judge.add(checks.check_ids(segment.events))
    judge.step(f"20 subscribers, {len(reference)} events each")


@case("7.4", "queue stats agree with the jobs listed and with snapshots", invariants=("8",))
async def queue_stats(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    reply = await ctx.api.queue()
    body = reply.json if isinstance(reply.json, dict) else {}
    if not judge.expect(reply.status == 200 and isinstance(body.get("jobs"), list) and isinstance(body.get("stats"), dict),
                        "queue answer lacks jobs and stats", 200, reply.describe()):
        return
    stats = body["stats"]
    counts: dict[str, int] = {}
    for job in body["jobs"]:
        counts[job.get("status")] = counts.get(job.get("status"), 0) + 1
    judge.evidence.update(stats=stats, counted=counts)
    judge.expect(stats.get("total") == len(body["jobs"]), "stats.total differs from the jobs listed", len(body["jobs"]),
                 stats.get("total"))
    for key, word in ctx.profile.statuses.items():
        judge.expect(stats.get(key, 0) == counts.get(word, 0), f"stats.{key} differs from the jobs listed",
                     counts.get(word, 0), stats.get(key))
    listed = {j.get("jobId"): j.get("status") for j in body["jobs"]}
    judge.expect(listed.get(recording.job_id) == ctx.profile.statuses["completed"],
                 "a completed job is missing or wrong in the queue", "completed", listed.get(recording.job_id))
    # Terminal jobs cannot change: their listed status must be their snapshot's.
    terminal = [job_id for job_id, status in listed.items() if status in ctx.profile.terminal_statuses][:10]
    for job_id in terminal:
        snap = await ctx.api.snapshot(job_id)
        status = snap.json.get("status") if isinstance(snap.json, dict) else snap.status
        judge.expect(status == listed[job_id], "queue and snapshot disagree on a finished job", listed[job_id], status)
    judge.step(f"compared {len(terminal)} finished jobs' queue entries with their snapshots")


@case("7.5", "queue status filter returns only the asked statuses", invariants=("8",))
async def queue_filter(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    # A job that is surely not finished while we ask: the filter must leave it out.
    busy = await ctx.create_job(judge, **ctx.knobs(stallSeconds={ctx.profile.stages[0]: 30}))
    try:
        wanted = [ctx.profile.statuses["completed"], ctx.profile.statuses["canceled"]]
        reply = await ctx.api.queue(",".join(wanted))
        jobs = reply.json.get("jobs") if isinstance(reply.json, dict) else None
        if not judge.expect(reply.status == 200 and isinstance(jobs, list), "filtered queue failed", 200,
                            reply.describe()):
            return
        wrong = [j for j in jobs if j.get("status") not in wanted]
        judge.expect(not wrong, "jobs of other statuses listed", wanted, [j.get("status") for j in wrong][:5])
        judge.expect(all(j.get("jobId") != busy for j in jobs), "an unfinished job passed the filter", "absent", busy)
        judge.expect(any(j.get("jobId") == recording.job_id for j in jobs), "a completed job is missing from the filter",
                     recording.job_id, None)
    finally:
        await ctx.api.cancel(busy)


@case("7.6", "an unknown status filter is a 400 problem", invariants=("9",))
async def queue_bad_filter(ctx: Context, judge: Judge) -> None:
    expect_problem(judge, await ctx.api.queue("nonsense"), 400, "queue?status=nonsense")
