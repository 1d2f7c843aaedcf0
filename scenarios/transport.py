"""Family 1, transport: health, stream headers, unknown and hostile ids, retry first."""

from __future__ import annotations

from harness import Retry, checks

from ._core import Context, Judge, case
from ._shared import judge_compressed_when_asked, lifecycle

PROBLEM = "application/problem+json"


def expect_problem(judge: Judge, reply, status: int, what: str) -> None:
    judge.evidence.setdefault("replies", {})[what] = reply.evidence()
    if judge.expect(reply.status == status, f"{what}: wrong status", status, reply.status):
        judge.expect(reply.content_type == PROBLEM, f"{what}: error is not problem+json", PROBLEM, reply.content_type)
        body = reply.json if isinstance(reply.json, dict) else {}
        missing = [k for k in ("type", "title", "status", "detail") if k not in body]
        judge.expect(not missing, f"{what}: problem body lacks {', '.join(missing)}", "type,title,status,detail",
                     sorted(body))
        judge.expect(body.get("status") in (None, status), f"{what}: problem status differs from HTTP status",
                     status, body.get("status"))


@case("1.1", "healthz answers with the advertised settings", invariants=("9",))
async def healthz(ctx: Context, judge: Judge) -> None:
    reply = await ctx.api.healthz()
    judge.step("GET healthz")
    judge.evidence["healthz"] = reply.json
    judge.expect(reply.status == 200, "healthz is not 200", 200, reply.status)
    body = reply.json if isinstance(reply.json, dict) else {}
    judge.expect(body.get("status") == "ok", "status is not ok", "ok", body.get("status"))
    for key in ("keepaliveSeconds", "retryMs", "cancelDeadlineMs"):
        value = body.get(key)
        judge.expect(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                     f"{key} missing or not a positive number", "number > 0", value)
    judge.expect("version" in body, "version missing", "a version", None)


@case("1.2", "the event stream's response headers", invariants=("stream headers",))
async def stream_headers(ctx: Context, judge: Judge) -> None:
    recording = await lifecycle(ctx)
    segment = recording.segment
    judge.step(f"recorded job {recording.job_id}'s stream")
    judge.evidence["headers"] = dict(segment.headers)
    judge.expect(segment.status == 200, "stream status is not 200", 200, segment.status)
    judge.add(checks.check_headers(segment))
    await judge_compressed_when_asked(ctx, judge, segment, asked="a job's stream asked ")
    content_type = segment.header("content-type") or ""
    if "charset" not in content_type.lower():
        judge.step("no charset parameter: legal, UTF-8 is the event-stream's only encoding")


@case("1.3", "an unknown job is a 404 problem, not a stream", invariants=("9",))
async def unknown_job(ctx: Context, judge: Judge) -> None:
    missing = "AAAAAAAAAAAAAAAAAAAAAA"
    for what, reply in (
        ("events", await ctx.api.request("GET", ctx.api.events_url(missing), headers={"Accept": "text/event-stream"})),
        ("snapshot", await ctx.api.snapshot(missing)),
        ("progress", await ctx.api.progress(missing)),
    ):
        judge.step(f"GET {what} of an unknown id")
        expect_problem(judge, reply, 404, what)
        judge.expect(not reply.content_type.startswith("text/event-stream"), f"{what}: answered with a stream",
                     PROBLEM, reply.content_type)


HOSTILE = ("..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "a%2Fb", "x" * 65, "a%20b", "%00", "job.json", "%C3%A9t%C3%A9")


@case("1.4", "hostile job ids are 404, never a file-system look-up", invariants=("9",))
async def hostile_ids(ctx: Context, judge: Judge) -> None:
    base = ctx.profile.base_url.rstrip("/")
    for hostile in HOSTILE:
        for key in ("job", "events"):
            path = ctx.profile.paths[key].replace("{id}", hostile)
            reply = await ctx.api.request("GET", base + path)
            judge.expect(reply.status == 404, f"id {hostile[:20]!r} on {key}: not 404", 404, reply.status)
            judge.expect(reply.status < 500, f"id {hostile[:20]!r} on {key}: server error", "< 500", reply.status)
    judge.step(f"sent {len(HOSTILE)} hostile ids to the job and events paths")
    health = await ctx.api.healthz()
    judge.expect(health.status == 200, "server unhealthy after hostile ids", 200, health.status)


@case("1.5", "retry: comes first and matches healthz", invariants=("stream body 1",))
async def retry_first(ctx: Context, judge: Judge) -> None:
    segment = (await lifecycle(ctx)).segment
    retries = [r for r in segment.records if isinstance(r, Retry)]
    judge.evidence["retry"] = [r.ms for r in retries]
    judge.expect(checks.first_record_is_retry(segment), "the stream does not open with retry:", "retry first",
                 type(next(iter(segment.records), None)).__name__)
    advertised = ctx.health.get("retryMs")
    if retries and advertised is not None:
        judge.expect(retries[0].ms == advertised, "retry differs from healthz retryMs", advertised, retries[0].ms)
