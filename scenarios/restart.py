"""Family 11, restart recovery: the target killed (SIGKILL) or stopped (SIGTERM) mid-stage and
started again. Streams resume by Last-Event-ID, interrupted jobs end with a terminal event that
explains itself, their folders and processes go, finished jobs keep history and artifact.

Only for targets the harness can restart (``ctx.restart``: the embedded reference
server, or a profile's ``[restart].command``); skipped with the reason elsewhere. The cases are
exclusive (a restart ends every other case's streams) and share one recorded restart of each
kind: record, then judge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import trio

from harness import Event, Segment, checks

from ._core import Context, HarnessError, Judge, Skip, TargetFault, case, parse_data
from ._shared import Lifecycle, ResourceWatcher, verify_cleanup

# After the target answers again, the interrupted job's stream must reach its terminal event
# within this many seconds (it has nothing left to do but say how the job ended).
RESUME_SECONDS = 5.0
# Events a stream must have carried before we stop the target: mid-stage, not at the start.
EVENTS_BEFORE = 12


@dataclasses.dataclass(frozen=True)
class Restarted:
    """One restart of the target with a job in the middle of a stage, as observed."""

    how: str  # KILL or TERM
    job_id: str
    stage: str
    before: Segment  # the stream that the restart cut
    after: Segment  # the reconnection with Last-Event-ID after the restart
    restart_seconds: float
    snapshot_status: int
    snapshot: Any
    watcher: ResourceWatcher
    finished: Lifecycle | None = None  # a job finished before the restart (its uninterrupted stream)
    finished_replay: Segment | None = None
    finished_at_end: Segment | None = None  # Last-Event-ID = its last id, after the restart
    artifact_before: tuple[int, str] | None = None  # status, sha256
    artifact_after: tuple[int, str] | None = None

    @property
    def events(self) -> list[Event]:
        return self.before.events + self.after.events


def _restarter(ctx: Context):
    restart = ctx.restart
    if restart is None:
        raise Skip("the harness cannot restart this target: give its profile a [restart] command "
                   "(the embedded reference server restarts itself)")
    return restart


async def _artifact(ctx: Context, job_id: str) -> tuple[int, str]:
    reply = await ctx.api.artifact(job_id, ctx.profile.artifact)
    return reply.status, hashlib.sha256(reply.body).hexdigest()


async def _restart_mid_stage(ctx: Context, how: str, *, with_finished: bool) -> Restarted:
    restart = _restarter(ctx)
    stage = ctx.profile.stages[min(2, len(ctx.profile.stages) - 1)]
    knobs = ctx.knobs(stageSeconds=ctx.quick(**{stage: 60.0}))
    finished = artifact_before = None
    if with_finished:
        done_id = await ctx.create_job(None, **ctx.knobs(stageSeconds=ctx.quick()))
        finished = Lifecycle(done_id, await ctx.watch(done_id, keep_bytes=True), ())
        if not any(e.type == ctx.events["completed"] for e in finished.segment.events):
            raise TargetFault(f"a job did not complete ({finished.segment.end}: {finished.segment.end_detail}), "
                              "so there is no finished job to keep")
        artifact_before = await _artifact(ctx, finished.job_id)
    job_id = await ctx.create_job(None, **knobs)
    watcher = ResourceWatcher(ctx, job_id)
    reached = trio.Event()

    async def sink(record) -> None:
        if isinstance(record, Event):
            data = parse_data(record) or {}
            if data.get("stage") == stage and record.id.isdigit() and int(record.id) >= EVENTS_BEFORE:
                reached.set()

    before: list[Segment] = []
    problem = ""  # the target's fault
    ours = ""  # the harness's trouble
    restart_seconds = 0.0
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            before.append(await ctx.watch(job_id, sink=sink, limits=ctx.limits(total=60.0)))
            reached.set()

        nursery.start_soon(watch)
        async with trio.open_nursery() as polling:  # the job's folder and processes, while it runs
            polling.start_soon(watcher.run, 0.05)
            with trio.move_on_after(30):
                await reached.wait()
            polling.cancel_scope.cancel()
        await watcher.poll_once()
        if before or not reached.is_set():
            problem = (f"the job's stream ended before it reached {stage}: {before[0].end} {before[0].end_detail}"
                       if before else f"the job did not reach {stage} (event {EVENTS_BEFORE}) within 30 s")
            nursery.cancel_scope.cancel()
        else:
            # The stream stays open through the stop: it ends the way a browser's would.
            started = time.monotonic()
            try:
                await restart(how)
            except TargetFault as exc:
                problem = f"after SIG{how} the target did not come back: {exc}"
            except HarnessError as exc:
                ours = f"the restart could not be done: {exc}"
            restart_seconds = time.monotonic() - started
            with trio.move_on_after(10):
                while not before and not problem and not ours:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    if ours:
        raise HarnessError(ours)
    if problem:
        raise TargetFault(problem)
    if not before:
        raise TargetFault("the stream stayed open across the restart (10 s)")
    cut = before[0]
    # As a browser would: reconnect with the last id (a client that has the end gets 204).
    after = await ctx.watch(job_id, last_event_id=cut.last_event_id or None, limits=ctx.limits(total=RESUME_SECONDS))
    snap = await ctx.api.snapshot(job_id)
    result = Restarted(how, job_id, stage, cut, after, restart_seconds, snap.status, snap.json, watcher)
    if finished is not None:
        replay = await ctx.watch(finished.job_id)
        last = finished.segment.events[-1].id
        at_end = await ctx.watch(finished.job_id, last_event_id=last)
        result = dataclasses.replace(result, finished=finished, finished_replay=replay, finished_at_end=at_end,
                                     artifact_before=artifact_before,
                                     artifact_after=await _artifact(ctx, finished.job_id))
    return result


async def killed(ctx: Context) -> Restarted:
    async def make() -> Restarted:
        return await _restart_mid_stage(ctx, "KILL", with_finished=True)

    return await ctx.shared("restart-kill", make)


def _describe(judge: Judge, r: Restarted) -> None:
    judge.step(f"job {r.job_id} in {r.stage}: stream cut by SIG{r.how} after id {r.before.last_event_id} "
               f"({r.before.end}); target back after {r.restart_seconds:.2f} s")
    judge.step(f"reconnected with Last-Event-ID {r.before.last_event_id}: HTTP {r.after.status}, "
               f"{len(r.after.events)} events, {r.after.end}")
    judge.evidence["restartSeconds"] = round(r.restart_seconds, 2)
    judge.evidence["ids"] = {"before": [r.before.events[0].id if r.before.events else None, r.before.last_event_id],
                             "after": [e.id for e in r.after.events][:20]}


def _judge_resume(judge: Judge, ctx: Context, r: Restarted) -> None:
    events = r.events
    judge.add(checks.check_ids(events))
    terminal = [e for e in events if e.type in ctx.profile.terminal_events]
    had_end = any(e.type in ctx.profile.terminal_events for e in r.before.events)
    if not (r.after.status == 200 or (r.after.status == 204 and had_end)):
        judge.fail("the reconnection after the restart was refused" if r.after.status != 204 else
                   "the reconnection after the restart answered 204 (nothing more) to a client without the "
                   "job's terminal event", "200 (204 only once the client has the end)", r.after.status)
        return
    if not terminal:
        judge.fail(f"no terminal event within {RESUME_SECONDS:g} s after the restart: the interrupted job "
                   "was left unfinished", "a terminal event",
                   f"{r.after.end}: {r.after.end_detail}")
        return
    if r.after.status == 200:
        judge.add(checks.check_terminal(r.after, ctx.profile, close_within=ctx.close_within,
                                        starvation=ctx.starved()))
    last = terminal[-1]
    data = parse_data(last) or {}
    judge.evidence["terminal"] = {"id": last.id, "type": last.type, "data": {k: data.get(k) for k in ("status", "error")}}
    if last.type == ctx.events["failed"]:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        judge.expect(bool(error.get("code")) and bool(error.get("remediation")),
                     "the job-failed event after the restart does not explain itself (error code and remediation)",
                     "error.code and error.remediation", error)


@case("11.1", "SIGKILL mid-stage, restart: the stream resumes by Last-Event-ID, no gap or repeat, and ends",
      invariants=("1", "3", "6"), exclusive=True, timeout=120)
async def kill_resume(ctx: Context, judge: Judge) -> None:
    r = await killed(ctx)
    _describe(judge, r)
    _judge_resume(judge, ctx, r)


@case("11.2", "SIGKILL mid-stage, restart: the interrupted job's snapshot agrees with its stream",
      invariants=("3",), exclusive=True, timeout=120)
async def kill_snapshot(ctx: Context, judge: Judge) -> None:
    r = await killed(ctx)
    _describe(judge, r)
    judge.evidence["snapshot"] = {"status": r.snapshot_status,
                                  **({k: r.snapshot.get(k) for k in ("status", "lastEventId", "error")}
                                     if isinstance(r.snapshot, dict) else {})}
    if not judge.expect(r.snapshot_status == 200 and isinstance(r.snapshot, dict),
                        "the interrupted job is unknown after the restart", 200, r.snapshot_status):
        return
    status = r.snapshot.get("status")
    judge.expect(status in ctx.profile.terminal_statuses, "the interrupted job is not over after the restart",
                 sorted(ctx.profile.terminal_statuses), status)
    terminal = [e for e in r.events if e.type in ctx.profile.terminal_events]
    if terminal:
        by_event = {ctx.events["completed"]: ctx.profile.statuses["completed"],
                    ctx.events["failed"]: ctx.profile.statuses["failed"],
                    ctx.events["cancelled"]: ctx.profile.statuses["canceled"]}[terminal[-1].type]
        judge.expect(status == by_event, "the snapshot's status disagrees with the stream's terminal event",
                     by_event, status)
    last_id = r.snapshot.get("lastEventId")
    seen = r.events[-1].id if r.events else None
    if isinstance(last_id, int) and seen is not None and seen.isdigit():
        judge.expect(last_id == int(seen), "the snapshot's lastEventId disagrees with the stream", int(seen), last_id)


@case("11.3", "SIGKILL mid-stage, restart: the interrupted job's folder and processes are gone",
      invariants=("7",), exclusive=True, timeout=120)
async def kill_cleanup(ctx: Context, judge: Judge) -> None:
    r = await killed(ctx)
    _describe(judge, r)
    terminal = [e for e in r.events if e.type in ctx.profile.terminal_events]
    cleanup = (parse_data(terminal[-1]) or {}).get("cleanup") if terminal else None
    verify_cleanup(ctx, judge, r.watcher, cleanup, after="after the restart", zombie_is_gone=True)


@case("11.4", "a job finished before a SIGKILL keeps its history (replay, 204) and its artifact",
      invariants=("6",), exclusive=True, timeout=120)
async def finished_survives(ctx: Context, judge: Judge) -> None:
    r = await killed(ctx)
    _describe(judge, r)
    replay, at_end = r.finished_replay, r.finished_at_end
    judge.step(f"finished job {r.finished.job_id}: full replay HTTP {replay.status} with {len(replay.events)} "
               f"events (before: {len(r.finished.segment.events)}); at its last id HTTP {at_end.status}")
    judge.evidence.update(artifactBefore=list(r.artifact_before), artifactAfter=list(r.artifact_after))
    if judge.expect(replay.status == 200, "the finished job's stream is refused after the restart", 200, replay.status):
        judge.add(checks.check_replay(replay.events, r.finished.segment.events))
    judge.expect(at_end.status == 204, "the finished job at its last id does not answer 204 after the restart",
                 204, at_end.status)
    judge.expect(r.artifact_after == r.artifact_before,
                 "the finished job's artifact is not the same after the restart",
                 r.artifact_before, r.artifact_after)


@case("11.5", "SIGTERM mid-stage, restart: the stream resumes with no gap or repeat and ends",
      invariants=("1", "3", "6"), exclusive=True, timeout=120)
async def term_resume(ctx: Context, judge: Judge) -> None:
    r = await _restart_mid_stage(ctx, "TERM", with_finished=False)
    _describe(judge, r)
    _judge_resume(judge, ctx, r)
    if any(e.type in ctx.profile.terminal_events for e in r.before.events):
        judge.step("the stop ended the job and its stream before the server exited")
    if judge.expect(r.snapshot_status == 200 and isinstance(r.snapshot, dict),
                    "the stopped job is unknown after the restart", 200, r.snapshot_status):
        judge.expect(r.snapshot.get("status") in ctx.profile.terminal_statuses,
                     "the stopped job is not over after the restart", sorted(ctx.profile.terminal_statuses),
                     r.snapshot.get("status"))
