"""Cases and how they run: outcomes, findings, the registry, the context a case runs in.

This is the machinery; the numbered cases live in ``scenarios`` (and in any package that
registers cases through the ``sse_harness.cases`` entry point, or a module named with
``--cases``). The runner receives cases from the registry and never imports them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import importlib
import importlib.metadata
import importlib.util
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Sequence

import httpx
import trio

from ._api import ApiClient, Reply
from ._client import End, Limits, ReconnectPolicy, Segment, Trace, follow, record
from ._decoder import Event
from ._invariants import is_number
from ._profile import Profile, ProfileError
from ._starvation import Explained, Starvation, StarvationMonitor
from ._stream_profile import CLAIMS, SetupFailed, StreamRequest
from ._tasks import background_nursery

__all__ = ["OUTCOMES", "REGISTRY", "Case", "CaseResult", "Context", "Finding", "HarnessError", "Judge", "LiveStream",
           "Measure", "Outcome", "Plot", "Registry", "Severity", "Skip", "TIMING_TRIES", "TargetFault", "case", "load_cases",
           "overdue", "parse_data", "run_case"]


class Outcome(enum.StrEnum):
    """A case's verdict. Strings, so that a report's JSON and a reader's comparisons stay plain."""

    PASS = "pass"
    FAIL = "fail"  # the target's fault, with findings
    NON_STRICT = "non-strict"  # legal, but against the contract's advice or a known client hazard
    INFO = "info"  # measured, no verdict
    ERROR = "error"  # the harness's own trouble, with the reason
    SKIP = "skip"  # not applicable to this target, with the reason


OUTCOMES = tuple(Outcome)


class Severity(enum.StrEnum):
    """What a finding weighs: a fail, or a non-strict note."""

    FAIL = "fail"
    NON_STRICT = "non-strict"
    # A timing limit was breached, but the machine's measured starvation (the harness's own
    # stalls, the target's or browser's wait for a core) is large enough to explain it: not the
    # target's fault as far as we can show. The case is tried again; if every try is confounded,
    # its outcome is ``error`` with the starvation named.
    CONFOUNDED = "confounded"


# Tries of a case whose timing verdict the machine may have decided (the first and two more).
TIMING_TRIES = 3


class HarnessError(Exception):
    """The harness could not do its part (our timeout, a bad profile): outcome ``error``."""


class Skip(Exception):
    """The case does not apply to this target: outcome ``skip``."""


@dataclasses.dataclass(frozen=True)
class Finding:
    message: str
    expected: Any = None
    observed: Any = None
    event_id: str | None = None
    severity: Severity = Severity.FAIL


@dataclasses.dataclass(frozen=True)
class Plot:
    """A plot a case declares over its own evidence, drawn in the HTML report.

    ``line``: ``key`` holds [[x, y], ...], ``marks`` (optional) a key holding [[x, label], ...].
    ``bars``: ``key`` holds [value, ...]; ``limit`` names evidence keys whose sum is the limit.
    ``across``: ``key`` holds one number per case; the report draws one bar per case that
    has it, against the ``limit`` key's value (the same for every case).
    """

    kind: str
    key: str
    title: str
    y_label: str = ""
    marks: str | None = None
    limit: tuple[str, ...] = ()
    unit: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("line", "bars", "across"):
            raise ValueError(f"unknown plot kind {self.kind!r}: line, bars or across")


@dataclasses.dataclass(frozen=True)
class Measure:
    """A figure a case declares over its evidence, carried in report.json (``figures``) so that
    `sse-harness diff` can say what moved without knowing any case's evidence keys.

    ``path`` leads to a number in the evidence (``("latenessMs", "p95")``); with
    ``largest`` it leads to a list and the largest number counts. Lower is better. Changes
    under ``floor`` are noise, whatever the percentage.
    """

    name: str
    unit: str
    path: tuple[str, ...]
    floor: float
    largest: bool = False

    def read(self, evidence: dict[str, Any]) -> float | None:
        value: Any = evidence
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        if self.largest:
            numbers = [v for v in value if is_number(v)] if isinstance(value, list) else []
            value = max(numbers) if numbers else None
        return float(value) if is_number(value) else None


