"""The reference server's web page, in the system Chromium (Playwright): a job started from the
page to its playing video, a cancel, a cut through the fault proxy, three jobs at once, and the
contract's `error` event told apart from the browser's own connection errors."""

import contextlib
import json

import pytest

from harness import FaultProxy
from harness.browser import BrowserUnavailable, find_browser, open_browser

try:
    BROWSER = find_browser()
    NO_BROWSER = ""
except BrowserUnavailable as exc:
    BROWSER, NO_BROWSER = "", str(exc)

pytestmark = [pytest.mark.skipif(bool(NO_BROWSER), reason=NO_BROWSER), pytest.mark.xdist_group("heavy")]
WAIT = 45_000  # ms: a job on this busy host, with margin


@contextlib.asynccontextmanager
async def browser_page(url):
    """A page at ``url`` in a fresh context; yields ``run(script, *args)``, which runs
    ``script(page, *args)`` on the browser's loop (trio code goes between such calls)."""
    async with open_browser(BROWSER) as browser:
        async def setup(pw):
            context = await pw.new_context(viewport={"width": 1100, "height": 800})
            page = await context.new_page()
            await page.goto(url, timeout=15_000)
            return context, page

        context, page = await browser.call(setup, timeout=20)

        async def run(script, *args, timeout=60):
            return await browser.call(lambda _: script(page, *args), timeout=timeout)

        try:
            yield run
        finally:
            await browser.call(lambda _: context.close(), timeout=10)


async def on_page(url, script, *args):
    async with browser_page(url) as run:
        return await run(script, *args)


async def start(page, topic, stage_seconds="0.3", **selects):
    await page.fill("#topic", topic)
    await page.fill("#stageSeconds", stage_seconds)
    for name, value in selects.items():
        await page.select_option(f"#{name}", value)
    before = await page.evaluate("window.__page.order.length")
    await page.click("#start")
    await page.wait_for_function(f"window.__page.order.length > {before}", timeout=10_000)
    return await page.evaluate("window.__page.order[window.__page.order.length - 1]")


def job_state(page, job_id):
    return page.evaluate("(id) => { const j = window.__page.jobs.get(id); return {ids: j.ids, status: j.status, "
                         "errors: j.errors, warnings: j.warnings, steps: j.steps, video: j.video || null}; }", job_id)


async def test_a_job_from_the_page_ends_in_its_video_playing(reference_server):
    async def script(page):
        job = await start(page, "Browser test: to the video", warnAt="tts")
        card = f".job[data-job-id='{job}']"
        await page.wait_for_selector(f"{card}[data-status=completed] video", timeout=WAIT)
        # The video really plays: its metadata is read and its time advances.
        await page.wait_for_function(f"(() => {{ const v = document.querySelector(\"{card} video\"); "
                                     "return v.readyState >= 2 && v.duration > 0 && v.currentTime > 0; })()",
                                     timeout=15_000)
        await page.wait_for_selector("#conn[data-state=closed]", timeout=10_000)
        state = await job_state(page, job)
        state["download"] = await page.get_attribute(f"{card} a[download]", "href")
        state["timeline"] = await page.inner_text(f"{card} table.steps")
        state["stats"] = await page.inner_text("#stats")
        return state

    state = await on_page(reference_server.base_url + "/", script)
    assert state["status"] == "completed"
    assert state["ids"] == list(range(1, len(state["ids"]) + 1)) and len(state["ids"]) > 10
    assert state["download"] == state["video"] and state["video"].endswith("/artifacts/video.mp4")
    assert [line.split("\t")[0] for line in state["timeline"].splitlines()] == ["script", "tts", "visuals",
                                                                                "compose", "render"]
    assert all(line.endswith(" s") for line in state["timeline"].splitlines())  # each stage's duration
    assert any("REQUESTED_WARNING" in w for w in state["warnings"]) and not state["errors"]
    assert "completed" in state["stats"]


