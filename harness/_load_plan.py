"""What the load users of one locust process share: the plan every user follows (from the
``--sse-*`` options, the profile and the target's healthz), the jobs they attach to, the
process's own delay and the target's wait for a core (probed in the background), and the
final CSV files. Imported by ``harness.load``, which registers these locust hooks with it."""

from __future__ import annotations

import collections
import csv
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from locust import events
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from ._load_options import add_to as add_load_options, option_values
from ._load_starvation import TargetProcess, WorkerStarvation
from ._profile import Profile
from ._starvation import Explained
from ._target import effective_timing, resolve_profile

if TYPE_CHECKING:
    from .load import SSEUser

__all__ = ["LoadPlan", "shared"]

log = logging.getLogger("sse-harness.load")

PROBE_PERIOD = 0.05
PROC_PERIOD = 0.1  # the target's run-queue wait and the machine's CPU pressure, read from /proc


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("sse-harness", "SSE job-stream users (harness.load.SSEUser)")
    add_load_options(group, locust=True)  # --sse-subscribers ... (harness._load_options)


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """What every user of this process does, from the options, the profile and the target's healthz."""

    profile: Profile
    subscribers: int
    cancel_share: float
    cut_share: float
    cut_within: float
    job_body: dict[str, Any]
    job_id: str
    stream_url: str
    job_timeout: float
    jobs_per_user: int
    keepalive_limit: float  # longest legal silence on a stream; 0: not judged
    close_within: float
    retry_seconds: float
    cancel_deadline: float
    cancel_limit: float  # the deadline and our own request's allowance (harness._target.Timing.cancel_limit)
    session_seconds: float = 10.0  # a stream profile's stream that never ends: how long a reader follows it

    @classmethod
    def from_options(cls, options: Any, profile: Profile, health: dict[str, Any]) -> "LoadPlan":
        """The plan from locust's parsed ``--sse-*`` options (harness._load_options; None: the
        defaults). Raises ValueError naming the option when it does not fit the profile."""
        values = option_values(options)
        timing = profile.timing
        if profile.kind == "stream":
            return cls._for_stream(values, profile)
        effective = effective_timing(profile, health)  # the suite's rules, its --timing-slack too
        keepalive = effective.keepalive
        body = dict(profile.job_body)
        stage_seconds = values["stage-seconds"]
        if stage_seconds is not None and stage_seconds >= 0:
            if not profile.knobs:
                raise ValueError("--sse-stage-seconds needs a target that takes the test knobs ([job].knobs = true)")
            body["stageSeconds"] = {stage: float(stage_seconds) for stage in profile.stages}
        stall = values["stall-seconds"]
        if stall is not None and stall > 0:
            if not profile.knobs:
                raise ValueError("--sse-stall-seconds needs a target that takes the test knobs ([job].knobs = true)")
            body["stallSeconds"] = {profile.stages[0]: float(stall)}
        if values["scenes"]:
            body["scenes"] = int(values["scenes"])
        shares = {name: float(values[f"{name}-share"]) for name in ("cancel", "cut")}
        for name, value in shares.items():
            if not 0 <= value <= 1:
                raise ValueError(f"--sse-{name}-share must be within [0, 1], not {value}")
        subscribers = int(values["subscribers"])
        if subscribers < 1:
            raise ValueError("--sse-subscribers must be at least 1")
        return cls(
            profile=profile, subscribers=subscribers, cancel_share=shares["cancel"], cut_share=shares["cut"],
            cut_within=max(0.05, float(values["cut-within"])), job_body=body,
            job_id=str(values["job-id"] or ""), stream_url=str(values["stream-url"] or ""),
            job_timeout=float(values["job-timeout"] or timing["job_timeout_seconds"]),
            jobs_per_user=max(1, int(values["jobs-per-user"])),
            keepalive_limit=keepalive + effective.tolerance(keepalive),
            close_within=effective.close_within,
            retry_seconds=min(5.0, max(0.0, float(health.get("retryMs", 1000)) / 1000)
                              if isinstance(health.get("retryMs"), (int, float)) else 1.0),
            cancel_deadline=effective.cancel_deadline, cancel_limit=effective.cancel_limit,
        )

    @classmethod
    def _for_stream(cls, values: dict[str, Any], profile: Profile) -> "LoadPlan":
        """A stream profile's plan: timings from its claims; no jobs to create, cancel or attach to."""
        if profile.stream is not None and profile.stream.hook:
            raise ValueError(f"[stream].hook {profile.stream.hook!r} is an async function (httpx.AsyncClient); "
                             "the load user runs under gevent and cannot call it: describe the stream with "
                             "[stream] and [[setup]] instead")
        for name in ("job-id", "stream-url"):
            if values[name]:
                raise ValueError(f"--sse-{name} is for the contract's jobs; a stream profile opens its stream as "
                                 "[stream] says")
        timing = profile.timing
        claims = profile.claims
        keepalive = claims.keepalive_seconds  # what the stream claims; 0: none claimed, silences not judged
        effective = effective_timing(profile)  # the suite's rules, its --timing-slack too
        cut_share = float(values["cut-share"])
        if not 0 <= cut_share <= 1:
            raise ValueError(f"--sse-cut-share must be within [0, 1], not {cut_share}")
        session = float(values["session-seconds"])
        if not session > 0:
            raise ValueError(f"--sse-session-seconds must be positive, not {session}")
        return cls(
            profile=profile, subscribers=1, cancel_share=0.0,
            cut_share=cut_share if claims.has("replay") else 0.0,  # a resume needs Last-Event-ID replay
            cut_within=max(0.05, float(values["cut-within"])), job_body={}, job_id="", stream_url="",
            job_timeout=float(values["job-timeout"] or timing["job_timeout_seconds"]),
            jobs_per_user=max(1, int(values["jobs-per-user"])),
            keepalive_limit=keepalive + effective.tolerance(keepalive) if keepalive else 0.0,
            close_within=effective.close_within,
            retry_seconds=min(5.0, claims.retry_ms / 1000) if claims.retry_ms else 1.0,
            cancel_deadline=0.0, cancel_limit=0.0, session_seconds=session,
        )