@dataclasses.dataclass(frozen=True)
class CaseResult:
    id: str
    title: str
    invariants: tuple[str, ...]
    outcome: Outcome
    duration_ms: int
    findings: tuple[Finding, ...]
    evidence: dict[str, Any]
    steps: tuple[str, ...]
    reason: str = ""  # for error and skip
    origin: str = "built-in"  # where the case came from: built-in, a package's entry point, a --cases module
    plots: tuple[Plot, ...] = ()
    measures: tuple[Measure, ...] = ()
    # Earlier tries whose timing verdict the machine's starvation explained (oldest first): each
    # {"try": n, "finding": ..., "observed": ..., "durationMs": ...}. Empty: decided at the first try.
    retries: tuple[dict[str, Any], ...] = ()

    @property
    def confounded(self) -> bool:
        """Every try's timing breach was explained by the machine: an error, not the target's fail."""
        return self.outcome == Outcome.ERROR and any(f.severity == Severity.CONFOUNDED for f in self.findings)

    def figures(self) -> dict[str, dict[str, Any]]:
        """The declared figures this run measured: ``{name: {value, unit, floor}}``."""
        out = {}
        for measure in self.measures:
            value = measure.read(self.evidence)
            if value is not None:
                out[measure.name] = {"value": value, "unit": measure.unit, "floor": measure.floor}
        return out


