"""A real browser's EventSource, observed: Chromium driven by Playwright in a worker thread, its
page served by the harness at the stream's own origin (through the fault proxy and a recording tap).

The chain is browser -> FaultProxy -> Tap -> target. The tap (harness/_browser_tap.py) serves the
probe page itself (so the page and the streams share one origin and no CORS is involved), and
records every request the browser made (with the headers it really sent, Last-Event-ID included,
which Playwright's own request view does not show) and every response, de-framed and decoded into
``Segment``s: what the browser was sent, judged by the same checks as a Python recording. The page
records what the browser *delivered*: each listener call (type, lastEventId, data, MessageEvent or
plain Event), ``open``/``error`` and readyState changes, with times on the harness's monotonic clock.

Playwright's async API needs asyncio, so the browser lives on an asyncio loop in one worker thread
started with ``trio.to_thread.run_sync``; trio tasks send it coroutines and wait, every wait
bounded. Playwright's own browser download is never used: the system Chromium runs by path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence
from urllib.parse import quote

import trio

from ._browser_tap import PAGE_PATH, Exchange, Tap
from ._client import Segment
from ._decoder import Event
from ._errors import HarnessError
from ._proxy import FaultProxy
from ._tasks import background_nursery

__all__ = ["BROWSER_ENV", "Browser", "BrowserNotFound", "BrowserRig", "BrowserTimeout", "BrowserUnavailable",
           "Exchange", "Observation", "PageHandle", "PageTrace", "Tap", "canonical", "find_browser", "open_browser",
           "page_screenshot"]

BROWSER_ENV = "SSE_HARNESS_BROWSER"
# Flags checked on this machine: without the background-networking ones Chromium's own
# connections are refused by a closed network and it stalls.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_READY_STATES = {0: "CONNECTING", 1: "OPEN", 2: "CLOSED"}


class BrowserUnavailable(HarnessError):
    """No browser to drive: the one named is not there, or it did not start (the harness's
    trouble: a case that needs it is ``error``)."""


class BrowserNotFound(BrowserUnavailable):
    """None was named and none is on PATH, or Playwright is not installed: the browser families
    skip (``browser_path`` says so)."""


def find_browser(explicit: str | None = None) -> str:
    """The browser's path: ``explicit`` (--browser), else $SSE_HARNESS_BROWSER, else PATH."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise BrowserNotFound("needs sse-harness[browser]: Playwright is not installed here "
                              "(pip install 'sse-harness[browser]')") from None
    for origin, value in (("--browser", explicit), (f"${BROWSER_ENV}", os.environ.get(BROWSER_ENV))):
        if value:
            path = shutil.which(value) or value
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise BrowserUnavailable(f"{origin} names {value!r}, which is not an executable file")
            return path
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserNotFound(f"no browser: none of {', '.join(_CANDIDATES)} on PATH, no --browser, no "
                          f"${BROWSER_ENV} (on Debian: apt-get install chromium)")


# -- the browser, in its thread -------------------------------------------------------------

class Browser:
    """One Chromium on an asyncio loop in a worker thread. ``call`` runs a coroutine function
    there with the Playwright browser as its first argument and returns its result."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.version = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._pw_browser: Any = None
        self._stopping = False
        self._token = trio.lowlevel.current_trio_token()

    async def call(self, func: Callable[..., Awaitable[Any]], *args: Any, timeout: float) -> Any:
        """Run ``func(playwright_browser, *args)`` on the browser's loop, at most ``timeout`` s."""
        done = trio.Event()
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(func(self._pw_browser, *args), timeout),
                                                  self._loop)
        future.add_done_callback(lambda _: self._token.run_sync_soon(done.set))
        try:
            with trio.fail_after(timeout + 5):
                await done.wait()
        except trio.TooSlowError:
            future.cancel()
            raise BrowserTimeout(f"the browser thread did not answer within {timeout + 5:.0f}s") from None
        except BaseException:
            future.cancel()
            raise
        try:
            return future.result()
        except (asyncio.TimeoutError, TimeoutError):
            raise BrowserTimeout(f"the browser did not answer within {timeout:.0f}s") from None

    def _thread_main(self, started: trio.Event, failure: list[BaseException]) -> None:
        async def main() -> None:
            from playwright.async_api import async_playwright

            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=self.path, args=list(FLAGS),
                                                           timeout=20_000, handle_sigint=False,
                                                           handle_sigterm=False, handle_sighup=False)
                self._pw_browser, self.version = browser, browser.version
                self._token.run_sync_soon(started.set)
                try:
                    if self._stopping:
                        self._stop.set()
                    await self._stop.wait()
                finally:
                    await asyncio.wait_for(browser.close(), 10)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - carried to the trio side, never lost
            failure.append(exc)
        finally:
            try:
                self._token.run_sync_soon(started.set)
            except trio.RunFinishedError:
                pass

    def _request_stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop is already gone
                pass


