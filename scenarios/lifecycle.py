"""Family 3, lifecycle: one uninterrupted job judged against invariants 1 to 4 and its artifact."""

from __future__ import annotations

from harness import Starvation, checks

from ._core import Context, Finding, Judge, Measure, Plot, Severity, Skip, case, parse_data
from ._shared import data_of, ffmpeg_exe, lifecycle, probe_mp4


@case("3.1", "ids go 1, 2, 3 ... with no gap or repeat", invariants=("1",))
async def ids(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    events = recording.segment.events
    judge.evidence["ids"] = f"{events[0].id}..{events[-1].id} ({len(events)} events)" if events else "none"
    judge.expect(bool(events), "no events", ">= 1", 0)
    judge.add(checks.check_ids(events))


@case("3.2", "percent never decreases and stays in its stage's range; stages go forward", invariants=("2",),
      plots=(Plot("line", "percentTimeline", "percent over time", y_label="percent", marks="timelineMarks"),))
async def progress(ctx: Context, judge: Judge) -> None:
    events = (await lifecycle(ctx)).segment.events
    judge.add(checks.check_progress(events, ctx.profile))
    start = events[0].arrived_at if events else 0.0
    judge.evidence["percentTimeline"] = [[round(e.arrived_at - start, 3), (parse_data(e) or {}).get("percent")]
                                         for e in events if isinstance((parse_data(e) or {}).get("percent"), (int, float))]
    judge.evidence["timelineMarks"] = [[round(e.arrived_at - start, 3), (parse_data(e) or {}).get("stage") or ""]
                                       for e in events if e.type == ctx.events["step_status"]
                                       and (parse_data(e) or {}).get("status") == "running"]


@case("3.3", "every event is this job's and ts never decreases", invariants=("4",))
async def job_and_ts(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    judge.add(checks.check_job_and_ts(recording.segment.events, recording.job_id))


@case("3.4", "exactly one terminal event, the last, and the stream ends within {terminal_close_seconds:g} s", invariants=("3",),
      measures=(Measure("close after terminal", "ms", ("closeAfterTerminalMs",), 20.0),))
async def terminal(ctx: Context, judge: Judge) -> None:
    segment = (await lifecycle(ctx)).segment
    events = segment.events
    judge.evidence["end"] = {"how": segment.end, "detail": segment.end_detail}
    if events and events[-1].type in ctx.profile.terminal_events:
        judge.evidence["closeAfterTerminalMs"] = round((segment.ended_at - events[-1].arrived_at) * 1000, 1)
        judge.evidence["starvation"] = ctx.starved().explained(events[-1].arrived_at, segment.ended_at).figures()
    ctx.expect_delivered(judge, segment, "the job's next event, up to its terminal event")
    judge.add(checks.check_terminal(segment, ctx.profile, close_within=ctx.close_within,
                                    starvation=ctx.starved()))
    judge.expect(bool(events) and events[-1].type == ctx.events["completed"], "the job did not complete",
                 ctx.events["completed"], events[-1].type if events else None)


@case("3.5", "progress at least every {progress_interval_ms:g} ms while a stage works", invariants=("2", "cadence"))
async def cadence(ctx: Context, judge: Judge) -> None:
    if ctx.profile.knobs:
        # Stages that work for a while: a short stage can end before a slow ticker ever ticks.
        slow = {stage: 1.5 for stage in ctx.profile.stages[1:3]}
        job_id = await ctx.create_job(judge, stageSeconds=ctx.quick(**slow))
        segment = await ctx.watch(job_id)
    else:
        segment = (await lifecycle(ctx)).segment
    events = segment.events
    interval = ctx.profile.timing["progress_interval_seconds"]
    starvation = ctx.starved()
    judge.add(checks.check_cadence(events, ctx.profile, interval=interval, tolerance=ctx.tolerance(interval) / 2,
                                   starvation=starvation, wall_offset=segment.wall_offset))
    judge.evidence["starvation"] = starvation.explained(segment.started_at, segment.ended_at, own=False).figures()
    stamps = [(parse_data(e) or {}).get("ts") for e in events]
    gaps = [b - a for a, b in zip(stamps, stamps[1:]) if isinstance(a, (int, float)) and isinstance(b, (int, float))]
    if gaps:
        judge.evidence["longestGapMs"] = max(gaps)
    judge.expect(len(data_of(events, ctx.events["progress"])) > 0, "no step-progress events at all", ">= 1", 0)


@case("3.6", "the artifact downloads and is a real MP4 (ffmpeg decodes it)", invariants=("artifact",))
async def artifact(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    completed = data_of(recording.segment.events, ctx.events["completed"])
    if not judge.expect(bool(completed), "no completion event, so no artifact", ctx.events["completed"], None):
        return
    names = [a.get("name") for a in completed[-1].get("artifacts") or [] if isinstance(a, dict)]
    judge.evidence["artifacts"] = completed[-1].get("artifacts")
    if not judge.expect(ctx.profile.artifact in names, "the completion event does not list the artifact",
                        ctx.profile.artifact, names):
        return
    reply = await ctx.api.artifact(recording.job_id, ctx.profile.artifact)
    judge.step(f"downloaded {ctx.profile.artifact}: HTTP {reply.status}, {len(reply.body)} bytes")
    if not judge.expect(reply.status == 200 and len(reply.body) > 0, "artifact download failed", 200, reply.status):
        return
    listed_size = next((a.get("sizeBytes") for a in completed[-1]["artifacts"] if a.get("name") == ctx.profile.artifact), None)
    if listed_size is not None:
        judge.expect(listed_size == len(reply.body), "sizeBytes differs from the download", listed_size, len(reply.body))
    try:
        exe = ffmpeg_exe()
    except Skip as missing:
        if judge.findings:  # the download already failed a check: that verdict stands without ffmpeg
            judge.step(f"not decoded: {missing}")
            return
        raise
    probe = await probe_mp4(reply.body, exe)
    judge.evidence["ffmpeg"] = probe
    judge.expect(probe["decoded"], "ffmpeg could not decode the artifact", "decodes", probe["ffmpegTail"])
    judge.expect(probe["durationSeconds"] > 0, "the video has no duration", "> 0 s", probe["durationSeconds"])
    judge.expect(probe["videoStreams"] == 1, "not exactly one video stream", 1, probe["videoStreams"])
    judge.expect(probe["audioStreams"] == 1, "not exactly one audio stream", 1, probe["audioStreams"])


def compare_samples(timeline: list[tuple[float, float]], samples, starvation: Starvation,
                    terminal_statuses) -> tuple[list[Finding], int]:
    """The percent each mid-run snapshot and progress answer gave, against the stream's
    ``timeline`` (arrival, percent): no lower than the last event before the request, no higher
    than the first after the answer. Returns the findings and how many answers were compared."""
    found: list[Finding] = []
    checked = 0
    for sample in samples:
        for name, body in (("snapshot", sample.snapshot), ("progress", sample.progress)):
            if not isinstance(body, dict):
                found.append(Finding(f"{name} endpoint failed while the job ran", 200, body))
                continue
            percent = body.get("percent")
            if body.get("status") in terminal_statuses or not isinstance(percent, (int, float)):
                continue
            before = max((p for t, p in timeline if t < sample.sent_at), default=0)
            after = min((p for t, p in timeline if t > sample.received_at), default=100)
            checked += 1
            if before - 0.01 <= percent <= after + 0.01:
                continue
            # An event the target sent before it answered may reach us after the answer, late by
            # the machine's starvation (its wait for a core, our loop's stall): such an event
            # bounds nothing. When the bound without those holds, the machine decided (confounded).
            later = min((p for t, p in timeline if t > sample.received_at
                         and t - sample.received_at > starvation.explained(sample.sent_at, t).total), default=100)
            explained = before - 0.01 <= percent <= later + 0.01
            found.append(Finding(f"{name} percent disagrees with the stream around it", f"{before}..{after}",
                                 percent, None, Severity.CONFOUNDED if explained else Severity.FAIL))
    return found, checked


@case("3.7", "snapshot and progress endpoints agree with the stream", invariants=("2", "snapshot"))
async def endpoints_agree(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    events = recording.segment.events
    timeline = [(e.arrived_at, (parse_data(e) or {}).get("percent")) for e in events]
    timeline = [(t, p) for t, p in timeline if isinstance(p, (int, float))]
    found, checked = compare_samples(timeline, recording.samples, ctx.starved(), ctx.profile.terminal_statuses)
    judge.add(found)
    judge.step(f"compared {checked} mid-run samples with the stream")
    reply = await ctx.api.snapshot(recording.job_id)
    snap = reply.json if isinstance(reply.json, dict) else {}
    judge.evidence["finalSnapshot"] = {k: snap.get(k) for k in ("status", "percent", "lastEventId", "stage")}
    judge.expect(snap.get("status") == ctx.profile.statuses["completed"], "final snapshot status",
                 ctx.profile.statuses["completed"], snap.get("status"))
    judge.expect(snap.get("percent") == 100, "final snapshot percent", 100, snap.get("percent"))
    if events and "lastEventId" in snap:
        judge.expect(str(snap.get("lastEventId")) == events[-1].id, "snapshot lastEventId differs from the stream's last id",
                     events[-1].id, snap.get("lastEventId"))
    prog = await ctx.api.progress(recording.job_id)
    judge.expect(prog.status == 200 and isinstance(prog.json, dict) and prog.json.get("percent") == 100,
                 "final progress endpoint does not say 100", 100, prog.json.get("percent") if isinstance(prog.json, dict) else prog.status)


@case("3.8", "every stage starts and succeeds, in order", invariants=("2",))
async def stages(ctx: Context, judge: Judge) -> None:
    events = (await lifecycle(ctx)).segment.events
    seen = [(d.get("stage"), d.get("status")) for d in data_of(events, ctx.events["step_status"])]
    judge.evidence["stepStatus"] = seen
    expected = [(stage, status) for stage in ctx.profile.stages for status in ("running", "succeeded")]
    judge.expect(seen == expected, "step-status events are not each stage running then succeeded, in order",
                 expected, seen)