class Judge:
    """What a case writes while it runs: its steps, findings and evidence."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.findings: list[Finding] = []
        self.evidence: dict[str, Any] = {}
        self.informational = False

    def step(self, text: str) -> None:
        self.steps.append(text)

    def add(self, findings: list[Finding]) -> None:
        self.findings.extend(findings)

    def fail(self, message: str, expected: Any = None, observed: Any = None, event_id: str | None = None) -> None:
        self.findings.append(Finding(message, expected, observed, event_id, Severity.FAIL))

    def non_strict(self, message: str, expected: Any = None, observed: Any = None) -> None:
        self.findings.append(Finding(message, expected, observed, None, Severity.NON_STRICT))

    def expect(self, condition: bool, message: str, expected: Any = None, observed: Any = None,
               event_id: str | None = None) -> bool:
        if not condition:
            self.fail(message, expected, observed, event_id)
        return condition

    def outcome(self) -> Outcome:
        severities = {f.severity for f in self.findings}
        if Severity.FAIL in severities:
            return Outcome.FAIL
        if Severity.CONFOUNDED in severities:
            return Outcome.ERROR  # run_case tries again, then says which starvation explained it
        if Severity.NON_STRICT in severities:
            return Outcome.NON_STRICT
        return Outcome.INFO if self.informational else Outcome.PASS


# A case id: family, number, an optional lower-case suffix (4.3, 10.12, 4.3a).
_CASE_ID = re.compile(r"(\d+)\.(\d+)([a-z]*)")


def case_sort_key(case_id: str) -> tuple[int, int, str]:
    """Natural order: 4.2 < 4.3 < 4.3a < 4.3b < 4.10 < 10.1."""
    match = _CASE_ID.fullmatch(case_id)
    if match is None:
        raise ValueError(f"case id {case_id!r} is not N.M or N.Ma (a family, a number, an optional letter suffix)")
    return int(match[1]), int(match[2]), match[3]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    title: str
    invariants: tuple[str, ...]
    run: Callable[["Context", Judge], Awaitable[None]]
    exclusive: bool = False  # runs alone: it fills the target's capacity or needs a quiet target
    timeout: float = 60.0
    plots: tuple[Plot, ...] = ()
    module: str = ""  # the module that registered it (its origin is looked up by the registry)
    measures: tuple[Measure, ...] = ()
    # What the target must claim for the case to apply (harness._stream_profile.CLAIMS): a case
    # whose needs the profile does not claim is skip, naming the missing claim.
    needs: tuple[str, ...] = ("contract",)

    def unmet(self, profile: Profile) -> str:
        """Why the case does not apply to this profile ("" when it does)."""
        missing = profile.claims.missing(self.needs)
        if not missing:
            return ""
        return "not claimed by the profile: " + "; ".join(CLAIMS.get(m, m) for m in missing)

    def title_for(self, profile: Profile) -> str:
        """The title with the values in force: a title may name the profile's timing
        (``{terminal_close_seconds:g}``, ``{progress_interval_ms:g}``...), not hard-code it."""
        values = dict(profile.timing)
        values["progress_interval_ms"] = values["progress_interval_seconds"] * 1000
        try:
            return self.title.format(**values)
        except (KeyError, ValueError, IndexError):
            return self.title

    @property
    def sort_key(self) -> tuple[int, int, str]:
        return case_sort_key(self.id)


class Registry:
    """The cases a run can choose from, validated as they register."""

    def __init__(self) -> None:
        self._cases: dict[str, Case] = {}
        self._origins: dict[str, str] = {}  # module (or package) name -> where it came from

    def add(self, case_: Case) -> None:
        case_sort_key(case_.id)  # raises on a malformed id
        existing = self._cases.get(case_.id)
        if existing is not None and (existing.module, getattr(existing.run, "__qualname__", None)) == \
                (case_.module, getattr(case_.run, "__qualname__", None)):
            self._cases[case_.id] = case_  # the same module imported again (say, after sys.modules was reset)
            return
        if existing is not None:
            raise ValueError(f"duplicate case id {case_.id}: registered by {existing.module or '?'} "
                             f"({self.origin(existing)}) and again by {case_.module or '?'}")
        self._cases[case_.id] = case_

    def note_origin(self, module: str, origin: str) -> None:
        self._origins.setdefault(module, origin)

    def origin(self, case_: Case) -> str:
        module = case_.module
        while module:
            if module in self._origins:
                return self._origins[module]
            module = module.rpartition(".")[0]
        return "built-in" if case_.module.split(".")[0] == "scenarios" else f"module {case_.module}"

    def __iter__(self) -> Iterator[Case]:
        return iter(sorted(self._cases.values(), key=lambda c: c.sort_key))

    def __len__(self) -> int:
        return len(self._cases)


REGISTRY = Registry()


def case(case_id: str, title: str, *, invariants: tuple[str, ...] = (), exclusive: bool = False,
         timeout: float = 60.0, plots: Sequence[Plot] = (), measures: Sequence[Measure] = (),
         needs: Sequence[str] = ("contract",)):
    """Register a scenario function as a numbered case (``N.M``, or ``N.Ma`` for a variant).
    ``needs``: the claims the target's profile must make for the case to run (default: the
    contract's job API); see harness._stream_profile.CLAIMS."""
    unknown = [n for n in needs if n not in CLAIMS]
    if unknown:
        raise ValueError(f"case {case_id}: unknown need(s) {unknown}; known: {', '.join(sorted(CLAIMS))}")

    def register(func):
        REGISTRY.add(Case(case_id, title, tuple(invariants), func, exclusive, timeout, tuple(plots),
                          getattr(func, "__module__", "") or "", tuple(measures), tuple(needs)))
        return func

    return register


ENTRY_POINT_GROUP = "sse_harness.cases"


class CaseLoadError(Exception):
    """A case module named with --cases or by an entry point could not be loaded."""


