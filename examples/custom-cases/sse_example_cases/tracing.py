"""Case 100.1, an HTTP and stream rule: one rule our server promises beyond the contract.

The rule: every event of a job carries the job's own correlationId (the one its snapshot
shows), so that a support engineer can follow one job through logs, events and the API.
"""

from harness import Context, Judge, Skip, case, checks, parse_data


@case("100.1", "every event carries the job's correlationId, as its snapshot shows it", invariants=("ours: tracing",))
async def correlation_id_everywhere(ctx: Context, judge: Judge) -> None:
    knobs = ctx.knobs(stageSeconds=ctx.quick()) if ctx.profile.knobs else {}
    job_id = await ctx.create_job(judge, **knobs)
    snapshot = await ctx.api.snapshot(job_id)
    wanted = snapshot.json.get("correlationId") if isinstance(snapshot.json, dict) else None
    if not wanted:
        raise Skip("the snapshot has no correlationId: this server does not trace jobs that way")
    judge.step(f"snapshot says correlationId {wanted}")
    segment = await ctx.watch(job_id)  # bounded by the contract's deadlines, as every wait is
    judge.add(checks.check_ids(segment.events))  # the pure checks are there for our own cases too
    others = [(e.id, (parse_data(e) or {}).get("correlationId")) for e in segment.events
              if (parse_data(e) or {}).get("correlationId") != wanted]
    judge.evidence["events"] = len(segment.events)
    judge.expect(bool(segment.events), "the stream carried no events", "events", 0)
    judge.expect(not others, "events with another correlationId", wanted, others[:5])
