"""The target a command runs against, set up in one place for `run`, `load`, `matrix`, `probe`
and the pytest plugin: which profile, whose server (the user's, or the embedded reference server
started and stopped here), whether it runs on this host, the effective timing, how to restart it
and which browser the browser families use.

Two steps, so that a user's mistake is said before anything starts: ``plan_target`` reads the
arguments into a ``TargetPlan`` (a bad profile or URL raises ProfileError, the user's); then
``async with start_target(plan) as target:`` binds it to a running server and yields a
``Target``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import tomllib
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from ._load_starvation import loopback_port
from ._profile import Profile, load_profile
from ._restart import Restart, restart_for
from ._starvation import find_listening_pid

__all__ = ["REFERENCE", "Target", "TargetPlan", "Timing", "discover_browser", "effective_timing", "is_loopback",
           "is_same_host", "listening_pid", "names_its_target", "plan_target", "resolve_profile", "start_target",
           "users_target"]

REFERENCE = "reference"  # a profile argument naming the embedded reference server, judged by the contract

# What a setting is when neither the profile nor the target's healthz gives it: the contract's
# keepaliveSeconds "default 10" (shared/contract.md, the event stream, 4) and the reference
# server's cancelDeadlineMs 1000 (docs/contract.md, cancellation).
KEEPALIVE_SECONDS = 10.0
CANCEL_DEADLINE_MS = 1000.0


# -- where the target runs ------------------------------------------------------------------------

def is_loopback(base_url: str) -> bool:
    """Whether the URL's host is this host's loopback (127.0.0.0/8, ::1, localhost)."""
    return loopback_port(base_url) is not None


def is_same_host(base_url: str, setting: str | bool = "auto") -> bool:
    """Whether the target runs on this host (``--same-host auto|yes|no``; a bool is decided
    already): on loopback unless the user says otherwise."""
    if isinstance(setting, bool):
        return setting
    if setting in ("yes", "no"):
        return setting == "yes"
    return is_loopback(base_url)


def listening_pid(base_url: str) -> int | None:
    """The pid listening on a loopback target's port (its run-queue wait can then be measured),
    or None (another host, or a process we cannot see)."""
    port = loopback_port(base_url)
    return find_listening_pid(port) if port else None


# -- the effective timing ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Timing:
    """The timing a run judges by: the profile's values, else what the target advertises on
    healthz, else the contract's defaults."""

    keepalive: float  # seconds
    cancel_deadline: float  # seconds
    timing_slack: float  # every tolerance is widened by this factor (>= 1)
    tolerance_fraction: float  # the profile's [timing]: a timing's tolerance is this share of it,
    tolerance_min: float  # at least this (seconds)
    terminal_close: float  # seconds from the terminal event to the stream's end

    # The rules every judge applies (the suite's cases and the load users alike).
    def tolerance(self, seconds: float) -> float:
        """The tolerance on a timing of ``seconds``: the profile's fraction of it (at least its
        minimum), widened by the timing slack."""
        return max(self.tolerance_fraction * seconds, self.tolerance_min) * self.timing_slack

    @property
    def close_within(self) -> float:
        """How soon after its terminal event a stream must end, widened by the timing slack."""
        return self.terminal_close * self.timing_slack

    @property
    def cancel_limit(self) -> float:
        """How soon after the cancel request its terminal event must come: the deadline, and
        100 ms (widened by the slack) for our own request and read on this host."""
        return self.cancel_deadline + 0.1 * self.timing_slack


def _setting(profile: Profile, health: Mapping[str, Any], timing_key: str, health_key: str, fallback: float) -> float:
    configured = profile.timing[timing_key]
    if configured > 0:
        return configured
    advertised = health.get(health_key)
    if isinstance(advertised, (int, float)) and not isinstance(advertised, bool) and advertised > 0:
        return float(advertised)
    return fallback


def effective_timing(profile: Profile, health: Mapping[str, Any] | None = None) -> Timing:
    """The timing for ``profile`` against a target whose healthz said ``health``."""
    health = health or {}
    return Timing(
        keepalive=_setting(profile, health, "keepalive_seconds", "keepaliveSeconds", KEEPALIVE_SECONDS),
        cancel_deadline=_setting(profile, health, "cancel_deadline_ms", "cancelDeadlineMs", CANCEL_DEADLINE_MS) / 1000,
        timing_slack=float(profile.timing.get("timing_slack", 1.0)) or 1.0,
        tolerance_fraction=float(profile.timing["tolerance_fraction"]),
        tolerance_min=float(profile.timing["tolerance_min_seconds"]),
        terminal_close=float(profile.timing["terminal_close_seconds"]))


# -- which profile, whose server ---------------------------------------------------------------------