def load_cases(extra: Sequence[str] = (), *, registry: Registry = REGISTRY) -> list[Case]:
    """Every case a run can choose from: the packages registered under the entry-point group
    ``sse_harness.cases`` (the built-in families are one of them), then each ``extra`` item:
    a module name (``my_pkg.cases``) or a ``.py`` file."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist.name if entry.dist is not None else "?"
        origin = "built-in" if entry.value.split(":")[0] == "scenarios" else f"{dist} (entry point {entry.name})"
        registry.note_origin(entry.value.split(":")[0], origin)
        try:
            entry.load()
        except ValueError:
            raise  # a malformed or duplicate case id: its message says which
        except Exception as exc:
            raise CaseLoadError(f"cases of {origin} ({entry.value}) failed to load: {type(exc).__name__}: {exc}") from exc
    for item in extra:
        _load_extra(item, registry)
    if not len(registry):
        raise CaseLoadError(f"no cases registered: is sse-harness installed (pip install -e .)? "
                            f"It registers its families under the entry point group {ENTRY_POINT_GROUP}")
    return list(registry)


def _load_extra(item: str, registry: Registry) -> None:
    path = Path(item)
    if item.endswith(".py"):
        if not path.is_file():
            raise CaseLoadError(f"--cases {item}: no such file")
        name = f"sse_harness_cases_{abs(hash(str(path.resolve())))}"
        if name in sys.modules:
            return
        registry.note_origin(name, f"file {item}")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except ValueError:
            raise
        except Exception as exc:
            del sys.modules[name]
            raise CaseLoadError(f"--cases {item} failed to load: {type(exc).__name__}: {exc}") from exc
        return
    registry.note_origin(item, f"module {item}")
    try:
        importlib.import_module(item)
    except ImportError as exc:
        raise CaseLoadError(f"--cases {item}: cannot import it ({exc}); give a module name or a .py file") from exc


def parse_data(event: Event) -> dict[str, Any] | None:
    try:
        value = json.loads(event.data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Context:
    """A target as the cases know it: its profile, advertised settings and helpers."""

    def __init__(self, profile: Profile, http: httpx.AsyncClient, *, same_host: bool,
                 options: dict[str, Any] | None = None) -> None:
        self.profile = profile
        self.options: dict[str, Any] = dict(options or {})  # from the runner: browser path, restart hook...
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

    def starved(self) -> Starvation:
        """The starvation measured so far, frozen, for a timing check to judge with."""
        return self.starvation.snapshot()

    @property
    def timing_slack(self) -> float:
        """The factor every timing tolerance is widened by (--timing-slack, [timing].timing_slack)."""
        return float(self.profile.timing.get("timing_slack", 1.0)) or 1.0

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

    def _setting(self, timing_key: str, health_key: str, scale: float, fallback: float) -> float:
        configured = self.profile.timing[timing_key]
        if configured > 0:
            return configured
        advertised = self.health.get(health_key)
        if isinstance(advertised, (int, float)) and not isinstance(advertised, bool) and advertised > 0:
            return advertised * scale
        return fallback

    @property
    def keepalive(self) -> float:
        return self._setting("keepalive_seconds", "keepaliveSeconds", 1.0, 10.0)

    @property
    def cancel_deadline(self) -> float:
        return self._setting("cancel_deadline_ms", "cancelDeadlineMs", 1.0, 1000.0) / 1000

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
        return self.profile.timing["terminal_close_seconds"] * self.timing_slack

    def tolerance(self, seconds: float) -> float:
        """The tolerance on a timing of ``seconds``: the profile's fraction of it (at least its
        minimum), widened by the timing slack."""
        timing = self.profile.timing
        return max(timing["tolerance_fraction"] * seconds, timing["tolerance_min_seconds"]) * self.timing_slack

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


def describe_arrivals(records: list) -> str:
    """What a stream brought in a window, for a finding: events by type, comments."""
    events = [r for r in records if isinstance(r, Event)]
    comments = sum(1 for r in records if type(r).__name__ == "Comment")
    if not events:
        return f"no event, {comments} comment(s)"
    tail = ", ".join(f"{e.id}:{e.type}" for e in events[-3:])
    return f"{len(events)} event(s) (last: {tail}), {comments} comment(s)"


def timing_severity(measured: float, limit: float, explained: Explained | None) -> Severity:
    """A timing past its limit: the target's fail, or confounded when the machine's measured
    starvation in the window (``explained``) is enough to explain the excess."""
    if explained is not None and measured - explained.total <= limit:
        return Severity.CONFOUNDED
    return Severity.FAIL


# At a deadline that no cadence of the contract sets (the job time limit), the share of the
# window the machine's starvation must explain for the target not to be blamed.
PATIENCE = 0.25


def stopped_delivering(segment: Segment, starvation: Starvation | None, owed_every: float,
                       patience: float = PATIENCE) -> tuple[Severity, str]:
    """Whose doing a recording's deadline end was (no event within the events deadline, no bytes
    within the read timeout, or the total time limit while events still came), with the
    starvation beside it. A target that owes an event every ``owed_every`` and was silent for S
    seconds while it waited W for a core would have been silent S - W on a quiet machine: past
    ``owed_every`` that is its fail, within it the machine's (confounded). At the total time
    limit the target was still delivering and nobody knows how much longer it needed: confounded
    when the machine took at least ``patience`` of the window."""
    if starvation is None:
        return Severity.FAIL, ""
    if segment.end == End.TIMEOUT and "total time limit" in segment.end_detail:
        explained = starvation.explained(segment.started_at, segment.ended_at)
        severity = Severity.CONFOUNDED if explained.total >= patience * explained.window else Severity.FAIL
        return severity, explained.describe()
    times = [segment.started_at] + [e.arrived_at for e in segment.events]
    if segment.end == End.TIMEOUT:  # no bytes at all for the read timeout
        times += [t for t, _ in segment.chunks]
    began = max(times)
    explained = starvation.explained(began, segment.ended_at)
    return timing_severity(segment.ended_at - began, owed_every, explained), explained.describe()


def overdue(segment: Segment, awaited: str, *, starvation: Starvation | None = None,
            owed_every: float = 0.0) -> list[Finding]:
    """A finding when a recording ended because the target stopped delivering what it owed
    (no event within the events deadline, or no bytes within the read timeout), confounded
    when the machine's starvation explains the silence (``stopped_delivering``)."""
    if segment.end not in (End.NO_EVENTS, End.TIMEOUT):
        return []
    severity, figures = stopped_delivering(segment, starvation, owed_every)
    return [Finding(f"waited for {awaited}; the target stopped delivering", awaited,
                    f"{segment.end_detail}; {describe_arrivals(list(segment.records))}"
                    + (f"; {figures}" if figures else ""), None, severity)]


