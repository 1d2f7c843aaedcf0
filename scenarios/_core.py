"""What every scenario family builds on: the case machinery, from harness (one copy)."""

from harness._context import Context, parse_data, reply_evidence
from harness._timing import overdue
from harness._errors import HarnessError, Skip, TargetFault
from harness._live import LiveStream
from harness._outcomes import OUTCOMES, CaseResult, Finding, Judge, Measure, Outcome, Plot, Severity
from harness._registry import REGISTRY, Case, case
from harness._run_case import run_case

CASES = REGISTRY  # the registered cases, in natural order when iterated

__all__ = ["CASES", "OUTCOMES", "Case", "CaseResult", "Context", "Finding", "HarnessError", "Judge", "LiveStream",
           "Measure", "Outcome", "Plot", "Severity", "Skip", "TargetFault", "case", "overdue", "parse_data", "reply_evidence",
           "run_case"]