def names_its_target(profile_path: str | Path | None) -> bool:
    """Whether a profile file sets [target].base_url, naming its server as --target does."""
    if not profile_path or str(profile_path) == REFERENCE:
        return False
    try:
        target = tomllib.loads(Path(profile_path).read_text()).get("target", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load_profile says what is wrong with the file
    return isinstance(target, dict) and bool(target.get("base_url"))


def resolve_profile(profile_path: str | Path | None = None, target_url: str | None = None,
                    timing_slack: float | None = None) -> Profile:
    """The profile a command judges by: a file, or the contract (None, or ``reference``), bound
    to ``target_url`` when given, with --timing-slack in force. Raises ProfileError."""
    path = None if profile_path is None or str(profile_path) == REFERENCE else profile_path
    return load_profile(path, base_url=target_url).with_timing_slack(timing_slack)


@dataclasses.dataclass(frozen=True)
class TargetPlan:
    """What the arguments say of the target, before anything runs."""

    profile: Profile  # its base_url is the user's server's, or a placeholder when ``embedded``
    embedded: bool  # nothing names the target: the harness starts the reference server for it
    same_host: str | bool = "auto"  # --same-host auto|yes|no
    browser: str | None = None  # --browser as given


def plan_target(profile_path: str | Path | None = None, target_url: str | None = None, *,
                timing_slack: float | None = None, same_host: str | bool = "auto",
                browser: str | None = None) -> TargetPlan:
    """The target named by --target, else by the profile file's [target].base_url; without
    either (and for the profile ``reference``), the embedded reference server, judged by the
    profile given (a stream profile of its job stream too). Raises ProfileError."""
    profile = resolve_profile(profile_path, target_url, timing_slack)
    embedded = not target_url and not names_its_target(profile_path)
    return TargetPlan(profile, embedded, same_host, browser)


@dataclasses.dataclass(frozen=True)
class Target:
    """A target that answers: the profile bound to its address, and what the cases need of it."""

    profile: Profile
    same_host: bool
    restart: Restart | None  # how to restart it (family 11), None when the harness cannot
    browser: str | None  # the browser found (or the one named, as given, for the cases to say why it fails)
    server: Any = None  # harness._server_process.ServerProcess when the harness started it

    @property
    def embedded(self) -> bool:
        return self.server is not None

    @property
    def target_pid(self) -> int | None:
        """The embedded server's process (it changes when the server is restarted)."""
        return self.server.pid if self.server is not None else None

    @property
    def base_url(self) -> str:
        return self.profile.base_url

    def suite_options(self) -> dict[str, Any]:
        """The target's part of ``run_suite``'s keyword arguments."""
        return dict(same_host=self.same_host, restart=self.restart, browser=self.browser, target_pid=self.target_pid)


def discover_browser(explicit: str | None) -> str | None:
    """The browser the browser families use: the one named (--browser), else $SSE_HARNESS_BROWSER,
    else one on PATH (harness._browser.find_browser). None when there is none, and the name as
    given when it is not usable: the browser cases then say why (a skip, or an error)."""
    from ._browser import BrowserUnavailable, find_browser

    try:
        return find_browser(explicit)
    except BrowserUnavailable:
        return explicit


@contextlib.asynccontextmanager
async def start_target(plan: TargetPlan, *, max_concurrent_jobs: int | None = None) -> AsyncIterator[Target]:
    """The planned target, answering: the user's as it is, or the embedded reference server
    started for the block (``max_concurrent_jobs``: its job capacity, default the server's) and
    stopped by its pid after it. Raises ServerStartError (a HarnessError) when it did not start,
    saying so when this install has not got sse-harness[server]."""
    if not plan.embedded:
        yield users_target(plan)
        return
    from ._server_process import reference_server_args, server_process

    with tempfile.TemporaryDirectory(prefix="sse-harness-") as data_dir:
        jobs = {} if max_concurrent_jobs is None else {"max_concurrent_jobs": max_concurrent_jobs}
        async with server_process(reference_server_args(data_dir, **jobs)) as server:
            profile = plan.profile.with_base_url(server.base_url)
            yield Target(profile, is_same_host(profile.base_url, plan.same_host), restart_for(profile, server),
                         discover_browser(plan.browser), server)


def users_target(plan: TargetPlan) -> Target:
    """A target the user named (--target, [target].base_url): nothing to start; restarted by the
    profile's [restart] command, if it has one."""
    if plan.embedded:
        raise ValueError("users_target: this plan is the embedded server's (start_target starts it)")
    profile = plan.profile
    return Target(profile, is_same_host(profile.base_url, plan.same_host), restart_for(profile),
                  discover_browser(plan.browser))