class LiveStream:
    """One connection to a job's stream, recorded in the background while the case acts.

    Every wait on the target goes through ``wait_for`` with a deadline taken from the
    contract or the profile; past it the wait ends in a TargetFault that names what was
    awaited, for how long, and what arrived instead.
    """

    def __init__(self, ctx: "Context", job_id: str, kwargs: dict[str, Any]) -> None:
        self.ctx, self.job_id, self._kwargs = ctx, job_id, kwargs
        self._user_sink = kwargs.pop("sink", None)
        self.records: list = []
        self.segment: Segment | None = None
        self._changed = trio.Event()
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)]

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _sink(self, record_: Any) -> None:
        self.records.append(record_)
        if self._user_sink is not None:
            await self._user_sink(record_)
        self._wake()

    async def _run(self) -> None:
        self.segment = await self.ctx.watch(self.job_id, sink=self._sink, **self._kwargs)
        self._wake()

    async def __aenter__(self) -> "LiveStream":
        async with contextlib.AsyncExitStack() as stack:
            # The recording serves the block and ends with it; the block's own exception
            # (a TargetFault from wait_for, say) leaves as itself.
            nursery = await stack.enter_async_context(background_nursery())
            nursery.start_soon(self._run)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._stack.__aexit__(*exc)

    async def wait_for(self, predicate: Callable[[Event], bool], *, within: float, awaited: str,
                       basis: str, owed_within: float | None = None) -> Event:
        """The first event (recorded already or still to come) for which ``predicate`` holds.
        ``owed_within``: what the contract owes (say, the cancel deadline) when ``within`` adds
        a margin to it: a wait past ``within`` that the machine's starvation explains down to
        ``owed_within`` is confounded, not the target's fail."""
        deadline = trio.current_time() + within
        started_at, seen, waited_since = len(self.records), 0, time.monotonic()
        while True:
            for record_ in self.records[seen:]:
                if isinstance(record_, Event) and predicate(record_):
                    return record_
            seen = len(self.records)
            if self.segment is not None:
                severity, figures = (stopped_delivering(self.segment, self.ctx.starved(), self.ctx.owed_every)
                                     if self.segment.end in (End.NO_EVENTS, End.TIMEOUT) else (Severity.FAIL, ""))
                raise TargetFault(f"the stream ended before {awaited}", awaited,
                                  f"{self.segment.end}: {self.segment.end_detail}; "
                                  f"{describe_arrivals(self.records)}" + (f"; {figures}" if figures else ""), severity)
            changed = self._changed
            with trio.move_on_at(deadline):
                await changed.wait()
                continue
            explained = self.ctx.starved().explained(waited_since, time.monotonic())
            if owed_within is not None:
                severity = timing_severity(within, owed_within, explained)
            else:
                # A wait bounded only by the job time limit (a stage to come): nobody knows how
                # long the target needed; the machine taking a quarter of it is reason enough
                # not to blame the target (as at a recording's total time limit).
                severity = Severity.CONFOUNDED if explained.total >= PATIENCE * explained.window else Severity.FAIL
            figures = f"; {explained.describe()}"
            raise TargetFault(f"waited {within:.1f}s for {awaited} ({basis}); it did not come", awaited,
                              f"meanwhile: {describe_arrivals(self.records[started_at:])}; the stream is still open"
                              + figures, severity)

    async def wait_for_end_after_cancel(self, awaited: str) -> Event:
        """After a cancel's 202: a terminal event is owed within the cancel wait."""
        ctx = self.ctx
        return await self.wait_for(lambda e: e.type in ctx.profile.terminal_events, within=ctx.cancel_wait,
                                   awaited=awaited, basis=f"cancel deadline {ctx.cancel_deadline * 1000:.0f} ms, "
                                                          f"waited {ctx.cancel_wait:.1f}s",
                                   owed_within=ctx.cancel_deadline + 0.1 * ctx.timing_slack)

    async def finish(self) -> Segment:
        """The recording once it ends (bounded by the recorder's own limits)."""
        while self.segment is None:
            changed = self._changed
            await changed.wait()
        return self.segment


