"""The context a case runs in: its target, profile, timing, browser and restart hook, and the helpers
that create jobs and record streams within the contract's deadlines."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any, Awaitable, Callable

import httpx
import trio

from ._api import ApiClient
from ._client import Limits, ReconnectPolicy, Segment, Trace, follow, record
from ._decoder import Event
from ._errors import HarnessError, Skip, TargetFault
from ._live import LiveStream
from ._outcomes import Finding, Judge, Severity
from ._places import lent_place
from ._profile import Profile, ProfileError
from ._restart import Restart
from ._starvation import Starvation, StarvationMonitor
from ._stream_profile import SetupFailed, StreamRequest, parse_data
from ._target import Timing, effective_timing
from ._timing import overdue

__all__ = ["Context", "parse_data"]


class Context:
    """A target as the cases know it: its profile, advertised settings and helpers."""

    def __init__(self, profile: Profile, http: httpx.AsyncClient, *, same_host: bool, browser: str | None = None,
                 restart: Restart | None = None, target_pid: int | None = None) -> None:
        self.profile = profile
        self.browser = browser  # a browser's path (--browser), else the browser families find one
        # How to restart the target (family 11): restart("KILL" | "TERM") returns once it answers
        # healthz again; None when the harness cannot restart it (no [restart] command).
        self.restart = restart
        self.target_pid = target_pid  # the target's process, when the harness started it
        self.http = http
        self.api = ApiClient(profile, http)
        self.same_host = same_host
        self.health: dict[str, Any] = {}
        self._shared: dict[str, Any] = {}
        self._locks: dict[str, trio.Lock] = {}
        self.created_jobs: list[str] = []
        # Started by the runner while cases run: the harness's own stalls, the target's and the
        # browser's wait for a core, the machine's CPU pressure (harness._starvation).
        self.starvation = StarvationMonitor(remote=not same_host)

    @property
    def target(self) -> str:
        """The target's base URL, as the profile names it."""
        return self.profile.base_url

    def starved(self) -> Starvation:
        """The starvation measured so far, frozen, for a timing check to judge with."""
        return self.starvation.snapshot()

    @property
    def timing_slack(self) -> float:
        """The factor every timing tolerance is widened by (--timing-slack, [timing].timing_slack)."""
        return self.timing.timing_slack

    def for_retry(self) -> "Context":
        """The same target and monitors, but nothing shared from earlier tries: a case tried again
        records afresh (a shared recording would give the same verdict)."""
        retry = copy.copy(self)
        retry._shared, retry._locks = {}, {}
        return retry

    # -- settings -------------------------------------------------------------------------
    async def load_settings(self) -> None:
        if not self.profile.claims.has("health"):
            return  # a stream profile that claims no health endpoint: the first stream says it all
        stream = self.profile.kind == "stream"
        where = self.profile.base_url.rstrip("/") + self.profile.claims.health if stream else self.profile.url("healthz")
        try:
            reply = await self.api.healthz()
        except httpx.HTTPError as exc:
            raise HarnessError(f"target unreachable at {where}: {exc!r}") from None
        if reply.status == 200 and isinstance(reply.json, dict):
            self.health = reply.json
        elif stream and not 200 <= reply.status < 300:
            # A capability claimed but absent: the profile is wrong about the server, not a verdict.
            raise ProfileError(f"[claims].health = {self.profile.claims.health!r} is claimed, but {where} "
                               f"answered HTTP {reply.status}")

    @property
    def timing(self) -> Timing:
        """The effective timing: the profile's, else the target's healthz, else the contract's."""
        return effective_timing(self.profile, self.health)

    @property
    def keepalive(self) -> float:
        return self.timing.keepalive

    @property
    def cancel_deadline(self) -> float:
        return self.timing.cancel_deadline

    @property
    def job_timeout(self) -> float:
        """The profile's bound on one job's whole run (job_timeout_seconds)."""
        return float(self.profile.timing["job_timeout_seconds"])

    @property
    def event_deadline(self) -> float:
        """How long a job's open stream may bring no event while the job owes one.

        The contract owes progress every progress interval while a stage works, the stored
        events at once on connecting, and the terminal event as the job ends. We allow ten
        progress intervals, at least the keep-alive interval with its tolerance, at least
        5 s: past that the wait ends with a finding, not at a case's safety limit.
        """
        interval = self.profile.timing["progress_interval_seconds"]
        return max(5.0, 10 * interval, self.keepalive + self.tolerance(self.keepalive))

    @property
    def cancel_wait(self) -> float:
        """How long we wait for the terminal event after a cancel was accepted: the cancel
        deadline plus as much again (at least 1 s) for our own request and read."""
        return self.cancel_deadline + max(1.0, self.cancel_deadline)

    @property
    def close_within(self) -> float:
        """How soon after its terminal event a stream must end: the profile's
        terminal_close_seconds, widened by the timing slack."""
        return self.timing.close_within

    @property
    def cancel_limit(self) -> float:
        """How soon after the cancel request its terminal event must come (Timing.cancel_limit)."""
        return self.timing.cancel_limit

    def tolerance(self, seconds: float) -> float:
        """The tolerance on a timing of ``seconds``: the profile's fraction of it (at least its
        minimum), widened by the timing slack."""
        return self.timing.tolerance(seconds)

    @property
    def events(self) -> dict[str, str]:
        return self.profile.events

    # -- jobs -----------------------------------------------------------------------------
    def knobs(self, **wanted: Any) -> dict[str, Any]:
        """Knobs for a job, or Skip when the target does not take them."""
        if wanted and not self.profile.knobs:
            raise Skip("the target profile says the test knobs (stageSeconds...) are not supported")
        return wanted

    def quick(self, **stage_seconds: float) -> dict[str, float]:
        """stageSeconds: every stage short (0.1 s) except those given."""
        return {stage: stage_seconds.get(stage, 0.1) for stage in self.profile.stages}

    async def create_job(self, judge: Judge | None = None, **knobs: Any) -> str:
        reply = await self.api.create(**knobs)
        if reply.status not in (200, 201, 202) or not isinstance(reply.json, dict) or not reply.json.get("jobId"):
            # The target refused a valid job: that is its fault, and the case cannot go on.
            raise TargetFault(f"creating a job failed: {reply.describe()}")
        job_id = str(reply.json["jobId"])
        self.created_jobs.append(job_id)
        if judge is not None:
            judge.step(f"created job {job_id} with {json.dumps(knobs) if knobs else 'the default body'}")
        return job_id

    def limits(self, **overrides: Any) -> Limits:
        base = Limits(read=max(5.0, self.keepalive * 3), total=self.job_timeout,
                      after_terminal=max(3.0, self.profile.timing["terminal_close_seconds"] * 3),
                      between_events=self.event_deadline)
        return dataclasses.replace(base, **overrides)

    async def watch(self, job_id: str, **kwargs: Any) -> Segment:
        """One uninterrupted connection to a job's stream, until it ends."""
        kwargs.setdefault("limits", self.limits())
        kwargs.setdefault("patient", self.is_queued)
        return await record(self.api.events_url(job_id), client=self.http, headers=self.profile.headers(),
                            terminal_types=self.profile.terminal_events, **kwargs)

    def is_queued(self, event: Event) -> bool:
        """A status event saying the job waits in the queue: it owes no event until it starts."""
        return event.type == self.events["status"] and \
            (parse_data(event) or {}).get("status") == self.profile.statuses["queued"]

    def live(self, job_id: str, **kwargs: Any) -> "LiveStream":
        """``async with ctx.live(job_id) as live:`` records the job's stream in the background
        while the case acts; ``live.wait_for(...)`` waits on what the target owes, to a deadline."""
        return LiveStream(self, job_id, kwargs)

    async def follow(self, url: str, **kwargs: Any) -> Trace:
        kwargs.setdefault("limits", self.limits())
        kwargs.setdefault("policy", ReconnectPolicy(max_attempts=5))
        kwargs.setdefault("patient", self.is_queued)
        return await follow(url, client=self.http, headers=self.profile.headers(),
                            terminal_types=self.profile.terminal_events, **kwargs)

    @property
    def owed_every(self) -> float:
        """How often a working job owes an event: the progress interval with its tolerance."""
        interval = self.profile.timing["progress_interval_seconds"]
        return interval + self.tolerance(interval)

    def overdue(self, segment: Segment, awaited: str) -> list[Finding]:
        """``overdue`` judged against this run's starvation (confounded when it explains it)."""
        return overdue(segment, awaited, starvation=self.starved(), owed_every=self.owed_every)

    def expect_delivered(self, judge: Judge, segment: Segment, awaited: str) -> None:
        """The stream was not cut short at a deadline: when it was and the target is to blame,
        that is a finding (and the case goes on to judge what did arrive); when the machine's
        starvation explains it, the case stops here as confounded: everything after would be a
        consequence of the short stream, not a measurement of the target."""
        found = self.overdue(segment, awaited)
        if found and found[0].severity == Severity.CONFOUNDED:
            raise TargetFault(found[0].message, found[0].expected, found[0].observed, Severity.CONFOUNDED)
        judge.add(found)

    # -- any stream (a profile's [stream], or a contract job's events) ----------------------
    async def open_stream(self) -> StreamRequest:
        """Run the profile's set-up requests and return the stream's request, ready to record.
        A set-up request the target refused or failed is its fault (TargetFault)."""
        try:
            return await self.profile.stream.open(self.http, self.profile.base_url, self.profile.headers())
        except SetupFailed as exc:
            raise TargetFault(str(exc), "a 2xx answer with the values to capture", None) from None

    @property
    def stream_keepalive(self) -> float:
        """The keep-alive interval the target claims for its stream (0: none claimed)."""
        if self.profile.kind == "contract":
            return self.keepalive
        return self.profile.claims.keepalive_seconds

    def stream_limits(self, **overrides: Any) -> Limits:
        """Limits for a stream of any kind: the events deadline from the claimed keep-alive when
        the stream's own events owe no cadence."""
        keepalive = self.stream_keepalive
        read = max(5.0, keepalive * 3) if keepalive else 70.0  # past the 60 s of common proxies
        base = Limits(read=read, total=self.job_timeout, after_terminal=max(3.0, self.close_within * 3),
                      between_events=None)
        return dataclasses.replace(base, **overrides)

    async def record_stream(self, request: StreamRequest | None = None, **kwargs: Any) -> Segment:
        """One connection to the stream (opened afresh unless ``request`` is given), until it
        ends (by the profile's meaning of an end), or a limit hits."""
        request = request if request is not None else await self.open_stream()
        kwargs.setdefault("limits", self.stream_limits())
        return await record(request.url, client=self.http, headers=request.headers, method=request.method,
                            content=request.content, terminal=self.profile.meaning.is_end, **kwargs)

    async def shared(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """Compute once per run and share between cases (e.g. one recorded lifecycle job)."""
        lock = self._locks.setdefault(key, trio.Lock())
        if lock.locked():
            # Another case is making it: wait without holding one of the run's places (a
            # browser recording takes ~12 s, and six cases wait on it).
            async with lent_place():
                async with lock:
                    pass
        async with lock:
            if key not in self._shared:
                try:
                    self._shared[key] = ("ok", await make())
                except (TargetFault, HarnessError, Skip) as exc:
                    self._shared[key] = ("raise", exc)
        kind, value = self._shared[key]
        if kind == "raise":
            raise value
        return value
