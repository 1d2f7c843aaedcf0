"""Verdicts on a busy machine: K whole-suite runs at once (each `sse-harness run` its own process,
with its own embedded reference server and Chromium: what a shared CI runner with several jobs
looks like), R rounds. Prints every outcome that is not pass/non-strict, per run, with the run's
exit code, duration, load average and the report's starvation figures, then a summary: false
fails (any `fail` on a correct server), errors with their reasons, cases tried again.

With --fault NAME, each run is against `tests/variants/server.py NAME` (one server per run, on a
free loopback port, stopped by its pid), and the summary says per fault whether every run still
failed by the same cases as on a quiet machine: the cases tests/test_variants.py and
tests/test_variants_browser.py expect, or, with --quiet-first, the cases one run alone failed
by. NAME may also be `correct` or a legal-* variant: correct servers, where any fail is false.

    .venv/bin/python benchmarks/busy_verdicts.py --parallel 3 --rounds 3
    .venv/bin/python benchmarks/busy_verdicts.py --parallel 3 --rounds 1 --fault keepalive-slow --fault batched

Figures, not a gate: exits 0 unless the script itself breaks, or 1 with --gate on a false fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import RunningServer
from test_variants import DETECTION, LEGAL_NON_STRICT, variant
from test_variants_browser import DETECTION as BROWSER_DETECTION

REFERENCE = "reference"  # the embedded reference server each `sse-harness run` starts itself
CORRECT_VARIANTS = {"correct", *LEGAL_NON_STRICT}
QUIET_OUTCOMES = {"pass", "non-strict"}


def expected_failures(target: str) -> set[str]:
    """The cases that must fail against ``target`` on a quiet machine (none on a correct server)."""
    return set(DETECTION.get(target, ((), set()))[1]) | set(BROWSER_DETECTION.get(target, set()))


def default_only(target: str) -> list[str]:
    """The families the variant tests run against a fault; everything for a correct server."""
    if target in (REFERENCE, *CORRECT_VARIANTS):
        return []
    families = list(DETECTION.get(target, ((), ()))[0])
    return families + (["10"] if target in BROWSER_DETECTION else [])


def harness_command() -> list[str]:
    beside = Path(sys.executable).parent / "sse-harness"  # the venv's console script
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "import sys; from harness._cli import main; sys.exit(main())"]


@dataclasses.dataclass
class Run:
    target: str
    round: int
    slot: int
    report_dir: Path
    only: list[str]
    limit: float
    server: RunningServer | None = None
    process: subprocess.Popen | None = None
    started: float = 0.0
    load_start: tuple[float, ...] = ()
    record: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.target} r{self.round}#{self.slot}"

    def start(self) -> None:
        args = [*harness_command(), "run", "--report-dir", str(self.report_dir), "--format", "json"]
        if self.target != REFERENCE:
            self.server = variant(self.target)  # --port 0: the OS picks a free loopback port
            args += ["--target", self.server.base_url]
        for pattern in self.only:
            args += ["--only", pattern]
        self.report_dir.mkdir(parents=True, exist_ok=True)
        self.load_start = os.getloadavg()
        self.started = time.monotonic()
        # A file, not a pipe nobody reads: a chatty run never blocks. The child keeps its own copy.
        with open(self.report_dir / "output.log", "wb") as log:
            # Its own process group: on expiry the run, its embedded server and its Chromium go together.
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.report_dir, start_new_session=True)

    def expired(self) -> bool:
        return time.monotonic() - self.started > self.limit

    def kill(self) -> None:
        """Stop the run's process group (its pid is the group's id): SIGTERM, then SIGKILL."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # what the run left of its group
        except ProcessLookupError:
            pass

    def finish(self, killed: bool) -> None:
        duration = time.monotonic() - self.started
        if self.server is not None:
            self.server.stop()
        self.record = {"run": self.name, "target": self.target, "round": self.round, "slot": self.slot,
                       "exitCode": None if killed else self.process.returncode, "killedAtLimit": killed,
                       "durationS": round(duration, 1), "loadStart": self.load_start, "loadEnd": os.getloadavg(),
                       **read_report(self.report_dir)}