# -- what the users of one process share --------------------------------------------------------

class _Shared:
    """The plan (made once per process and option set), the board of jobs open to more
    subscribers, and the starvation probe: this process's loop delay, the same-host target's
    run-queue wait, the machine's CPU pressure (bounded samples, ``time.perf_counter()``)."""

    def __init__(self) -> None:
        self.lock = Semaphore()
        self.key: tuple | None = None
        self.plan: LoadPlan | None = None
        self.board: collections.deque[list] = collections.deque()  # [AsyncResult of the job id, places left]
        self.starved = WorkerStarvation(probe_period=PROBE_PERIOD)
        self.probe: gevent.Greenlet | None = None
        self.logged = 0

    def plan_for(self, user: "SSEUser") -> LoadPlan:
        options = user.environment.parsed_options
        key = (user.host, tuple(sorted(vars(options).items())) if options is not None else ())
        with self.lock:
            if self.key != key:
                try:
                    values = option_values(options)
                    profile = resolve_profile(values["profile"], user.host, values["timing-slack"])
                    self.plan = LoadPlan.from_options(options, profile, _health(user, profile))
                except ValueError as exc:  # ProfileError too
                    log.error("cannot load: %s", exc)
                    raise StopUser() from None
                self.key = key
                self.board.clear()
                target = TargetProcess.find(user.host or "", option_values(options)["target-pid"] or 0)
                if self.starved.observe(target):
                    log.info("the target's wait for a core: %s", target.label)
            return self.plan

    def starvation(self, start: float, end: float) -> Explained:
        """What the machine may have added to a timing in [start, end], judged now."""
        now = time.perf_counter()
        self.starved.refresh(now)
        return self.starved.explained(start, end, now=now)

    def take_place(self) -> AsyncResult | None:
        """A place on a job another user creates or created: its id comes through the result
        (None if its creation failed)."""
        while self.board:
            entry = self.board[0]
            if entry[1] > 0:
                entry[1] -= 1
                if entry[1] == 0:
                    self.board.popleft()
                return entry[0]
            self.board.popleft()
        return None

    def open_places(self, places: int) -> AsyncResult:
        """Room for ``places`` more users on the job about to be created, offered before the
        create request so that users spawned meanwhile wait for it instead of creating more."""
        result = AsyncResult()
        if places > 0:
            self.board.append([result, places])
        return result


shared = _Shared()


def _health(user: "SSEUser", profile: Profile) -> dict[str, Any]:
    if profile.kind == "stream":
        return {}  # its settings are its claims
    try:
        reply = user.client.get(profile.paths["healthz"], name="healthz", headers=profile.headers())
        value = reply.json() if reply.status_code == 200 else {}
    except Exception:  # noqa: BLE001 - a target without healthz: the profile's timing and defaults apply
        return {}
    return value if isinstance(value, dict) else {}


def _probe(environment) -> None:
    """How late this process's loop wakes up (the load generator's own delay, logged as ``own
    delay``), and every ~100 ms the target's run-queue wait and the machine's CPU pressure: kept
    (bounded) so that a timing they explain is not the target's failure."""
    next_reading = 0.0
    stats = environment.stats
    starved = shared.starved
    try:
        while True:
            asked = starved.probe_asked = time.perf_counter()
            gevent.sleep(PROBE_PERIOD)
            now = time.perf_counter()
            late = max(0.0, now - asked - PROBE_PERIOD)
            starved.delays.append((now, late))
            stats.get("own delay", "worker").log(late * 1000, 0)
            if now >= next_reading:
                starved.read_proc(now)
                for name, grew in starved.growth().items():
                    stats.get(name, "worker").log(grew * 1000, 0)
                next_reading = now + PROC_PERIOD
    finally:
        starved.probe_asked = None


@events.test_start.add_listener
def _start_probe(environment, **_) -> None:
    if not isinstance(environment.runner, MasterRunner) and (shared.probe is None or shared.probe.dead):
        shared.probe = gevent.spawn(_probe, environment)


@events.test_stop.add_listener
def _stop_probe(environment, **_) -> None:
    if shared.probe is not None:
        shared.probe.kill(block=True, timeout=2)
        shared.probe = None


@events.quitting.add_listener
def _final_csv(environment, **_) -> None:
    """locust's --csv files are rewritten once a second while it runs and not at its end, so what
    happened in the last second (a stream judged as its user stopped) can be missing there.
    Beside them, <prefix>_final_{stats,failures,exceptions}.csv: the state at the end."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix or isinstance(environment.runner, WorkerRunner):
        return
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for kind, write in (("stats", writer.requests_csv), ("failures", writer.failures_csv),
                        ("exceptions", writer.exceptions_csv)):
        with open(f"{prefix}_final_{kind}.csv", "w", newline="") as f:
            write(csv.writer(f))
