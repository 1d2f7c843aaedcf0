"""How starved the machine left the harness (and a target or browser on the same host) while a
timing was measured: the evidence that lets a timing verdict say whether the target decided it.

Three sources, each sampled on the harness's own loop while cases run:

- the harness's loop: how late a short sleep woke (the loop was blocked, or the process waited
  for a core); what it read then, it read that much late;
- a process on this host whose pid is known (the embedded server, a ``--target`` on loopback
  found by its listening port, the browser the harness started): the run-queue wait of its
  threads, from ``/proc/PID/task/*/schedstat`` (time runnable but not running);
- the machine: CPU pressure (``/proc/pressure/cpu``, "some"), the time at least one task waited
  for a core: an upper bound for a same-host process whose pid is not known.

``StarvationMonitor`` samples; ``Starvation`` is a frozen copy of the samples that pure checks
judge with (``explained(start, end)``), unit-testable on hand-built samples.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import trio

__all__ = ["Explained", "ProcessGroup", "ProcessSeries", "Starvation", "StarvationMonitor", "descendants", "find_listening_pid",
           "every", "machine_pressure_seconds", "process_name", "process_wait_seconds", "thread_waits"]

_PSI = Path("/proc/pressure/cpu")


def thread_waits(pid: int, *, max_threads: int = 256) -> dict[int, float]:
    """The run-queue wait so far (seconds) of each of a process's threads (empty when /proc says
    nothing about it: gone, another namespace, no schedstat)."""
    out: dict[int, float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")[:max_threads]
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                fields = fh.read(200).split()
            out[int(tid)] = int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return out


def process_wait_seconds(pid: int, *, max_threads: int = 256) -> float | None:
    """The run-queue wait so far (seconds) of a process's threads together, or None."""
    waits = thread_waits(pid, max_threads=max_threads)
    return sum(waits.values()) if waits else None


def machine_pressure_seconds() -> float | None:
    """CPU pressure so far ("some": time at least one runnable task waited), or None without PSI."""
    try:
        text = _PSI.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some"):
            for field in line.split():
                if field.startswith("total="):
                    return int(field[6:]) / 1e6
    return None


def find_listening_pid(port: int) -> int | None:
    """The pid of the process listening on ``port`` on this host (via /proc/net/tcp{,6} and the
    processes' socket fds), or None when it cannot be seen (another namespace, no permission)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) in wanted:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


def process_name(pid: int) -> str:
    """A process's command name (``comm``), or "" when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def descendants(root: int, *, named: str = "") -> list[int]:
    """The processes below ``root`` (by parent pid), optionally only those whose command name
    starts with ``named`` (e.g. the browser the harness's Playwright driver started)."""
    parents: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read(512).decode(errors="replace")
        except OSError:
            continue
        name = stat[stat.find("(") + 1:stat.rfind(")")]
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) > 1:
            parents[int(rest[1])].append((int(entry.name), name))
    out, todo = [], [root]
    while todo:
        for pid, name in parents.get(todo.pop(), ()):
            todo.append(pid)
            if name.startswith(named):
                out.append(pid)
    return out


def every(seconds: float, find: Callable[[], list[int]]) -> Callable[[], list[int]]:
    """``find`` (a scan of /proc, say), called again only when ``seconds`` have passed: the
    monitor asks for its pids every sample, ten times a second."""
    found: dict[str, Any] = {"at": -float("inf"), "pids": []}

    def pids() -> list[int]:
        now = time.monotonic()
        if now - found["at"] >= seconds:
            found["at"], found["pids"] = now, find()
        return found["pids"]

    return pids