def read_report(report_dir: Path) -> dict[str, Any]:
    """What the benchmark keeps of a run's report.json (or the tail of its output if it has none)."""
    path = report_dir / "report.json"
    if not path.exists():
        log = report_dir / "output.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        return {"report": None, "outputTail": tail}
    report = json.loads(path.read_text())
    env = report.get("environment") or {}
    cases = report.get("cases") or []
    noted = []
    for case in cases:
        if case["outcome"] in QUIET_OUTCOMES:
            continue
        first = case.get("reason") or next((f["message"] for f in case.get("findings") or []), "")
        noted.append({"case": case["id"], "outcome": case["outcome"], "first": first})
    return {
        "report": str(path),
        "runError": report.get("error"),
        "ran": [case["id"] for case in cases],
        "notPassed": noted,
        "starvation": env.get("starvation"),
        "retriedCases": env.get("retriedCases"),
        "retried": {case["id"]: {"outcome": case["outcome"], "tries": len(case["retries"]) + 1,
                                 "earlier": [t.get("finding") for t in case["retries"]]}
                    for case in cases if case.get("retries")},
    }


def run_batch(runs: list[Run]) -> None:
    """Start every run, then wait for each, killing any at its time limit."""
    pending = []
    try:
        for run in runs:
            run.start()
            pending.append(run)
        while pending:
            for run in list(pending):
                if run.process.poll() is not None:
                    run.finish(killed=False)
                    pending.remove(run)
                elif run.expired():
                    run.kill()
                    run.finish(killed=True)
                    pending.remove(run)
            time.sleep(0.2)
    finally:
        for run in pending:  # the script itself broke or was interrupted: leave nothing behind
            if run.process is not None:
                run.kill()
            if run.server is not None:
                run.server.stop()


def fails(record: dict[str, Any]) -> set[str]:
    return {n["case"] for n in record.get("notPassed", []) if n["outcome"] == "fail"}


def print_run(record: dict[str, Any]) -> None:
    load = f"load {record['loadStart'][0]:.1f} -> {record['loadEnd'][0]:.1f}"
    code = "KILLED at the time limit" if record["killedAtLimit"] else f"exit {record['exitCode']}"
    print(f"\n== {record['run']}: {code}, {record['durationS']} s, {load}", flush=True)
    if record.get("report") is None:
        print("   no report.json; output ends:\n" + "\n".join("   | " + line for line in
                                                          record.get("outputTail", "").splitlines()[-15:]))
        return
    if record.get("runError"):
        print(f"   the run could not be done: {record['runError']}")
    print(f"   starvation {json.dumps(record.get('starvation'))}; retriedCases {record.get('retriedCases')}")
    for n in record["notPassed"]:
        print(f"   {n['case']:<6} {n['outcome']:<12} {n['first'][:160]}")
    for case, r in record["retried"].items():
        note = "PASSED ONLY ON RETRY" if r["outcome"] == "pass" else r["outcome"]
        print(f"   retried {case}: {note} after {r['tries']} tries; earlier: {'; '.join(map(str, r['earlier']))[:200]}")


def summarize(records: list[dict[str, Any]], quiet: dict[str, set[str]]) -> dict[str, Any]:
    correct = [r for r in records if r["target"] in (REFERENCE, *CORRECT_VARIANTS)]
    false_fails = [{"run": r["run"], "case": n["case"], "first": n["first"]}
                   for r in correct for n in r.get("notPassed", []) if n["outcome"] == "fail"]
    errors = [{"run": r["run"], "case": n["case"], "reason": n["first"]}
              for r in records for n in r.get("notPassed", []) if n["outcome"] == "error"]
    retried = [{"run": r["run"], "case": case, **info} for r in records for case, info in r.get("retried", {}).items()]
    faults = {}
    for target in sorted({r["target"] for r in records} - {REFERENCE, *CORRECT_VARIANTS}):
        rows = []
        for r in (r for r in records if r["target"] == target):
            if r.get("report") is None:
                rows.append({"run": r["run"], "same": False, "why": "no report (killed or crashed)"})
                continue
            # The quiet reference, restricted to the cases this run ran (--only may narrow it).
            wanted = quiet[target] & set(r["ran"]) if target in quiet else expected_failures(target) & set(r["ran"])
            got = fails(r)
            missing, extra = sorted(wanted - got), sorted(got - wanted)
            same = not missing and (not extra if target in quiet else True)
            rows.append({"run": r["run"], "same": same, "exitCode": r["exitCode"], "missing": missing, "extra": extra})
        faults[target] = {"compared with": "a quiet run" if target in quiet else "the variant tests' table",
                          "everyRunSame": all(row["same"] for row in rows), "runs": rows}
    return {"runs": len(records), "killedAtLimit": [r["run"] for r in records if r["killedAtLimit"]],
            "noReport": [r["run"] for r in records if r.get("report") is None],
            "falseFails": false_fails, "errors": errors, "retried": retried,
            "passedOnlyOnRetry": [x for x in retried if x["outcome"] == "pass"], "faults": faults}