class TargetFault(Exception):
    """The target misbehaved so that the case cannot continue: outcome ``fail``, with a
    finding that says what was expected and what was observed."""

    def __init__(self, message: str, expected: Any = None, observed: Any = None,
                 severity: "Severity" = Severity.FAIL) -> None:
        super().__init__(message)
        # CONFOUNDED: a wait that ended at its deadline while the machine's starvation explains
        # the lateness (the case is tried again, as for any confounded timing).
        self.expected, self.observed, self.severity = expected, observed, severity


# httpx errors that are the target's doing (it refused, reset, stalled or garbled an answer)
# rather than ours (a bad URL we built, our own pool, a request we could not send).
_TARGETS_TRANSPORT_FAULTS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.ReadTimeout,
                             httpx.WriteError, httpx.WriteTimeout, httpx.CloseError, httpx.RemoteProtocolError,
                             httpx.DecodingError, httpx.TooManyRedirects)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def run_case(case_: Case, ctx: Context, *, registry: Registry = REGISTRY, tries: int = TIMING_TRIES,
                   pause: float = 1.0) -> CaseResult:
    """Run a case; while its only verdict is a timing breach that the machine's measured
    starvation explains (``confounded``), try it again, up to ``tries`` in all, ``pause`` apart.
    A breach that starvation cannot explain is a ``fail`` at once; a try that passes is the
    verdict (the earlier tries are kept in ``retries``); confounded every time is ``error``."""
    unmet = case_.unmet(ctx.profile)
    if unmet:
        return CaseResult(id=case_.id, title=case_.title_for(ctx.profile), invariants=case_.invariants,
                          outcome=Outcome.SKIP, duration_ms=0, findings=(), evidence={}, steps=(), reason=unmet,
                          origin=registry.origin(case_), plots=case_.plots, measures=case_.measures)
    earlier: list[dict[str, Any]] = []
    for attempt in range(1, max(1, tries) + 1):
        result = await _run_once(case_, ctx if attempt == 1 else ctx.for_retry(), registry)
        if not result.confounded:
            break
        first = next(f for f in result.findings if f.severity == Severity.CONFOUNDED)
        earlier.append({"try": attempt, "finding": first.message, "expected": first.expected,
                        "observed": first.observed, "durationMs": result.duration_ms})
        if attempt < tries:
            await trio.sleep(pause)  # a burst of contention passes; a busy machine stays busy
    if result.confounded:
        earlier.pop()  # the last try is the result itself
        first = next(f for f in result.findings if f.severity == Severity.CONFOUNDED)
        result = dataclasses.replace(result, reason=(
            f"not judged: in {len(earlier) + 1} tries the machine's measured starvation explained the timing "
            f"breach ({first.message}: expected {first.expected}, observed {first.observed}). The machine was "
            f"too busy to measure the target: run fewer jobs in parallel, give --timing-slack FACTOR, or use a "
            f"bigger runner"))
    return dataclasses.replace(result, retries=tuple(earlier)) if earlier else result