def _delta(series: tuple[tuple[float, float], ...], start: float, end: float) -> float | None:
    """The growth of a cumulative series over [start, end], widened to the samples around it
    (an upper bound: what happened between samples is counted whole). The series is in time
    order: found by bisection, since a check asks once per event of a stream."""
    if not series:
        return None
    before = bisect.bisect_right(series, start, key=_time) - 1  # the last sample at or before start
    after = bisect.bisect_left(series, end, key=_time)  # the first sample at or after end
    if before < 0 and series[0][0] > start + 1.0:
        return None  # the window began before sampling did: not measured
    if after == len(series) and series[-1][0] < end - 1.0:
        return None  # sampling stopped before the window ended
    low = series[max(before, 0)][1]
    high = series[min(after, len(series) - 1)][1]
    return max(0.0, high - low)


def _time(sample: tuple[float, float]) -> float:
    return sample[0]


@dataclasses.dataclass(frozen=True)
class Explained:
    """How much of a window's delay the machine may have caused, by source (seconds)."""

    own: float  # the harness's longest loop stall overlapping the window (or its few longest: own_steps)
    process: float | None  # the observed process's run-queue wait in the window (None: not measured)
    machine: float | None  # the machine's CPU pressure in the window (None: no PSI, or another host)
    window: float
    process_known: bool  # the observed process's own wait is the bound (its pid was known)
    role: str = "target"

    @property
    def total(self) -> float:
        """The bound: our own stall, plus the observed process's wait (or, for a same-host process
        whose pid is not known, the machine's pressure; for a process on another host, nothing)."""
        other = self.process if self.process_known else self.machine
        return self.own + (other or 0.0)

    def figures(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 1)
        return {"ownStallMs": ms(self.own), f"{self.role}WaitMs": ms(self.process),
                "machineStallMs": ms(self.machine), "windowMs": ms(self.window), "explainedMs": ms(self.total)}

    def describe(self) -> str:
        parts = [f"the harness's loop stalled {self.own * 1000:.0f} ms"]
        if self.process_known and self.process is not None:
            parts.append(f"the {self.role} waited {self.process * 1000:.0f} ms for a core")
        elif self.machine is not None:
            parts.append(f"the machine's CPU pressure was {self.machine * 1000:.0f} ms")
        return ", ".join(parts) + f" in a {self.window:.2f} s window"


@dataclasses.dataclass(frozen=True)
class ProcessSeries:
    """One observed process group's cumulative run-queue wait: (t, seconds) samples."""

    role: str  # "target", "browser"
    label: str  # what it is: "pid 1234 (listening on port 8080)"
    samples: tuple[tuple[float, float], ...]


@dataclasses.dataclass(frozen=True)
class Starvation:
    """Samples of starvation, frozen for pure checks. Times are ``time.monotonic()``.

    ``own``: (t, stall): the harness's loop was blocked from t - stall to t. ``processes``: each
    observed group's cumulative run-queue wait. ``machine``: (t, cumulative CPU pressure).
    ``remote``: the target runs on another host, where neither its process nor this machine's
    pressure says anything about it.
    """

    own: tuple[tuple[float, float], ...] = ()
    processes: tuple[ProcessSeries, ...] = ()
    machine: tuple[tuple[float, float], ...] = ()
    remote: bool = False

    def own_during(self, start: float, end: float, steps: int = 1) -> float:
        """The harness's loop stalls overlapping [start, end] that could delay a timing made of
        ``steps`` of our own steps one after another (a read, then a request): the ``steps``
        longest, summed. Not every stall: many short ones in a long window delay one step once."""
        stalls = sorted((lag for t, lag in self.own if t >= start and t - lag <= end), reverse=True)
        return sum(stalls[:max(1, steps)])

    def series(self, role: str) -> ProcessSeries | None:
        return next((s for s in self.processes if s.role == role and s.samples), None)

    def explained(self, start: float, end: float, *, own: bool = True, role: str = "target",
                  own_steps: int = 1) -> Explained:
        """What the machine may have cost in [start, end] to the harness and to the process in
        ``role``; ``own=False`` for a timing that only the target's clock measured (the gap
        between two of its ts), where our own stalls do not count; ``own_steps``: how many of
        our own steps, one after another, the timing holds (``own_during``)."""
        end = max(end, start)
        series = self.series(role)
        remote = self.remote and role == "target"
        process = _delta(series.samples, start, end) if series is not None else None
        machine = None if remote else _delta(self.machine, start, end)
        return Explained(own=self.own_during(start, end, own_steps) if own else 0.0, process=process, machine=machine,
                         window=end - start, process_known=series is not None or remote, role=role)

    def figures(self) -> dict[str, Any]:
        """The whole run's figures, for a report's environment."""
        runs = [s for s in (self.own, self.machine, *(p.samples for p in self.processes)) if s]
        if not runs:
            return {}
        start, end = min(s[0][0] for s in runs), max(s[-1][0] for s in runs)
        out = self.explained(start, end).figures()
        out["ownStallMaxMs"] = out.pop("ownStallMs")
        for series in self.processes:
            wait = _delta(series.samples, start, end)
            out[f"{series.role}WaitMs"] = None if wait is None else round(wait * 1000, 1)
            out[f"{series.role}Observed"] = series.label
        if self.remote:
            out["targetObserved"] = "not visible (another host)"
        return out


