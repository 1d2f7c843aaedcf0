"""Repeatability: the suite several times against the reference server itself, the correct and
legal variants, and timing-sensitive faults; prints every case whose outcome was not the same
in every run.

    python benchmarks/repeatability.py [CORRECT_RUNS] [FAULT_RUNS]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import load_profile  # noqa: E402
from harness._runner import run_suite  # noqa: E402
from conftest import RunningServer, reference_args  # noqa: E402
from test_variants import DETECTION, variant  # noqa: E402

LEGAL = ["legal-crlf", "legal-cr", "legal-misc"]  # whole suite: they must pass every time too
TIMING_FAULTS = ["keepalive-slow", "cancel-slow", "batched", "cadence-slow", "replay-race"]
# Faults that once gave exit 1 in one run and 2 in the next (family 10 `error` instead of the
# target's fail): the whole suite, browser included; the exit code must be 1 every time.
WHOLE_SUITE_FAULTS = ["wrong-content-type", "stream-open-after-terminal", "batched", "stage-backwards",
                      "garbage-lei-500"]


async def runs(name: str, times: int, only=()) -> tuple[dict[str, list[str]], list[int]]:
    seen: dict[str, list[str]] = defaultdict(list)
    exits: list[int] = []
    for _ in range(times):
        # The reference server as shipped: its stream path is not the variants' (tests/variants).
        server = RunningServer(reference_args()) if name == "reference" else variant(name)
        try:
            report = await run_suite(load_profile(base_url=server.base_url), only=only, parallel=8)
        finally:
            server.stop()
        for r in report.results:
            seen[r.id].append(r.outcome)
        exits.append(report.exit_code())
    return seen, exits


async def main() -> None:
    correct_runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    fault_runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    plan = ([("reference", correct_runs, ()), ("correct", correct_runs, ())] + [(f, fault_runs, DETECTION[f][0]) for f in TIMING_FAULTS]
            + [(name, fault_runs, ()) for name in LEGAL]
            + [(f"{name} (whole)", fault_runs, ()) for name in WHOLE_SUITE_FAULTS])
    for label, times, only in plan:
        seen, exits = await runs(label.split(" ")[0], times, only)
        unstable = {case: outs for case, outs in seen.items() if len(set(outs)) > 1}
        verdicts = sorted({str(o) for outs in seen.values() for o in outs})
        print(f"{label:<16} {times} runs x {len(seen)} cases: "
              f"{'identical every time' if not unstable else 'UNSTABLE ' + str(unstable)}; outcomes seen {verdicts}; "
              f"exit codes {exits}{'' if len(set(exits)) == 1 else ' NOT THE SAME'}", flush=True)


if __name__ == "__main__":
    trio.run(main)