class BrowserTimeout(HarnessError):
    """The browser thread did not answer in time: the harness's trouble."""


@contextlib.asynccontextmanager
async def open_browser(path: str, *, launch_timeout: float = 25.0) -> AsyncIterator[Browser]:
    """Launch the system Chromium at ``path`` for the block; close it (and its thread) after."""
    browser = Browser(path)
    started = trio.Event()
    failure: list[BaseException] = []
    async with background_nursery() as nursery:  # the block's own exception leaves as itself
        nursery.start_soon(trio.to_thread.run_sync, browser._thread_main, started, failure)
        try:
            with trio.fail_after(launch_timeout):
                await started.wait()
            if failure or browser._pw_browser is None:
                raise BrowserUnavailable(f"the browser at {path} did not start: "
                                         f"{failure[0] if failure else 'no reason given'}")
            yield browser
        finally:
            browser._request_stop()  # the thread ends, so the nursery can close


@dataclasses.dataclass(frozen=True)
class Observation:
    """One thing the page saw: an ``ev`` (a listener call), ``open``, ``error`` or ``state``."""

    kind: str
    stream: int
    at: float  # time.monotonic()
    ready_state: str
    type: str = ""  # for ev: the listener's event type
    id: str | None = None  # lastEventId (a MessageEvent only)
    data: str | None = None
    message: bool = False  # a MessageEvent (an event the server sent), not the browser's own Event


def canonical(event: Event) -> Event:
    """The event reduced to what a browser delivers (id, type, data), as its ``raw``, so that
    ``check_replay`` compares a browser's deliveries with a Python recording field for field."""
    lines = [f"id: {event.id}", f"event: {event.type}", *(f"data: {d}" for d in event.data.split("\n"))]
    return dataclasses.replace(event, raw="\n".join(lines).encode())


@dataclasses.dataclass(frozen=True)
class PageTrace:
    """What one page recorded, with what the tap saw on the wire for it."""

    observations: tuple[Observation, ...]
    exchanges: tuple["Exchange", ...]
    streams: tuple[str, ...]  # the stream paths, by index
    proxy_log: tuple[Any, ...]
    screenshot: bytes = b""

    def of(self, stream: int, kind: str | None = None) -> list[Observation]:
        return [o for o in self.observations if o.stream == stream and (kind is None or o.kind == kind)]

    def events(self, stream: int = 0) -> list[Event]:
        """The events delivered to the page's listeners (MessageEvents only), as ``Event``s."""
        out = []
        for o in self.of(stream, "ev"):
            if o.message:
                event = Event(id=o.id or "", type=o.type, data=o.data or "", retry=None, arrived_at=o.at,
                              first_arrived_at=o.at, has_id=bool(o.id), raw=b"", offset=-1)
                out.append(canonical(event))
        return out

    def segments(self, stream: int = 0) -> list[Segment]:
        """Every request the browser made for the stream, as the tap recorded it."""
        path = self.streams[stream]
        return [x.segment() for x in self.exchanges if x.target == path]

    def last_delivered_id(self, stream: int, moment: float) -> str | None:
        """The id of the last event with an id the page delivered on ``stream`` by ``moment``:
        what the browser's reconnect at ``moment`` owes as ``Last-Event-ID``."""
        ids = [o.id for o in self.of(stream, "ev") if o.message and o.at <= moment and o.id]
        return ids[-1] if ids else None

    def closed_at(self, stream: int = 0) -> float | None:
        """When the page first saw readyState CLOSED."""
        return next((o.at for o in self.observations if o.stream == stream and o.ready_state == "CLOSED"), None)


