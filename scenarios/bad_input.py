"""Family 9, bad input: each wrong request gets its status and a problem body; the server keeps serving."""

from __future__ import annotations

import json

from ._core import Context, Judge, case
from .transport import expect_problem


async def still_serving(ctx: Context, judge: Judge) -> None:
    health = await ctx.api.healthz()
    judge.expect(health.status == 200, "the server is not healthy after bad input", 200, health.status)


async def post_raw(ctx: Context, body: bytes, content_type: str | None = "application/json"):
    headers = {"Content-Type": content_type} if content_type else {}
    return await ctx.api.request("POST", ctx.profile.url("create"), content=body, headers=headers)


@case("9.1", "malformed JSON is a 400 problem", invariants=("9",))
async def malformed(ctx: Context, judge: Judge) -> None:
    for body in (b"{", b'{"topic": "x",}', b"\xff\xfe", b"", b"nul"):
        expect_problem(judge, await post_raw(ctx, body), 400, f"body {body[:10]!r}")
    await still_serving(ctx, judge)


@case("9.2", "JSON that is not an object is a 400 problem", invariants=("9",))
async def not_object(ctx: Context, judge: Judge) -> None:
    for body in (b"[1, 2]", b'"topic"', b"42", b"null"):
        expect_problem(judge, await post_raw(ctx, body), 400, f"body {body.decode()}")
    await still_serving(ctx, judge)


@case("9.3", "a body that is not JSON is a 415 problem", invariants=("9",))
async def wrong_type(ctx: Context, judge: Judge) -> None:
    body = json.dumps(ctx.profile.job_body).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        expect_problem(judge, await post_raw(ctx, body, content_type), 415, f"Content-Type {content_type}")
    await still_serving(ctx, judge)


@case("9.4", "a body over 64 KiB is a 413 problem", invariants=("9",))
async def too_large(ctx: Context, judge: Judge) -> None:
    body = json.dumps({**ctx.profile.job_body, "topic": "x" * (65 * 1024)}).encode()
    expect_problem(judge, await post_raw(ctx, body), 413, "a 65 KiB body")
    await still_serving(ctx, judge)


def invalid_bodies(ctx: Context) -> list[tuple[str, dict]]:
    base = dict(ctx.profile.job_body)
    first = ctx.profile.stages[0]
    cases = [
        ("topic", {k: v for k, v in base.items() if k != "topic"}),
        ("topic", {**base, "topic": ""}),
        ("topic", {**base, "topic": "x" * 201}),
        ("topic", {**base, "topic": 42}),
        ("audience", {**base, "audience": "x" * 201}),
        ("tone", {**base, "tone": ["loud"]}),
        ("scenes", {**base, "scenes": 0}),
        ("scenes", {**base, "scenes": 21}),
        ("scenes", {**base, "scenes": "3"}),
        ("scenes", {**base, "scenes": True}),
        ("surprise", {**base, "surprise": 1}),
    ]
    if ctx.profile.knobs:
        cases += [
            ("stageSeconds", {**base, "stageSeconds": {first: -1}}),
            ("stageSeconds", {**base, "stageSeconds": {first: 601}}),
            ("stageSeconds", {**base, "stageSeconds": {"nostage": 1}}),
            ("stageSeconds", {**base, "stageSeconds": [1]}),
            ("stallSeconds", {**base, "stallSeconds": {first: "long"}}),
            ("failAt", {**base, "failAt": "nostage"}),
            ("warnAt", {**base, "warnAt": 3}),
        ]
    return cases


@case("9.5", "each invalid field is a 422 problem naming the field", invariants=("9",))
async def invalid_fields(ctx: Context, judge: Judge) -> None:
    unnamed = []
    for field, body in invalid_bodies(ctx):
        reply = await ctx.api.create(body)
        expect_problem(judge, reply, 422, f"bad {field}")
        if reply.status == 422 and field not in reply.body.decode("utf-8", errors="replace"):
            unnamed.append(field)
        if reply.status in (200, 201, 202) and isinstance(reply.json, dict) and reply.json.get("jobId"):
            await ctx.api.cancel(str(reply.json["jobId"]))  # an accepted bad job is not left running
    judge.step(f"sent {len(invalid_bodies(ctx))} invalid bodies")
    if unnamed:
        judge.non_strict("a 422 does not name the bad field", "the field's name in the problem", sorted(set(unnamed)))
    await still_serving(ctx, judge)


@case("9.6", "a wrong method is a 405 problem", invariants=("9",))
async def wrong_method(ctx: Context, judge: Judge) -> None:
    job = "AAAAAAAAAAAAAAAAAAAAAA"
    for method, key in (("DELETE", "create"), ("PUT", "healthz"), ("POST", "queue"), ("GET", "cancel"),
                        ("DELETE", "events")):
        url = ctx.profile.url(key, id=job) if "{id}" in ctx.profile.paths[key] else ctx.profile.url(key)
        reply = await ctx.api.request(method, url)
        if key in ("cancel", "events") and reply.status == 404:
            continue  # an unknown id may be looked up first: 404 is as right as 405 there
        expect_problem(judge, reply, 405, f"{method} {ctx.profile.paths[key]}")
    await still_serving(ctx, judge)