def print_summary(s: dict[str, Any]) -> None:
    print(f"\n==== summary: {s['runs']} runs; {len(s['falseFails'])} false fail(s); {len(s['errors'])} error(s); "
          f"{len(s['retried'])} retried case(s), {len(s['passedOnlyOnRetry'])} passed only on retry; "
          f"{len(s['killedAtLimit'])} killed at the time limit; {len(s['noReport'])} without a report")
    for f in s["falseFails"]:
        print(f"  FALSE FAIL {f['run']} {f['case']}: {f['first'][:200]}")
    for e in s["errors"]:
        print(f"  error {e['run']} {e['case']}: {e['reason'][:300]}")
    for x in s["retried"]:
        print(f"  retried {x['run']} {x['case']}: {x['outcome']} after {x['tries']} tries")
    for name in s["killedAtLimit"]:
        print(f"  killed at the time limit: {name}")
    for fault, f in s["faults"].items():
        verdict = "every run failed by the same cases" if f["everyRunSame"] else "NOT the same in every run"
        print(f"  fault {fault} (compared with {f['compared with']}): {verdict}")
        for row in f["runs"]:
            if "why" in row:
                print(f"    {row['run']}: {row['why']}")
            else:
                print(f"    {row['run']}: exit {row['exitCode']}, missing {row['missing'] or '-'}, "
                      f"also failing {row['extra'] or '-'}")


def main() -> int:
    known = sorted(set(DETECTION) | set(BROWSER_DETECTION) | CORRECT_VARIANTS)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, default=3, help="whole-suite runs at once (default 3)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fault", action="append", default=[], choices=known, metavar="NAME",
                        help="a variant of tests/variants/server.py instead of the embedded reference server; "
                             "repeatable (default --only: the families the variant tests run against it)")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN", help="passed to sse-harness run")
    parser.add_argument("--quiet-first", action="store_true",
                        help="per fault, one run alone first: its failing cases are what every busy run must match")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per run before it is killed")
    parser.add_argument("--reports", type=Path, help="keep each run's report here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write every run's record and the summary here, as JSON")
    parser.add_argument("--gate", action="store_true", help="exit 1 on any false fail")
    args = parser.parse_args()
    if args.parallel < 1 or args.rounds < 1:
        parser.error("--parallel and --rounds must be at least 1")

    with tempfile.TemporaryDirectory(prefix="busy-verdicts-") as scratch:
        base = args.reports or Path(scratch)
        targets = args.fault or [REFERENCE]

        def batch(target: str, round_: int, k: int) -> list[dict[str, Any]]:
            only = args.only or default_only(target)
            runs = [Run(target, round_, slot, base / f"{target}-r{round_}-{slot}", only, args.time_limit)
                    for slot in range(1, k + 1)]
            print(f"\n---- {target}, round {round_}: {k} at once, --only {only or 'everything'}", flush=True)
            run_batch(runs)
            for run in runs:
                print_run(run.record)
            return [run.record for run in runs]

        quiet: dict[str, set[str]] = {}
        records: list[dict[str, Any]] = []
        if args.quiet_first:
            for target in targets:
                if target in (REFERENCE, *CORRECT_VARIANTS):
                    continue
                alone = batch(target, 0, 1)[0]
                quiet[target] = fails(alone)
                print(f"   reference for {target} (one run alone, load {alone['loadStart'][0]:.1f}: quiet only if "
                      f"the machine is): fails {sorted(quiet[target])}")
        for round_ in range(1, args.rounds + 1):
            for target in targets:
                records += batch(target, round_, args.parallel)
    summary = summarize(records, quiet)
    print_summary(summary)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                                 for k, v in vars(args).items()},
                                        "runs": records, "summary": summary}, indent=1, default=str))
    return 1 if args.gate and summary["falseFails"] else 0


if __name__ == "__main__":
    sys.exit(main())