class PageHandle:
    """A page in its own browser context (own connection pool), driven from trio."""

    def __init__(self, browser: Browser, rig: "BrowserRig", streams: Sequence[str] | None,
                 types: Sequence[str]) -> None:
        """With ``streams`` None the page loads without opening any: ``start`` opens them."""
        self.browser, self.rig = browser, rig
        self.streams = tuple(streams or ())
        config = json.dumps({"streams": list(streams or ()), "types": list(types), "defer": streams is None})
        self.url = rig.proxy.url(PAGE_PATH) + "#" + quote(config)
        self._context: Any = None
        self._page: Any = None

    async def open(self, timeout: float = 15.0) -> None:
        async def go(pw_browser, url):
            context = await pw_browser.new_context(viewport={"width": 900, "height": 500})
            page = await context.new_page()
            await page.goto(url, timeout=timeout * 1000, wait_until="load")
            return context, page

        self._context, self._page = await self.browser.call(go, self.url, timeout=timeout)

    async def start(self, streams: Sequence[str]) -> None:
        """Open the streams now (a page made without them)."""
        self.streams = tuple(streams)

        async def go(_, page, paths):
            await page.evaluate("(paths) => window.__go(paths)", paths)

        await self.browser.call(go, self._page, list(streams), timeout=10)

    async def wait_for(self, expression: str, arg: Any = None, *, timeout: float) -> bool:
        """Wait until ``expression`` (a JS function of ``arg`` over ``__obs``) is true; False when
        ``timeout`` passes first (the target did not deliver: the caller says what was awaited)."""

        async def wait(_, page):
            from playwright.async_api import TimeoutError as PlaywrightTimeout

            try:
                await page.wait_for_function(expression, arg=arg, timeout=timeout * 1000, polling=25)
                return True
            except PlaywrightTimeout:
                return False

        return await self.browser.call(wait, self._page, timeout=timeout + 5)

    async def evaluate(self, expression: str, arg: Any = None, *, timeout: float = 10.0) -> Any:
        """The value of ``expression`` (a JS function of ``arg`` over ``__obs``) now."""

        async def run(_, page):
            return await page.evaluate(expression, arg)

        return await self.browser.call(run, self._page, timeout=timeout)

    async def wait_for_events(self, stream: int, types: Sequence[str], *, timeout: float) -> bool:
        return await self.wait_for("([s, types]) => __obs.some(o => o.k === 'ev' && o.message && o.s === s "
                                   "&& types.includes(o.type))", [stream, list(types)], timeout=timeout)

    async def screenshot(self) -> bytes:
        async def shot(_, page):
            return await page.screenshot(type="png", timeout=10_000)

        return await self.browser.call(shot, self._page, timeout=15)

    async def finish(self, *, screenshot: bytes = b"") -> PageTrace:
        """Collect what the page recorded, close it, and return the trace."""

        async def collect(_, page, context):
            try:
                return await page.evaluate("window.__obs || []")
            finally:
                await context.close()

        raw = await self.browser.call(collect, self._page, self._context, timeout=15)
        offset = time.time() - time.monotonic()
        observations = tuple(
            Observation(kind=o["k"], stream=int(o["s"]), at=o["t"] / 1000 - offset,
                        ready_state=_READY_STATES.get(o.get("rs"), str(o.get("rs"))), type=o.get("type") or "",
                        id=o.get("id"), data=o.get("data"), message=bool(o.get("message")))
            for o in raw)
        return PageTrace(observations, tuple(self.rig.tap.exchanges), self.streams, tuple(self.rig.proxy.log),
                         screenshot)


