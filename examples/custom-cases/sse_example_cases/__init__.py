"""An example package of cases: rules our server promises beyond the contract, one case of each
kind a team writes (an HTTP and stream rule, a stream under cuts, a restart, a browser), all with
the harness's public names only (harness, harness.checks, harness.browser)."""

from . import browser, cuts, restart, tracing

__all__ = ["browser", "cuts", "restart", "tracing"]
