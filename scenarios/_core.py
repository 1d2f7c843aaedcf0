"""Cases, outcomes and the context a case runs in: what every scenario family builds on."""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from typing import Any, Awaitable, Callable

import httpx
import trio

from harness import ApiClient, Event, Limits, Profile, ReconnectPolicy, Reply, Segment, Trace, follow, record

__all__ = ["CASES", "OUTCOMES", "Case", "CaseResult", "Context", "Finding", "HarnessError", "Judge", "Skip",
           "TargetFault", "case", "parse_data", "run_case"]

OUTCOMES = ("pass", "fail", "non-strict", "info", "error", "skip")


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
    severity: str = "fail"  # fail | non-strict | info


@dataclasses.dataclass(frozen=True)
class CaseResult:
    id: str
    title: str
    invariants: tuple[str, ...]
    outcome: str
    duration_ms: int
    findings: tuple[Finding, ...]
    evidence: dict[str, Any]
    steps: tuple[str, ...]
    reason: str = ""  # for error and skip


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
        self.findings.append(Finding(message, expected, observed, event_id, "fail"))

    def non_strict(self, message: str, expected: Any = None, observed: Any = None) -> None:
        self.findings.append(Finding(message, expected, observed, None, "non-strict"))

    def expect(self, condition: bool, message: str, expected: Any = None, observed: Any = None,
               event_id: str | None = None) -> bool:
        if not condition:
            self.fail(message, expected, observed, event_id)
        return condition

    def outcome(self) -> str:
        severities = {f.severity for f in self.findings}
        if "fail" in severities:
            return "fail"
        if "non-strict" in severities:
            return "non-strict"
        return "info" if self.informational else "pass"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    title: str
    invariants: tuple[str, ...]
    run: Callable[["Context", Judge], Awaitable[None]]
    exclusive: bool = False  # runs alone: it fills the target's capacity or needs a quiet target
    timeout: float = 60.0

    @property
    def sort_key(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.id.split("."))


CASES: list[Case] = []


def case(case_id: str, title: str, *, invariants: tuple[str, ...] = (), exclusive: bool = False,
         timeout: float = 60.0):
    """Register a scenario function as a numbered case."""

    def register(func):
        if any(c.id == case_id for c in CASES):
            raise ValueError(f"duplicate case id {case_id}")
        CASES.append(Case(case_id, title, tuple(invariants), func, exclusive, timeout))
        return func

    return register


def parse_data(event: Event) -> dict[str, Any] | None:
    try:
        value = json.loads(event.data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class LagProbe:
    """Measures the harness's own event-loop delays: it asks to sleep ``period`` and notes
    by how much the wake-up came late. Bounded: the newest ``keep`` samples."""

    def __init__(self, period: float = 0.02, keep: int = 100_000) -> None:
        self.period = period
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await trio.sleep(self.period)
            after = time.monotonic()
            late = after - before - self.period
            if late > 0.005:
                self.samples.append((after, late))


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
        self.lag = LagProbe()  # started by the runner while cases run

    # -- settings -------------------------------------------------------------------------
    async def load_settings(self) -> None:
        try:
            reply = await self.api.healthz()
        except httpx.HTTPError as exc:
            raise HarnessError(f"target unreachable at {self.profile.url('healthz')}: {exc!r}") from None
        if reply.status == 200 and isinstance(reply.json, dict):
            self.health = reply.json

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

    def tolerance(self, seconds: float) -> float:
        timing = self.profile.timing
        return max(timing["tolerance_fraction"] * seconds, timing["tolerance_min_seconds"])

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
        base = Limits(read=max(5.0, self.keepalive * 3), total=self.profile.timing["job_timeout_seconds"],
                      after_terminal=max(3.0, self.profile.timing["terminal_close_seconds"] * 3))
        return dataclasses.replace(base, **overrides)

    async def watch(self, job_id: str, **kwargs: Any) -> Segment:
        """One uninterrupted connection to a job's stream, until it ends."""
        kwargs.setdefault("limits", self.limits())
        return await record(self.api.events_url(job_id), client=self.http, headers=self.profile.headers(),
                            terminal_types=self.profile.terminal_events, **kwargs)

    async def follow(self, url: str, **kwargs: Any) -> Trace:
        kwargs.setdefault("limits", self.limits())
        kwargs.setdefault("policy", ReconnectPolicy(max_attempts=5))
        return await follow(url, client=self.http, headers=self.profile.headers(),
                            terminal_types=self.profile.terminal_events, **kwargs)

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


class TargetFault(Exception):
    """The target misbehaved so that the case cannot continue: outcome ``fail``."""


async def run_case(case_: Case, ctx: Context) -> CaseResult:
    judge = Judge()
    started = time.monotonic()
    outcome, reason = None, ""
    try:
        with trio.fail_after(case_.timeout):
            await case_.run(ctx, judge)
    except Skip as exc:
        outcome, reason = "skip", str(exc)
    except TargetFault as exc:
        judge.fail(str(exc))
    except HarnessError as exc:
        outcome, reason = "error", str(exc)
    except trio.TooSlowError:
        outcome, reason = "error", f"the case did not finish within its {case_.timeout:.0f}s limit"
    except httpx.HTTPError as exc:
        # Transport trouble talking to the target: we could not observe, so no verdict.
        outcome, reason = "error", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug of ours must not lose the report
        outcome, reason = "error", f"harness bug: {type(exc).__name__}: {exc}"
    if outcome is None:
        outcome = judge.outcome()
    return CaseResult(
        id=case_.id, title=case_.title, invariants=case_.invariants, outcome=outcome,
        duration_ms=int((time.monotonic() - started) * 1000), findings=tuple(judge.findings),
        evidence=judge.evidence, steps=tuple(judge.steps), reason=reason,
    )


def reply_evidence(reply: Reply) -> dict[str, Any]:
    return {"status": reply.status, "contentType": reply.content_type,
            "body": reply.body[:500].decode("utf-8", errors="replace")}