class BrowserRig:
    """``async with BrowserRig(target_port) as rig``: a tap and a fault proxy in front of the
    target, one origin for one page; ``rig.page(browser, streams, types)`` makes the page."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.tap = Tap(target_port, target_host)
        self.proxy: FaultProxy | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> "BrowserRig":
        await self._stack.__aenter__()
        await self._stack.enter_async_context(self.tap)
        self.proxy = await self._stack.enter_async_context(FaultProxy(self.tap.port))
        return self

    async def __aexit__(self, *exc) -> bool | None:
        return await self._stack.__aexit__(*exc)

    def page(self, browser: Browser, streams: Sequence[str] | None, types: Sequence[str]) -> PageHandle:
        return PageHandle(browser, self, streams, types)


# -- a picture of the target's own page, mid-job (for the report) ----------------------------

async def page_screenshot(report: Any, profile: Any, directory: Any, explicit: str | None = None,
                          *, name: str = "page.png", limit: float = 30.0) -> Any:
    """When the target serves an HTML page at ``/``, start a job through the API, open the page
    with ``#jobs=<id>`` (the reference page watches the jobs named there), and take a screenshot
    once the job is a third done. Returns ``report`` with ``environment.pageScreenshot`` (the
    file's name in ``directory``) or ``environment.pageScreenshotSkipped`` (why not). Never raises
    for the target's or the browser's trouble: a picture is not a verdict."""
    import httpx

    from ._api import ApiClient

    note: dict[str, str] = {}
    try:
        path = find_browser(explicit)
        async with httpx.AsyncClient(timeout=10) as http:
            home = await http.get(profile.base_url.rstrip("/") + "/")
            if home.status_code != 200 or "text/html" not in home.headers.get("content-type", ""):
                raise BrowserUnavailable(f"the target serves no HTML page at / (HTTP {home.status_code})")
            api = ApiClient(profile, http)
            async with open_browser(path) as browser:
                async def new_page(pw):
                    context = await pw.new_context(viewport={"width": 1200, "height": 800})
                    return context, await context.new_page()

                async def go(_, url):
                    await page.goto(url, timeout=15_000)

                # The browser first, then the job: the picture is taken while the job runs.
                context, page = await browser.call(new_page, timeout=20)
                stage_seconds = {s: 0.8 for s in profile.stages} if profile.knobs else None
                created = await (api.create(stageSeconds=stage_seconds) if stage_seconds else api.create())
                job_id = (created.json or {}).get("jobId") if isinstance(created.json, dict) else None
                if not job_id:
                    raise BrowserUnavailable(f"could not start a job for the picture: {created.describe()}")
                await browser.call(go, profile.base_url.rstrip("/") + f"/#jobs={job_id}", timeout=20)
                with trio.move_on_after(limit):
                    while True:  # the job's own progress, asked of the API (the page is not ours to read)
                        progress = await api.progress(job_id)
                        percent = (progress.json or {}).get("percent") if isinstance(progress.json, dict) else None
                        if not isinstance(percent, (int, float)) or percent >= 35:
                            break
                        await trio.sleep(0.2)
                await trio.sleep(0.4)

                async def shot(_):
                    try:
                        return await page.screenshot(type="png", timeout=10_000)
                    finally:
                        await context.close()

                png = await browser.call(shot, timeout=15)
            await api.cancel(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(png)
        note["pageScreenshot"] = name
    except (BrowserUnavailable, BrowserTimeout, OSError, httpx.HTTPError) as exc:
        note["pageScreenshotSkipped"] = str(exc) or type(exc).__name__
    except Exception as exc:  # Playwright's own errors: still only a missing picture
        note["pageScreenshotSkipped"] = f"{type(exc).__name__}: {exc}"
    return dataclasses.replace(report, environment={**report.environment, **note})