async def _run_once(case_: Case, ctx: Context, registry: Registry) -> CaseResult:
    judge = Judge()
    started = time.monotonic()
    outcome, reason = None, ""
    # A last-resort guard only: every wait on the target ends earlier, at a deadline of the
    # contract or the profile, with a finding. The job time limit is one such deadline.
    limit = case_.timeout + ctx.job_timeout
    try:
        with trio.fail_after(limit):
            await case_.run(ctx, judge)
    except BaseException as caught:  # noqa: B036 - sorted below; anything else goes on as it was
        leaves = _leaves(caught)
        harness = [e for e in leaves if isinstance(e, HarnessError)]
        faults = [e for e in leaves if isinstance(e, TargetFault)]
        skips = [e for e in leaves if isinstance(e, Skip)]
        transport = [e for e in leaves if isinstance(e, _TARGETS_TRANSPORT_FAULTS)]
        other = [e for e in leaves if not isinstance(e, (HarnessError, TargetFault, Skip, trio.TooSlowError,
                                                          *_TARGETS_TRANSPORT_FAULTS))]
        if any(not isinstance(e, Exception) for e in other):
            raise  # Cancelled, KeyboardInterrupt...: not ours to judge
        if harness:
            outcome, reason = Outcome.ERROR, str(harness[0])
        elif other:
            first = other[0]
            if isinstance(first, httpx.HTTPError):
                outcome, reason = Outcome.ERROR, f"the harness could not make its request: {type(first).__name__}: {first}"
            else:  # a bug of ours must not lose the report
                outcome, reason = Outcome.ERROR, f"harness bug: {type(first).__name__}: {first}"
        elif faults:
            for fault in faults:
                judge.findings.append(Finding(str(fault), fault.expected, fault.observed, None, fault.severity))
        elif transport:
            exc = transport[0]
            request = getattr(exc, "_request", None)
            where = f"{request.method} {request.url}" if request is not None else "a request"
            judge.fail(f"the target failed at the transport level on {where}: {type(exc).__name__}: {exc}",
                       "an HTTP answer", type(exc).__name__)
        elif skips:
            outcome, reason = Outcome.SKIP, str(skips[0])
        else:  # trio.TooSlowError: the guard itself
            last = judge.steps[-1] if judge.steps else "(no step recorded)"
            outcome, reason = Outcome.ERROR, (
                f"harness defect: the case hit its {limit:.0f}s safety limit before any deadline of the contract "
                f"ended its wait; please report it. Last step: {last}")
    if outcome is None:
        outcome = judge.outcome()
        if outcome == Outcome.ERROR:
            reason = "confounded"  # run_case words it, with the starvation, once no try remains
    return CaseResult(
        id=case_.id, title=case_.title_for(ctx.profile), invariants=case_.invariants, outcome=outcome,
        duration_ms=int((time.monotonic() - started) * 1000), findings=tuple(judge.findings),
        evidence=judge.evidence, steps=tuple(judge.steps), reason=reason, origin=registry.origin(case_),
        plots=case_.plots, measures=case_.measures,
    )


def reply_evidence(reply: Reply) -> dict[str, Any]:
    return {"status": reply.status, "contentType": reply.content_type,
            "body": reply.body[:500].decode("utf-8", errors="replace")}
