"""What every scenario family builds on: the case machinery, by its public names (as a user's own cases get it)."""

from harness import (REGISTRY, Case, CaseResult, Context, Finding, HarnessError, Judge, LiveStream, Measure, Outcome, Plot,
                     Severity, Skip, TargetFault, case, parse_data, run_case)
from harness.checks import overdue

CASES = REGISTRY  # the registered cases, in natural order when iterated
OUTCOMES = tuple(Outcome)

__all__ = ["CASES", "OUTCOMES", "Case", "CaseResult", "Context", "Finding", "HarnessError", "Judge", "LiveStream",
           "Measure", "Outcome", "Plot", "Severity", "Skip", "TargetFault", "case", "overdue", "parse_data", "run_case"]
