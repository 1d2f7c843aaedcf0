"""Running one case: its verdict from what it raised and judged, tried again while the machine's
starvation explains a timing breach."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import trio

from ._context import Context
from ._errors import HarnessError, Skip, TargetFault
from ._outcomes import CaseResult, Finding, Judge, Outcome, Severity
from ._registry import REGISTRY, Case, Registry

__all__ = ["TIMING_TRIES", "run_case"]

# Tries of a case whose timing verdict the machine may have decided (the first and two more).
TIMING_TRIES = 3


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
