"""What every scenario family builds on: the case machinery, from harness (one copy)."""

from harness._cases import (OUTCOMES, REGISTRY, Case, CaseResult, Context, Finding, HarnessError, Judge,
                            LiveStream, Measure, Outcome, Plot, Severity, Skip, TargetFault, case, overdue, parse_data,
                            reply_evidence, run_case)

CASES = REGISTRY  # the registered cases, in natural order when iterated

__all__ = ["CASES", "OUTCOMES", "Case", "CaseResult", "Context", "Finding", "HarnessError", "Judge", "LiveStream",
           "Measure", "Outcome", "Plot", "Severity", "Skip", "TargetFault", "case", "overdue", "parse_data", "reply_evidence",
           "run_case"]
