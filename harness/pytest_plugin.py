"""The pytest plugin (entry point ``pytest11``): fixtures for a target, and the numbered suite as pytest items.

A QA team writes, in its own repository::

    async def test_my_rule(sse_api, sse_record):
        reply = await sse_api.create()
        trace = await sse_record.follow(reply.json["jobId"])
        assert trace.events[-1].type == "job-completed"

and runs ``pytest`` (async tests need pytest-trio's ``trio_mode = true`` or ``@pytest.mark.trio``).
``pytest --sse-suite [--sse-only 4.*]`` adds one item per numbered case, ``sse-suite::<id>``.

Why a loop in a thread: pytest-trio runs every test in a trio.run of its own, but the target
server lives for the whole session, and the suite's cases share one Context (an
httpx.AsyncClient, recordings shared through ``ctx.shared``, exclusive cases run alone, the
event-loop lag probe). So the session owns one trio loop on an anyio blocking portal (one
thread, joined at the end): the target is set up there by harness._target (``start_target``),
and the selected cases are run there by the runner's own ``run_suite`` as one run, exactly as
``sse-harness run`` would run them. Each pytest item waits for its case's result and reports it.
The fixtures of a user's test (``sse_http``, ``sse_api``, ``sse_record``, ``sse_proxy``) belong
to that test's own trio run; they only share the target's address.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

import httpx
import pytest

from ._api import ApiClient
from ._outcomes import GATE_FAILED, GATE_NOT_DONE, Outcome, gate
from ._client import Limits, ReconnectPolicy, Segment, Trace, follow, record
from ._errors import HarnessError, UsageError
from ._profile import Profile
from ._proxy import FaultProxy
from ._server_process import ServerStartError
from ._target import Target, TargetPlan, is_loopback, plan_target, start_target, users_target

__all__ = ["Recorder"]

_NOTED = (Outcome.NON_STRICT, Outcome.INFO)  # pass with a note; non-strict fails under --sse-strict, as in run


# -- options ----------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sse-harness", "SSE conformance harness")
    group.addoption("--sse-target", metavar="URL",
                    help="base URL of the server under test (default: the profile's base_url if the profile "
                         "file sets one, else the embedded reference server, started once per session)")
    group.addoption("--sse-profile", metavar="FILE", help="target profile TOML (default: the contract)")
    group.addoption("--sse-suite", action="store_true",
                    help="collect the numbered conformance cases as items sse-suite::<id>")
    group.addoption("--sse-only", action="append", default=[], metavar="PATTERN",
                    help="with --sse-suite (implied): case ids or globs, e.g. 4.3, 4.*, 6")
    group.addoption("--sse-skip", action="append", default=[], metavar="PATTERN",
                    help="with --sse-suite: leave these cases out")
    group.addoption("--sse-cases", action="append", default=[], metavar="MODULE_OR_FILE",
                    help="with --sse-suite: also load cases from a module or a .py file, as `run --cases`")
    group.addoption("--sse-baseline", metavar="FILE",
                    help="expected failures, as `run --baseline`: a listed failure is an xfail, a listed case "
                         "that does better now fails as stale")
    group.addoption("--sse-strict", action="store_true", help="non-strict outcomes fail, as with `run --strict`")
    group.addoption("--sse-parallel", type=int, default=8, metavar="N", help="cases run at once (default 8)")
    group.addoption("--sse-timing-slack", type=float, metavar="FACTOR",
                    help="widen every timing tolerance by FACTOR (>= 1), as with `run --timing-slack`")
    group.addoption("--sse-browser", metavar="PATH",
                    help="Chromium for family 10, as `run --browser` (default: $SSE_HARNESS_BROWSER, else PATH)")
    group.addoption("--sse-report-dir", type=Path, metavar="DIR",
                    help="also write the harness's own reports (json, junit, html, md) of the suite run here")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sse_case(id): a numbered conformance case collected by --sse-suite")
    config.addinivalue_line("markers", "sse_exclusive: a case that runs alone (fills the target or needs quiet)")
    session = _SseSession(config)
    if config.getoption("sse_profile") or config.getoption("sse_target"):
        session.profile()  # a bad profile or URL is a usage error before anything runs
    if config.getoption("sse_baseline"):
        from ._baseline import BaselineError, load_baseline

        try:
            session.baseline = load_baseline(config.getoption("sse_baseline"))
        except BaselineError as exc:
            raise pytest.UsageError(f"sse-harness: {exc}") from None
    config.stash[_SESSION] = session


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()  # normally done at the session's finish already; closing again does nothing


def pytest_report_header(config: pytest.Config) -> str | None:
    session = config.stash.get(_SESSION, None)
    if session is None or not (config.getoption("sse_suite") or config.getoption("sse_only")):
        return None
    url = session.external_url()
    return f"sse-harness: target {url or 'the embedded reference server (started on first use)'}"


# -- the session: a trio loop on a portal, the target, the suite run ---------------------------

class _TargetUnavailable(HarnessError):
    """The target could not be had (the embedded server did not start): every user of it errors."""


class _SseSession:
    """What lives for a pytest session: the portal's loop, the server process, the suite run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._stack = contextlib.ExitStack()
        self._portal = None
        self._plan: TargetPlan | None = None
        self._target: Target | None = None
        self._target_error = ""
        self.suite: _SuiteRun | None = None
        self.baseline: dict | None = None  # from --sse-baseline: case id -> (the outcome listed, its reason)
        self._lock = threading.Lock()

    @property
    def server(self):
        """The embedded reference server (harness._server_process.ServerProcess), once we started one."""
        return self._target.server if self._target is not None else None

    def plan(self) -> TargetPlan:
        """The target as the options say (harness._target.plan_target); a bad profile or URL is a usage error."""
        if self._plan is None:
            option = self.config.getoption
            try:
                self._plan = plan_target(option("sse_profile"), option("sse_target"),
                                         timing_slack=option("sse_timing_slack"), browser=option("sse_browser"))
            except UsageError as exc:
                raise pytest.UsageError(f"sse-harness: bad profile: {exc}") from None
        return self._plan

    def profile(self) -> Profile:
        return self.plan().profile

    def external_url(self) -> str | None:
        """The target named by --sse-target or by the profile file's [target].base_url, if any."""
        plan = self.plan() if self.config.getoption("sse_profile") or self.config.getoption("sse_target") else None
        return None if plan is None or plan.embedded else plan.profile.base_url

    def portal(self):
        if self._portal is None:
            from anyio.from_thread import start_blocking_portal

            self._portal = self._stack.enter_context(start_blocking_portal("trio"))
        return self._portal

    def target(self) -> Target:
        """The running target; the embedded server is started on first use, on the portal's loop
        (where its process lives, and the suite's cases run), and stopped at the session's end."""
        with self._lock:
            if self._target is None and not self._target_error:
                plan = self.plan()
                if not plan.embedded:
                    self._target = users_target(plan)
                else:
                    try:
                        self._target = self._stack.enter_context(
                            self.portal().wrap_async_context_manager(start_target(plan)))
                    except ServerStartError as exc:
                        self._target_error = f"the embedded reference server did not start: {exc}"
            if self._target_error:
                raise _TargetUnavailable(self._target_error)
            return self._target

    def start_suite(self, items: Sequence["SuiteCase"]) -> "_SuiteRun":
        if self.suite is None:
            self.suite = _SuiteRun(self, [item.case for item in items])
        return self.suite

    def close(self) -> None:
        if self.suite is not None:
            self.suite.stop()
        self._stack.close()  # the server (SIGTERM by its pid), then the portal's loop and thread