class ProcessGroup:
    """A process group's wait for a core, as one cumulative series: each sampling interval adds
    the waits of its ``chain`` most-waiting threads in that interval. What delays one timing is
    a chain of a few threads (a server's loop, a browser's renderer, network and I/O threads);
    summing every thread of a many-threaded process (a browser has hundreds) would excuse
    anything on a busy machine, while the top few per interval bound any such chain."""

    def __init__(self, role: str, pids: Callable[[], Iterable[int]], label: str, keep: int, chain: int = 3) -> None:
        self.role, self.pids, self.label, self.chain = role, pids, label, chain
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self._last: dict[tuple[int, int], float] = {}
        self._total = 0.0

    def sample(self, now: float) -> None:
        current: dict[tuple[int, int], float] = {}
        for pid in self.pids():
            for tid, wait in thread_waits(pid).items():
                current[(pid, tid)] = wait
        if not current and not self.samples:
            return
        grown = sorted((wait - self._last[key] for key, wait in current.items() if key in self._last), reverse=True)
        self._total += sum(max(0.0, g) for g in grown[:self.chain])
        self._last = current
        self.samples.append((now, self._total))


class StarvationMonitor:
    """Samples the harness's loop lateness every ``period``, and every ``proc_period`` the
    observed processes' run-queue wait and the machine's CPU pressure. Bounded: the newest
    ``keep`` samples of each."""

    def __init__(self, *, period: float = 0.02, proc_period: float = 0.1, keep: int = 100_000,
                 remote: bool = False) -> None:
        self.period, self.proc_period, self.keep, self.remote = period, proc_period, keep, remote
        self.own: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self.machine: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self._groups: dict[str, ProcessGroup] = {}

    def observe(self, role: str, pids: Callable[[], Iterable[int]], label: str) -> None:
        """From now on, sample the run-queue wait of the processes ``pids()`` names, as ``role``
        (the target, found by its pid or port; the browser, found below the harness's process)."""
        if role not in self._groups:
            self._groups[role] = ProcessGroup(role, pids, label, self.keep)

    def observing(self, role: str) -> bool:
        return role in self._groups

    def _sample_processes(self, now: float) -> None:
        pressure = machine_pressure_seconds()
        if pressure is not None:
            self.machine.append((now, pressure))
        for group in self._groups.values():
            group.sample(now)

    async def run(self) -> None:
        next_proc = 0.0
        while True:
            before = time.monotonic()
            await trio.sleep(self.period)
            after = time.monotonic()
            late = after - before - self.period
            if late > 0.005:
                self.own.append((after, late))
            if after >= next_proc:
                self._sample_processes(after)
                next_proc = after + self.proc_period

    def snapshot(self) -> Starvation:
        return Starvation(own=tuple(self.own), machine=tuple(self.machine), remote=self.remote,
                          processes=tuple(ProcessSeries(g.role, g.label, tuple(g.samples))
                                          for g in self._groups.values()))
