"""What a case's run comes to: outcomes, finding severities, findings, plots, measures, results, the judge."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from ._invariants import is_number

__all__ = ["EXPECTABLE", "GATE_FAILED", "GATE_NOT_DONE", "GATE_PASSED", "OUTCOMES", "CaseResult", "Finding", "Judge", "Measure", "Outcome", "Plot", "Severity",
           "exit_code", "gate", "gate_rank"]


class Outcome(enum.StrEnum):
    """A case's verdict. Strings, so that a report's JSON and a reader's comparisons stay plain."""

    PASS = "pass"
    FAIL = "fail"  # the target's fault, with findings
    NON_STRICT = "non-strict"  # legal, but against the contract's advice or a known client hazard
    INFO = "info"  # measured, no verdict
    ERROR = "error"  # the harness's own trouble, with the reason
    SKIP = "skip"  # not applicable to this target, with the reason


OUTCOMES = tuple(Outcome)


# -- the gate: which outcomes fail a run, and its exit code -----------------------------------------
# One rule for `sse-harness run`, its baseline, `sse-harness diff` and the pytest plugin.

GATE_PASSED, GATE_FAILED, GATE_NOT_DONE = 0, 1, 2  # also the exit codes of `run`


def _failing(strict: bool) -> tuple[Outcome, ...]:
    return (Outcome.FAIL, Outcome.NON_STRICT) if strict else (Outcome.FAIL,)


EXPECTABLE = _failing(strict=True)  # what a baseline may list as expected: what can fail the gate


def gate(outcome: Outcome | str, *, strict: bool = False, expected: bool = False, stale: bool = False) -> int:
    """What one case's result does to the gate: GATE_NOT_DONE for an ``error`` (the harness's
    own trouble); GATE_FAILED for a ``fail`` (with ``strict`` a ``non-strict`` too) that a
    baseline did not expect, or a stale baseline entry; GATE_PASSED otherwise."""
    if outcome == Outcome.ERROR:
        return GATE_NOT_DONE
    if stale or (outcome in _failing(strict) and not expected):
        return GATE_FAILED
    return GATE_PASSED


def exit_code(verdicts, *, run_error: bool = False) -> int:
    """A run's exit code from its cases' ``gate`` verdicts: 0 nothing failed; 1 a case failed
    the gate; 2 the harness could not do its job (the run, or a case: ``error``)."""
    return max([GATE_NOT_DONE if run_error else GATE_PASSED, *verdicts])


def gate_rank(outcome: Outcome | str) -> int:
    """How bad an outcome is for the gate (a baseline entry whose case now ranks lower is
    stale): error, then fail, then non-strict; pass, info and skip alike."""
    if outcome == Outcome.ERROR:
        return 3
    return {Outcome.FAIL: 2, Outcome.NON_STRICT: 1}.get(Outcome(outcome), 0)


class Severity(enum.StrEnum):
    """What a finding weighs: a fail, or a non-strict note."""

    FAIL = "fail"
    NON_STRICT = "non-strict"
    # A timing limit was breached, but the machine's measured starvation (the harness's own
    # stalls, the target's or browser's wait for a core) is large enough to explain it: not the
    # target's fault as far as we can show. The case is tried again; if every try is confounded,
    # its outcome is ``error`` with the starvation named.
    CONFOUNDED = "confounded"


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
