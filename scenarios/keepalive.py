"""Family 5, keep-alive: comments during a stall and while queued, against the advertised interval."""

from __future__ import annotations

from harness import Segment, checks

from ._core import Context, Judge, Measure, Plot, TargetFault, case
from ._queue import queued_job


def comment_spacing(segment: Segment) -> list[float]:
    times = [c.arrived_at for c in segment.comments]
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


async def stalled_stream(ctx: Context) -> tuple[str, Segment, float]:
    async def make():
        stall = max(3 * ctx.keepalive, 2.5)
        stage = ctx.profile.stages[min(2, len(ctx.profile.stages) - 1)]
        knobs = ctx.knobs(stallSeconds={stage: stall}, stageSeconds=ctx.quick())
        job_id = await ctx.create_job(None, **knobs)
        segment = await ctx.watch(job_id, limits=ctx.limits(read=ctx.keepalive * 2 + 2,
                                                            between_events=stall + ctx.event_deadline))
        if segment.status != 200:
            raise TargetFault(f"stream answered HTTP {segment.status}")
        return job_id, segment, stall

    return await ctx.shared("stalled", make)


def judge_silences(ctx: Context, judge: Judge, segment: Segment, min_comments: int) -> None:
    interval, tolerance = ctx.keepalive, ctx.tolerance(ctx.keepalive)
    silence, at = checks.longest_silence(segment)
    starvation = ctx.starved()
    during = starvation.explained(at, at + silence)
    judge.evidence.update(keepaliveSeconds=interval, toleranceSeconds=tolerance, longestSilence=round(silence, 3),
                          harnessDelayDuringIt=round(during.own, 3), starvation=during.figures(),
                          commentSpacing=comment_spacing(segment), comments=len(segment.comments))
    judge.step(f"longest silence {silence:.2f}s ({during.describe()}) against {interval}s + {tolerance:.2f}s")
    judge.add(checks.check_keepalive(segment, interval=interval, tolerance=tolerance, starvation=starvation))
    judge.expect(len(segment.comments) >= min_comments, "too few keep-alive comments", f">= {min_comments}",
                 len(segment.comments))


SPACING = Plot("bars", "commentSpacing", "spacing of keep-alive comments (s)", unit=" s",
               limit=("keepaliveSeconds", "toleranceSeconds"))
SILENCES = (Measure("keep-alive spacing max", "s", ("commentSpacing",), 0.05, largest=True),
            Measure("longest silence", "s", ("longestSilence",), 0.05))


@case("5.1", "keep-alive comments during a stall, no silence past the interval", invariants=("5",), plots=(SPACING,),
      measures=SILENCES)
async def during_stall(ctx: Context, judge: Judge) -> None:
    job_id, segment, stall = await stalled_stream(ctx)
    judge.step(f"job {job_id} stalls {stall:.1f}s in stage 3; recorded its stream to the end")
    judge_silences(ctx, judge, segment, min_comments=max(1, int(stall / ctx.keepalive) - 1))


@case("5.2", "keep-alive comments while the job waits in the queue", invariants=("5",), exclusive=True,
      plots=(SPACING,), measures=SILENCES)
async def while_queued(ctx: Context, judge: Judge) -> None:
    async with queued_job(ctx, judge) as job_id:
        window = max(3 * ctx.keepalive, 2.5)
        # A queued job owes no event while it waits: the window bounds this watch.
        segment = await ctx.watch(job_id, limits=ctx.limits(total=window, read=ctx.keepalive * 2 + 2,
                                                            between_events=None))
        judge.step(f"watched the queued job for {window:.1f}s")
        judge.expect(segment.status == 200, "queued job's stream refused", 200, segment.status)
        judge_silences(ctx, judge, segment, min_comments=max(1, int(window / ctx.keepalive) - 1))


@case("5.3", "keep-alive comments say keepalive", invariants=("5",))
async def comment_text(ctx: Context, judge: Judge) -> None:
    _, segment, _ = await stalled_stream(ctx)
    texts = sorted({c.text.split(" ")[0] for c in segment.comments})
    judge.evidence["commentWords"] = texts
    if not segment.comments:
        judge.fail("no comments at all during the stall", "keepalive comments", None)
    elif any(not c.text.startswith("keepalive") for c in segment.comments):
        judge.non_strict("keep-alive comment text is not 'keepalive ...' (legal: comments are free text)",
                         "keepalive <time>", texts)
