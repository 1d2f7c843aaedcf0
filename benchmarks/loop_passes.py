"""Run the reference server with a trio Instrument on its loop: how long each pass of the scheduler
took and which tasks made the slow ones, written as JSON to FILE every 3 s and at exit.

    python benchmarks/loop_passes.py FILE [reference server arguments]
    python benchmarks/streams.py --loop-trace FILE 4000     (each reference run traced to FILE.N)

Why: a pass runs every runnable task once, so a request that needs several passes waits for each
slow one, and a fan-out's subscribers wait for the passes between its slices. This is how the three
causes in docs/reference-server.md ("The Fanout task and batched accepts") were found: one accept
per pass, a whole job's fan-out in one pass, subscriber tasks woken in bulk. A debugging aid for the
benchmark, not part of the server. Times are wall clock: on a busy machine a preempted process
counts, so compare runs on a quiet one. The instrument itself costs a few per cent of CPU.

FILE holds: passes (count), pass_ms (p50/p99/max over the last 20,000), steps_per_pass (p50/p99/max),
slow_passes (the last 200 passes over SLOW_MS: seconds since start, ms, the four task names that
took longest in it with their step count and ms) and gc (collections per generation, the longest
ten with their ms).
"""

from __future__ import annotations

import atexit
import gc
import json
import sys
import time
from collections import deque
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
SLOW_MS = 30.0
KEEP = 20_000


class Passes(trio.abc.Instrument):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.started = time.perf_counter()
        self.count = 0
        self.lengths: deque[float] = deque(maxlen=KEEP)
        self.steps: deque[int] = deque(maxlen=KEEP)
        self.slow: deque[tuple] = deque(maxlen=200)
        self.gc: list[tuple[int, float]] = []
        self._pass_started: float | None = None
        self._step_started = 0.0
        self._tasks: dict[str, list] = {}
        self._written = 0.0
        self._gc_started = 0.0

    # -- the scheduler's hooks ---------------------------------------------------------------
    def after_io_wait(self, timeout: float) -> None:
        self._pass_started = time.perf_counter()
        self._tasks = {}

    def before_io_wait(self, timeout: float) -> None:
        if self._pass_started is None:
            return
        now = time.perf_counter()
        length = (now - self._pass_started) * 1000
        self.count += 1
        self.lengths.append(length)
        self.steps.append(sum(c for c, _ in self._tasks.values()))
        if length > SLOW_MS:
            top = sorted(self._tasks.items(), key=lambda kv: -kv[1][1])[:4]
            self.slow.append((round(now - self.started, 2), round(length, 1),
                              [(name, c, round(ms, 1)) for name, (c, ms) in top]))
        if now - self._written > 3:
            self._written = now
            self.write()

    def before_task_step(self, task) -> None:
        self._step_started = time.perf_counter()

    def after_task_step(self, task) -> None:
        ms = (time.perf_counter() - self._step_started) * 1000
        entry = self._tasks.setdefault(task.name.rsplit(".", 1)[-1][:60], [0, 0.0])
        entry[0] += 1
        entry[1] += ms

    # -- the collector's ----------------------------------------------------------------------
    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc.append((info["generation"], (time.perf_counter() - self._gc_started) * 1000))

    def write(self) -> None:
        def spread(values) -> list:
            ordered = sorted(values)
            if not ordered:
                return []
            return [round(ordered[len(ordered) // 2], 2), round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
                    round(ordered[-1], 2)]

        summary = {
            "passes": self.count, "pass_ms": spread(self.lengths), "steps_per_pass": spread(self.steps),
            "slow_passes": list(self.slow),
            "gc": {"collections": {g: sum(1 for x in self.gc if x[0] == g) for g in (0, 1, 2)},
                   "longest_ms": [(g, round(ms, 1)) for g, ms in sorted(self.gc, key=lambda x: -x[1])[:10]]},
        }
        self.out.write_text(json.dumps(summary))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    instrument = Passes(out)
    gc.callbacks.append(instrument.on_gc)
    atexit.register(instrument.write)
    sys.path.insert(0, str(ROOT))
    from reference_server._cli import main as server_main

    plain_run = trio.run

    def traced_run(*args, **kwargs):
        kwargs["instruments"] = [*kwargs.get("instruments", ()), instrument]
        return plain_run(*args, **kwargs)

    trio.run = traced_run  # the server's own trio.run, with the instrument
    try:
        sys.exit(server_main(sys.argv[2:]))
    finally:
        trio.run = plain_run
        instrument.write()


if __name__ == "__main__":
    main()