async def test_cancel_from_the_page_shows_the_canceled_state_and_its_cleanup(reference_server):
    async def script(page):
        job = await start(page, "Browser test: cancel", stage_seconds="3")
        card = f".job[data-job-id='{job}']"
        await page.wait_for_selector(f"{card}[data-status=running]", timeout=WAIT)
        # A slow click (press and release 0.4 s apart) while progress events re-render the card.
        await page.click(f"{card} button.cancel", delay=400)
        await page.wait_for_selector(f"{card}[data-status=canceled]", timeout=10_000)
        return job, await page.inner_text(card), await job_state(page, job)

    job, text, state = await on_page(reference_server.base_url + "/", script)
    assert "Canceled in" in text and "folder removed" in text and "processes killed" in text, text
    assert state["ids"] == list(range(1, len(state["ids"]) + 1))
    assert "Cancel" not in text.split("\n")[0]  # no cancel button once it is over


async def test_the_page_reconnects_by_itself_after_a_cut_with_no_gap_or_repeat(reference_server):
    async def begin(page):
        job = await start(page, "Browser test: a cut", stage_seconds="0.6")
        await page.wait_for_function(f"window.__page.jobs.get('{job}').ids.length > 15", timeout=WAIT)
        return job

    async def finish(page, job):
        await page.wait_for_function(f"window.__page.jobs.get('{job}').done", timeout=WAIT)
        page_state = await page.evaluate("({streams: window.__page.streams, "
                                         "connectionErrors: window.__page.connectionErrors})")
        return page_state, await job_state(page, job)

    async with FaultProxy(reference_server.port) as proxy, browser_page(proxy.url("/")) as run:
        job = await run(begin)
        cuts = proxy.cut()
        page_state, state = await run(finish, job)
    assert cuts >= 1
    assert state["status"] == "completed"
    assert state["ids"] == list(range(1, len(state["ids"]) + 1)), state["ids"]
    assert page_state["streams"] == 1  # the browser's own reconnect, not the page opening another
    assert page_state["connectionErrors"] >= 1 and not state["errors"]  # a cut is not a job error


async def test_three_jobs_at_once_share_one_stream(reference_server):
    async def script(page):
        jobs = [await start(page, f"Browser test: job {i + 1} of 3", stage_seconds="0.3") for i in range(3)]
        for job in jobs:
            await page.wait_for_selector(f".job[data-job-id='{job}'][data-status=completed]", timeout=WAIT)
        streams = await page.evaluate("performance.getEntriesByType('resource').filter(e => "
                                      "e.name.includes('/api/streams')).map(e => e.name)")
        return [await job_state(page, j) for j in jobs], streams

    states, streams = await on_page(reference_server.base_url + "/", script)
    for state in states:
        assert state["status"] == "completed"
        assert state["ids"] == list(range(1, len(state["ids"]) + 1)), state["ids"]
    assert len(streams) <= 3 + 1  # one stream, reopened as jobs were added (and its ended reconnect)


async def test_the_contracts_error_event_is_told_apart_from_connection_errors(reference_server):
    async def script(page):
        job = await start(page, "Browser test: a failure", failAt="visuals")
        card = f".job[data-job-id='{job}']"
        await page.wait_for_selector(f"{card}[data-status=failed]", timeout=WAIT)
        await page.wait_for_selector("#conn[data-state=closed]", timeout=10_000)
        return (await job_state(page, job), await page.inner_text(card),
                await page.evaluate("window.__page.connectionErrors"))

    state, text, connection_errors = await on_page(reference_server.base_url + "/", script)
    assert len(state["errors"]) == 1, state["errors"]  # the server's error event, once
    assert connection_errors >= 1  # the stream's end and the 204 were the browser's own errors
    assert "Failed in visuals" in text, text
    assert json.dumps(state["ids"]) == json.dumps(list(range(1, len(state["ids"]) + 1)))


async def test_the_report_dir_gets_a_screenshot_of_the_page_mid_job_linked_from_the_report(reference_server, tmp_path):
    from harness import load_profile
    from harness._browser import page_screenshot
    from harness._reports import write_reports
    from harness._runner import run_suite

    profile = load_profile(base_url=reference_server.base_url)
    report = await page_screenshot(await run_suite(profile, only=["1.1"]), profile, tmp_path)
    assert report.environment.get("pageScreenshot") == "page.png", report.environment
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'href="page.png"' in write_reports(report, tmp_path, ["html"])["html"].read_text()
