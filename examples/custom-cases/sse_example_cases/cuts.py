"""Case 100.2, a stream under cuts: our job's stream, cut twice mid-way, resumes by Last-Event-ID
with every event exactly once (what a phone on a flaky network gets)."""

from __future__ import annotations

from urllib.parse import urlsplit

import trio

from harness import Context, FaultProxy, HarnessError, Judge, ReconnectPolicy, Segment, Skip, case, checks

CUT_AFTER_BYTES = 1500  # into each of the first two connections: mid-stream for any job of ours
CUTS = 2


@case("100.2", "cut twice mid-stream, our job's stream resumes with every event once", invariants=("ours: resume",))
async def resumes_after_two_cuts(ctx: Context, judge: Judge) -> None:
    target = urlsplit(ctx.target)
    if target.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise Skip("the fault proxy forwards to this host only: run the target on 127.0.0.1")
    knobs = ctx.knobs(stageSeconds=ctx.quick(**{ctx.profile.stages[-1]: 2.0})) if ctx.profile.knobs else {}
    job_id = await ctx.create_job(judge, **knobs)
    path = urlsplit(ctx.api.events_url(job_id)).path
    async with FaultProxy(target.port or 80) as proxy, trio.open_nursery() as nursery:
        clean: list[Segment] = []

        async def watch_clean() -> None:  # the same job uninterrupted: what every reader is owed
            clean.append(await ctx.watch(job_id))

        async def cut_the_next_one_too(segment: Segment) -> None:
            if len([e for e in proxy.log if e.action == "cut-after"]) < CUTS:
                proxy.cut_after(CUT_AFTER_BYTES)

        nursery.start_soon(watch_clean)
        proxy.cut_after(CUT_AFTER_BYTES)
        trace = await ctx.follow(proxy.url(path), policy=ReconnectPolicy(max_attempts=5),
                                 on_segment=cut_the_next_one_too)
    judge.evidence["connections"] = [{"end": s.end, "events": len(s.events), "lastEventIdSent": s.last_event_id_sent}
                                     for s in trace.segments]
    if len(trace.segments) < CUTS + 1:
        if trace.gave_up:
            judge.fail("the stream stopped before our cuts could land", f"{CUTS} cuts, then the rest", trace.gave_up)
            return
        raise HarnessError(f"only {len(trace.segments) - 1} cut(s) landed: the job's stream carried too few bytes")
    received = [e for s in trace.segments for e in s.events]
    judge.step(f"{len(trace.segments)} connections, {len(received)} events; uninterrupted: {len(clean[0].events)}")
    judge.add(checks.check_ids(received))
    judge.add(checks.check_replay(received, clean[0].events))
