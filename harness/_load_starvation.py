"""How starved the machine left a load worker and a same-host target: the samples a load worker
keeps (bounded) so that a timing the machine explains is not called the target's failure.

No gevent and no trio here: ``harness.load`` feeds it from its probe greenlet (the worker's
loop delay every 50 ms; the target's run-queue wait and the machine's CPU pressure, read from
/proc, every ~100 ms), and the tests feed it hand-built samples. Times are ``time.perf_counter()``.
The window's judgement is ``harness._starvation.Starvation.explained``, as for the conformance
cases; the verdict is ``harness._invariants.judge_timing``.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
from urllib.parse import urlsplit

from ._starvation import (Explained, ProcessSeries, Starvation, ProcessGroup, find_listening_pid, machine_pressure_seconds,
                          process_wait_seconds)

__all__ = ["TargetProcess", "WorkerStarvation", "loopback_port"]

KEEP = 20_000  # samples of each kind: 1,000 s of loop delay at 50 ms, 2,000 s of /proc readings at 100 ms
FRESH = 0.02  # a judgement reads /proc itself when the last reading is older than this


def loopback_port(base_url: str) -> int | None:
    """The port of a target on this host's loopback (where its process can be looked up), or None
    for any other host."""
    parts = urlsplit(base_url)
    name = (parts.hostname or "").lower()
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
        return (parts.port or (443 if parts.scheme == "https" else 80)) if loopback else None
    except ValueError:  # not an address, or a bad port
        return None


@dataclasses.dataclass(frozen=True)
class TargetProcess:
    """What a load worker can see of the target's scheduling."""

    pid: int | None
    label: str
    remote: bool  # on another host: neither its process nor this machine's pressure says anything of it

    @classmethod
    def find(cls, host: str, given_pid: int = 0) -> TargetProcess:
        port = loopback_port(host)
        if port is None:
            return cls(None, f"not visible ({urlsplit(host).hostname or host} is not this host's loopback)", True)
        # A given pid counts only for a loopback host: a worker on another machine gets the
        # master's options too, and the pid there names some other process.
        if given_pid > 0 and process_wait_seconds(given_pid) is not None:
            return cls(given_pid, f"pid {given_pid}", False)
        pid = find_listening_pid(port)
        if pid is not None:
            return cls(pid, f"pid {pid} (listening on port {port})", False)
        return cls(None, f"pid not found (port {port}); the machine's CPU pressure stands for its wait", False)


def _recent(samples: collections.deque[tuple[float, float]], since: float) -> list[tuple[float, float]]:
    """The samples from the last one at or before ``since`` on, oldest first: a window's samples
    without copying the whole buffer."""
    out = []
    for sample in reversed(samples):
        out.append(sample)
        if sample[0] <= since:
            break
    out.reverse()
    return out


class WorkerStarvation:
    """One worker process's samples: its loop delay (t, seconds late: the loop was blocked from
    t - late to t), the target's cumulative run-queue wait (as the conformance cases count it:
    its few most-waiting threads in each interval) and the machine's cumulative CPU pressure
    (t, seconds), each bounded to the newest ``keep``."""

    def __init__(self, *, probe_period: float, keep: int = KEEP) -> None:
        self.probe_period, self.keep = probe_period, keep
        self.delays: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self._group: ProcessGroup | None = None  # the target's threads, when its pid is known
        self.target_waits: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self.pressure: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self.target: TargetProcess | None = None
        self.probe_asked: float | None = None  # when the probe's pending sleep began (None: no probe)
        self._logged: dict[str, float] = {}  # each reading as the statistics have it so far

    def observe(self, target: TargetProcess) -> bool:
        """From now on, the target's wait is that of ``target``; True when that is a change."""
        if target == self.target:
            return False
        self.target = target
        pid = target.pid
        self._group = ProcessGroup("target", lambda: [pid], target.label, self.keep) if pid is not None else None
        self.target_waits = self._group.samples if self._group is not None else collections.deque(maxlen=self.keep)
        self._logged.pop("target wait", None)
        return True

    def read_proc(self, now: float) -> None:
        """One reading of the target's run-queue wait and, unless it is on another host, the
        machine's CPU pressure."""
        target = self.target
        if self._group is not None:
            self._group.sample(now)
        if target is None or not target.remote:
            pressure = machine_pressure_seconds()
            if pressure is not None:
                self.pressure.append((now, pressure))

    def growth(self) -> dict[str, float]:
        """Each reading's growth (seconds) since the last call: ``target wait`` and ``CPU
        pressure``, for the statistics."""
        out = {}
        for name, series in (("target wait", self.target_waits), ("CPU pressure", self.pressure)):
            if not series:
                continue
            value = series[-1][1]
            before = self._logged.get(name)
            self._logged[name] = value
            if before is not None:
                out[name] = max(0.0, value - before)
        return out

    def refresh(self, now: float) -> None:
        """A reading now unless the last is fresh: the probe's may be up to ~100 ms old, and a
        window judged now ends now."""
        latest = max((s[-1][0] for s in (self.target_waits, self.pressure) if s), default=None)
        if latest is None or now - latest > FRESH:
            self.read_proc(now)

    def explained(self, start: float, end: float, *, now: float) -> Explained:
        """What the machine may have added to a timing in [start, end] (judged at ``now``): this
        worker's longest loop stall then (one still going on, the probe late right now, counted
        too), plus the target's wait for a core (or, its pid unknown on this host, the machine's
        CPU pressure; nothing for a target on another host). Pure over the samples."""
        own = _recent(self.delays, start)
        if self.probe_asked is not None and now - self.probe_asked > self.probe_period:
            own.append((now, now - self.probe_asked - self.probe_period))
        target = self.target
        processes = ()
        if target is not None and target.pid is not None:
            processes = (ProcessSeries("target", target.label, tuple(_recent(self.target_waits, start))),)
        starvation = Starvation(own=tuple(own), processes=processes, machine=tuple(_recent(self.pressure, start)),
                                remote=target is not None and target.remote)
        return starvation.explained(start, end)
