"""The load mix's options, declared once: `sse-harness load --NAME` and locust's `--sse-NAME`
(what `sse-harness load` forwards to locust, and what a plain ``locust -f`` run takes) are both
made from ``LOAD_OPTIONS``, and ``harness.load.LoadPlan`` reads them by the same names.

No locust here: the command line imports it without sse-harness[load].
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

__all__ = ["LOAD_OPTIONS", "LoadOption", "add_to", "forwarded", "option_values", "settings"]


def share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share is within [0, 1], not {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def slack(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"a timing slack is a factor >= 1 (it only widens tolerances), not {value}")
    return value


@dataclasses.dataclass(frozen=True)
class LoadOption:
    """One option of the mix. ``name`` makes the flags (``--NAME`` for `sse-harness load`,
    ``--sse-NAME`` for locust) and the attribute (``sse_NAME`` on locust's parsed options).
    ``default`` None: not set (the profile or the target decides)."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    command: bool = True  # offered by `sse-harness load` (else a locust option only; the command sets it itself)

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def locust_flag(self) -> str:
        return f"--sse-{self.name}"

    @property
    def attribute(self) -> str:
        return "sse_" + self.name.replace("-", "_")

    @property
    def dest(self) -> str:
        """Its attribute on `sse-harness load`'s arguments."""
        return self.name.replace("-", "_")


LOAD_OPTIONS: tuple[LoadOption, ...] = (
    LoadOption("subscribers", positive_int, 1, "users following each job (fan-out)", "N"),
    LoadOption("cancel-share", share, 0.2, "share of jobs cancelled at a random stage (default 0.2)", "F"),
    LoadOption("cut-share", share, 0.2, "share of jobs cut once at a random moment and resumed with Last-Event-ID "
                                         "(default 0.2)", "F"),
    LoadOption("cut-within", float, 3.0, "cuts come within this many seconds of connecting (default 3)", "S"),
    LoadOption("stage-seconds", float, None, "job knob stageSeconds for every stage", "S"),
    LoadOption("stall-seconds", float, None, "job knob stallSeconds in the first stage", "S"),
    LoadOption("scenes", int, None, "job field scenes (1-20)", "N"),
    LoadOption("job-id", str, None, "attach every user to this job instead of creating jobs", "ID"),
    LoadOption("stream-url", str, None, "attach every user to this stream URL instead of creating jobs", "URL"),
    LoadOption("job-timeout", float, None, "seconds a job may take to its terminal event "
                                                   "(default: the profile's)", "S"),
    LoadOption("timing-slack", slack, None, "widen every timing tolerance by this factor, as `run --timing-slack` "
                                             "does (default: the profile's [timing].timing_slack)", "FACTOR"),
    LoadOption("session-seconds", float, 10.0, "a stream profile whose stream never ends by itself: "
                                                        "seconds each reader follows it (default 10)", "S"),
    LoadOption("jobs-per-user", positive_int, 1000, "a user stops after this many jobs (default 1000)", "N",
               command=False),
    LoadOption("profile", str, None, "target profile TOML (default: the contract)", "FILE", command=False),
    LoadOption("target-pid", int, None, "the target's pid when it runs on this host (default: found by the port "
                                        "it listens on, for a loopback host)", "PID", command=False),
)


def add_to(group: Any, *, locust: bool) -> None:
    """Declare the options on an argparse parser or group: locust's ``--sse-NAME`` (every
    option), or `sse-harness load`'s ``--NAME`` (those it offers)."""
    for option in LOAD_OPTIONS:
        if locust:
            group.add_argument(option.locust_flag, type=option.type, default=option.default, help=option.help,
                               metavar=option.metavar)
        elif option.command:
            group.add_argument(option.flag, type=option.type, default=option.default, help=option.help,
                               metavar=option.metavar)


def forwarded(args: argparse.Namespace) -> list[str]:
    """`sse-harness load`'s options as locust's ``--sse-NAME`` arguments (those set)."""
    out: list[str] = []
    for option in LOAD_OPTIONS:
        value = getattr(args, option.dest, None) if option.command else None
        if value is not None:
            out += [option.locust_flag, str(value)]
    return out


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """`sse-harness load`'s options as the load report's settings: ``cancelShare``..."""
    def camel(name: str) -> str:
        first, *rest = name.split("-")
        return first + "".join(word.title() for word in rest)

    return {camel(option.name): getattr(args, option.dest, None) for option in LOAD_OPTIONS if option.command}


def option_values(options: Any) -> dict[str, Any]:
    """``{name: value}`` from locust's parsed options (None, or one without these: the defaults)."""
    return {option.name: getattr(options, option.attribute, option.default) if options is not None
            else option.default for option in LOAD_OPTIONS}
