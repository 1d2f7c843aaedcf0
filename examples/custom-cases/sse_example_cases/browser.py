"""Case 100.4, a browser: a real browser's EventSource on our job's stream, cut once mid-job,
delivers every event of the job exactly once (what our web page's users see)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from harness import Context, HarnessError, Judge, TargetFault, case, checks
from harness.browser import BrowserRig, browser_path, canonical, open_browser, target_port


@case("100.4", "a browser's EventSource, cut once mid-job, delivers every event of our job once",
      invariants=("ours: browser",), timeout=120)
async def browser_sees_every_event_once(ctx: Context, judge: Judge) -> None:
    path = browser_path(ctx)  # --browser, else one found; none here: skip
    port = target_port(ctx)  # the page reaches the target through the harness's proxy: this host only
    knobs = ctx.knobs(stageSeconds=ctx.quick(**{ctx.profile.stages[-1]: 2.0})) if ctx.profile.knobs else {}
    progress, ends = ctx.events["progress"], sorted(ctx.profile.terminal_events)
    # The browser first, then the job: a browser slow to start must not find the job over.
    async with open_browser(path) as browser, BrowserRig(port) as rig:
        job_id = await ctx.create_job(judge, **knobs)
        stream = urlsplit(ctx.api.events_url(job_id)).path
        page = rig.page(browser, [stream], sorted(set(ctx.events.values())))
        await page.open()
        if not await page.wait_for_events(0, [progress], timeout=ctx.event_deadline):
            raise TargetFault("no progress event reached the browser", f"a {progress} within "
                              f"{ctx.event_deadline:.0f}s", "none")
        judge.step(f"{stream}: a {progress} arrived in the browser; cutting its connection at the proxy")
        cut_at = time.monotonic()  # the page's clock
        rig.proxy.cut()
        ended = await page.wait_for_events(0, ends, timeout=ctx.job_timeout)
        trace = await page.finish()
    delivered = trace.events(0)
    judge.evidence.update(delivered=len(delivered), requests=len(trace.segments(0)))
    if any(e.type in ends and e.arrived_at <= cut_at for e in delivered):
        # The job's end reached the browser before our cut: nothing was cut mid-job, so a pass
        # here would say nothing of the resume. Our lateness, not the target's fault.
        raise HarnessError("the job's end reached the browser before the cut (the harness was slow): no "
                           "reconnect to judge")
    if not ended:
        judge.fail("the job's end never reached the browser after the cut", f"one of {ends}",
                   f"{len(delivered)} events delivered")
    whole = await ctx.watch(job_id)  # the finished job's whole stream: what the browser was owed
    judge.step(f"the browser delivered {len(delivered)} events over {len(trace.segments(0))} requests; "
               f"the whole stream has {len(whole.events)}")
    judge.add(checks.check_replay(delivered, [canonical(e) for e in whole.events]))
