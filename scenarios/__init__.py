"""The numbered conformance scenarios: one module per family, registered in CASES."""

from . import bad_input, cancel, concurrency, failure, format, keepalive, lifecycle, replay, restart, transport  # noqa: F401
from . import stream  # noqa: F401  (family 12: any stream)
from . import reverse_proxy  # noqa: F401  (family 13: through a real reverse proxy)
from . import browser  # noqa: F401  (family 10: a real browser)
from . import browser_stream  # noqa: F401  (family 14: a real browser on any GET stream)
from ._core import CASES, OUTCOMES, Case, CaseResult, Context, Finding, HarnessError, Skip, run_case

__all__ = ["CASES", "OUTCOMES", "Case", "CaseResult", "Context", "Finding", "HarnessError", "Skip", "run_case"]
