"""Whose fault it is: every error the harness raises on purpose, in three kinds (as h11 has its
Local- and RemoteProtocolError).

- ``UsageError``: the user's mistake (a bad profile, argument, file or case module). Nothing
  ran, or nothing more can; the command exits 2 with the key, flag or path named.
- ``HarnessError``: the harness's own trouble (no browser, our proxy or nginx could not start,
  a restart we could not do). A case's outcome is ``error``, with the reason.
- ``TargetFault``: what the target did or failed to deliver. A case's outcome is ``fail``,
  with a finding that says what was expected and what was observed.

All three derive from ``SseHarnessError``. ``Skip`` is not an error: a case that does not apply
to this target says so by raising it (outcome ``skip``).
"""

from __future__ import annotations

from typing import Any

from ._outcomes import Severity

__all__ = ["HarnessError", "ProfileError", "Skip", "SseHarnessError", "TargetFault", "UsageError"]


class SseHarnessError(Exception):
    """The root of every error the harness raises on purpose."""


class UsageError(SseHarnessError, ValueError):
    """The user's mistake: a bad profile, argument, file or case module. Exit 2, naming it."""


class ProfileError(UsageError):
    """A profile that cannot be used; the message names the key."""


class HarnessError(SseHarnessError):
    """The harness could not do its part (our timeout, our browser, our proxy): outcome ``error``."""


class TargetFault(SseHarnessError):
    """The target misbehaved so that the case cannot continue: outcome ``fail``, with a
    finding that says what was expected and what was observed."""

    def __init__(self, message: str, expected: Any = None, observed: Any = None,
                 severity: Severity = Severity.FAIL) -> None:
        super().__init__(message)
        # CONFOUNDED: a wait that ended at its deadline while the machine's starvation explains
        # the lateness (the case is tried again, as for any confounded timing).
        self.expected, self.observed, self.severity = expected, observed, severity


class Skip(Exception):
    """The case does not apply to this target: outcome ``skip``, with the reason."""