_SESSION = pytest.StashKey[_SseSession]()


class _SuiteRun:
    """One run of the selected cases, by the runner, on the session's loop; results as they come."""

    def __init__(self, session: _SseSession, cases: list) -> None:
        self.cases = cases
        self.results: dict[str, Any] = {}
        self.report = None  # the runner's RunReport, once the run is complete
        self.failure = ""  # why the run could not be done at all
        self.baseline = session.baseline
        self._changed = threading.Condition()
        self._ended = threading.Event()  # the runner's task has returned, however
        # Each case is bounded by its own timeout inside the runner; this bounds our wait for all.
        self.deadline = time.monotonic() + sum(c.timeout for c in cases) + 120
        config = session.config
        try:
            target = session.target()
        except _TargetUnavailable as exc:
            self.failure = str(exc)
            self.future: concurrent.futures.Future | None = None
            return
        from ._runner import run_suite

        # As `sse-harness run` does: the restart family restarts the embedded server (on this
        # same loop, where its process lives) or runs the profile's restart command.
        async def run():
            try:
                return await run_suite(target.profile, cases=cases, parallel=config.getoption("sse_parallel"),
                                       on_result=self._arrived, **target.suite_options())
            finally:
                self._ended.set()

        self.future = session.portal().start_task_soon(run)
        self.future.add_done_callback(self._finished)

    def _arrived(self, result) -> None:  # on the portal's thread
        with self._changed:
            self.results[result.id] = result
            self._changed.notify_all()

    def _finished(self, future: concurrent.futures.Future) -> None:
        with self._changed:
            if future.cancelled():
                self.failure = self.failure or "the suite run was stopped"
            elif future.exception() is not None:
                exc = future.exception()
                self.failure = f"the suite run failed: {type(exc).__name__}: {exc}"
            else:
                self.report = future.result()
                if self.baseline is not None:
                    from ._baseline import apply_baseline

                    self.report = apply_baseline(self.report, self.baseline)
            self._changed.notify_all()

    def result_of(self, case_id: str):
        """The case's result, or a reason (str) why there is none."""
        with self._changed:
            while case_id not in self.results:
                if self.failure or self.report is not None:
                    return self.failure or "the runner gave no result for this case"
                left = self.deadline - time.monotonic()
                if left <= 0:
                    return "no result within the cases' own time limits (a harness fault)"
                self._changed.wait(min(left, 1.0))
            return self.results[case_id]

    def wait_complete(self, timeout: float) -> None:
        if self.future is not None:
            with contextlib.suppress(Exception):
                self.future.result(timeout)

    def stop(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.cancel()  # cancels the runner's task; the future says so at once
            self._ended.wait(30)  # the task itself: its cases unwind before the server goes


# -- the suite as pytest items ---------------------------------------------------------------

class SuiteCase(pytest.Item):
    """One numbered case. Its outcome comes from the runner's result: ``fail`` fails, ``error``
    errors (in setup, as pytest says of trouble outside the test), ``skip`` skips, ``non-strict``
    and ``info`` pass with a note (``non-strict`` fails under --sse-strict). With a baseline, a
    failure it expects is an xfail and a listed case that does better now fails as stale."""

    obj = None  # pytest-trio's trio_mode looks at every item's .obj (pytest's DoctestItem does the same)

    def __init__(self, *, case, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.title = title
        self.result = None
        self.user_properties.append(("sse_title", title))
        self.add_marker(pytest.mark.sse_case(case.id))
        if case.exclusive:
            self.add_marker(pytest.mark.sse_exclusive)
        self.extra_keyword_matches.add(title)  # -k matches words of the title too

    def setup(self) -> None:
        session = self.config.stash[_SESSION]
        suite = session.start_suite([i for i in self.session.items if isinstance(i, SuiteCase)])
        got = suite.result_of(self.case.id)
        if isinstance(got, str):
            pytest.fail(f"{self.case.id}: not run: {got}", pytrace=False)
        self.result = got
        self.user_properties += [("sse_outcome", str(got.outcome)), ("sse_duration_ms", got.duration_ms),
                                 ("sse_origin", got.origin)]
        if gate(got.outcome) == GATE_NOT_DONE:
            pytest.fail(f"{self.case.id} error (the harness's own trouble): {got.reason}", pytrace=False)
        if got.outcome == Outcome.SKIP:
            pytest.skip(f"{self.case.id}: {got.reason}")

    def runtest(self) -> None:
        result = self.result
        expected, stale = _baseline_verdict(result, self.config.stash[_SESSION].baseline)
        if stale:
            pytest.fail(f"{result.id} is listed in the baseline but {stale}", pytrace=False)
        if expected:
            pytest.xfail(f"{result.id} {result.outcome}, expected by the baseline: {expected}")
        if gate(result.outcome, strict=self.config.getoption("sse_strict")) == GATE_FAILED:
            pytest.fail(_describe(result), pytrace=False)
        if result.outcome in _NOTED:
            note = next((f.message for f in result.findings), "measured, no verdict")
            self.user_properties.append(("sse_note", note))

    def reportinfo(self):
        try:
            path = inspect.getsourcefile(self.case.run)
            line = inspect.getsourcelines(self.case.run)[1] - 1
        except (TypeError, OSError):
            path, line = None, None
        return (path or self.path, line, f"{self.case.id} {self.title}")


def _baseline_verdict(result, baseline: dict | None) -> tuple[str | None, str | None]:
    """(why the baseline expects this result, why its entry is stale), by the baseline's own rule."""
    if not baseline or result.id not in baseline:
        return None, None
    from ._baseline import apply_baseline
    from ._runner import RunReport

    judged = apply_baseline(RunReport("", "", "", 0, (result,), {}), baseline)
    return judged.expected.get(result.id), judged.stale.get(result.id)


def _describe(result) -> str:
    lines = [f"{result.id} {result.outcome}: {result.title}"]
    for f in result.findings:
        seen = "" if f.expected is None and f.observed is None else f": expected {f.expected!r}, observed {f.observed!r}"
        where = f" (event {f.event_id})" if f.event_id else ""
        lines.append(f"  [{f.severity}] {f.message}{seen}{where}")
    if result.steps:
        lines += ["steps:", *(f"  {s}" for s in result.steps)]
    return "\n".join(lines)


class _SuiteCollector(pytest.Collector):
    def collect(self):  # the items are made in pytest_collection_modifyitems
        return []


@pytest.hookimpl(tryfirst=True)  # before -k / -m / --deselect narrow the items down
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    if not (config.getoption("sse_suite") or config.getoption("sse_only")):
        return
    from ._registry import CaseLoadError, load_cases
    from ._runner import select_cases

    try:
        known = load_cases(config.getoption("sse_cases"))
    except CaseLoadError as exc:  # a module that failed to load, a malformed or duplicate case id
        raise pytest.UsageError(f"sse-harness: {exc}") from None
    only, skip = config.getoption("sse_only"), config.getoption("sse_skip")
    cases = select_cases(only, skip, cases=known)
    if not cases:
        raise pytest.UsageError(f"sse-harness: no case matches --sse-only {only} / --sse-skip {skip}")
    parent = _SuiteCollector.from_parent(session, name="sse-suite", nodeid="sse-suite")
    profile = config.stash[_SESSION].profile()
    made = [SuiteCase.from_parent(parent, name=c.id, case=c, title=c.title_for(profile)) for c in cases]
    # Reported as collected, so that the terminal's count and other plugins see them.
    config.hook.pytest_collectreport(report=pytest.CollectReport(parent.nodeid, "passed", None, made))
    items.extend(made)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    if isinstance(item, SuiteCase) and item.result is not None and report.when == "call" and report.passed:
        if item.result.outcome in _NOTED:
            report.sse_note = str(item.result.outcome)
            report.sections.append(("sse-harness", _describe(item.result)))
    return report


def pytest_report_teststatus(report, config):
    note = getattr(report, "sse_note", None)
    if note and report.when == "call":
        return "passed", note[0].upper(), (f"PASSED ({note})", {"yellow": note == Outcome.NON_STRICT})
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    sse = session.config.stash.get(_SESSION, None)
    if sse is None:
        return
    if sse.suite is not None:
        if {c.id for c in sse.suite.cases} <= sse.suite.results.keys():
            sse.suite.wait_complete(30)  # every case is done: the runner only closes its client
        sse.suite.stop()  # the session ended early (-x, --maxfail, Ctrl-C): cancel what still runs
        report_dir = session.config.getoption("sse_report_dir")
        if report_dir and sse.suite.report is not None:
            from ._reports import FORMATS, write_reports

            try:
                write_reports(sse.suite.report, report_dir, FORMATS)
            except OSError as exc:
                sse.suite.failure = f"the reports could not be written to {report_dir}: {exc}"
    # Session fixtures are torn down by now: the server goes (by its pid) before the summary says so.
    sse.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    sse = config.stash.get(_SESSION, None)
    if sse is None or (sse.suite is None and sse.server is None):
        return
    write = terminalreporter.write_line
    terminalreporter.section("sse-harness")
    if sse.server is not None:
        write(f"embedded reference server: pid {sse.server.pid} at {sse.server.base_url} (stopped)")
    suite = sse.suite
    if suite is None:
        return
    noted = [r for r in suite.results.values() if r.outcome in _NOTED]
    for r in sorted(noted, key=lambda r: [c.id for c in suite.cases].index(r.id)):
        first = next((f.message for f in r.findings), "measured, no verdict")
        write(f"{r.id} {r.outcome}: {first}")
    if suite.report is not None:
        env = suite.report.environment
        write(f"suite run: {len(suite.report.results)} cases against {suite.report.target} in "
              f"{suite.report.duration_ms / 1000:.1f} s, {env.get('jobsCreated')} jobs created")
        if suite.report.error:
            write(f"the run could not be done: {suite.report.error}")
        report_dir = config.getoption("sse_report_dir")
        if report_dir and not suite.failure:
            write(f"reports: {report_dir}")
    if suite.failure:
        write(f"suite run incomplete: {suite.failure}" if suite.report is None else suite.failure)


# -- fixtures for a team's own tests ------------------------------------------------------------

class Recorder:
    """``record`` and ``follow`` bound to the target: its events URL, auth header, terminal types.

    ``job`` is a job id (its events URL is built from the profile) or a full URL; ``via`` sends
    the connection through a FaultProxy. Other keyword arguments go to ``harness.record`` /
    ``harness.follow`` (limits, policy, last_event_id, stop...)."""

    def __init__(self, profile: Profile, http: httpx.AsyncClient) -> None:
        self.profile = profile
        self.http = http

    def url(self, job: str, *, via: FaultProxy | None = None) -> str:
        if job.startswith(("http://", "https://")):
            return job
        profile = self.profile if via is None else self.profile.with_base_url(via.url())
        return profile.url("events", id=job)

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("client", self.http)
        kwargs["headers"] = {**self.profile.headers(), **(kwargs.get("headers") or {})}
        kwargs.setdefault("terminal_types", self.profile.terminal_events)
        kwargs.setdefault("limits", Limits(total=self.profile.timing["job_timeout_seconds"]))
        return kwargs

    async def record(self, job: str, *, via: FaultProxy | None = None, **kwargs: Any) -> Segment:
        """One connection, until it ends (after a terminal event: until the server closes it)."""
        return await record(self.url(job, via=via), **self._kwargs(kwargs))

    async def follow(self, job: str, *, via: FaultProxy | None = None, **kwargs: Any) -> Trace:
        """Like a browser's EventSource: reconnect with Last-Event-ID until a terminal event."""
        kwargs.setdefault("policy", ReconnectPolicy(max_attempts=5))
        return await follow(self.url(job, via=via), **self._kwargs(kwargs))


@pytest.fixture(scope="session")
def sse_target(pytestconfig: pytest.Config) -> Profile:
    """The target under test, as a Profile bound to its base URL (the embedded reference server
    unless --sse-target or a profile names one)."""
    try:
        return pytestconfig.stash[_SESSION].target().profile
    except _TargetUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def sse_http() -> AsyncIterator[httpx.AsyncClient]:
    """An httpx.AsyncClient for this test's trio run."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as client:
        yield client


@pytest.fixture
async def sse_api(sse_target: Profile, sse_http: httpx.AsyncClient) -> ApiClient:
    """The target's REST endpoints (create, snapshot, cancel, queue...), every answer a Reply."""
    return ApiClient(sse_target, sse_http)


@pytest.fixture
async def sse_record(sse_target: Profile, sse_http: httpx.AsyncClient) -> Recorder:
    """record/follow bound to the target."""
    return Recorder(sse_target, sse_http)


@pytest.fixture
async def sse_proxy(sse_target: Profile) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of the target (cut, stall, slice...); skips for a target on another host."""
    parts = urlsplit(sse_target.base_url)
    if not is_loopback(sse_target.base_url):
        pytest.skip("the fault proxy only forwards to a target on this host")
    async with FaultProxy(parts.port or 80, parts.hostname) as proxy:
        yield proxy
