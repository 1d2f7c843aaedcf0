"""A load run's results: figures read from locust's CSVs, thresholds judged, load.json, and the load
section of the verification report (report.md, report.html, junit.xml)."""

from __future__ import annotations

import csv
import dataclasses
import html
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from ._outcomes import Outcome

__all__ = ["LoadResult", "Threshold", "read_result", "write_load_reports"]

SCHEMA_VERSION = 1
# Failure rows of these types are broken invariants (or a stream the decoder rejects).
INVARIANT_TYPE = "invariant"
# Rows of this type are timings over their limit that the machine's measured starvation explains
# (harness.load): counted apart, not failures; "<kind> / own delay" and "<kind> / target wait"
# (or "/ CPU pressure") say what explained them.
CONFOUNDED_TYPE = "confounded"
_PERCENTILES = ("50%", "95%", "99%", "100%")
_SAMPLES = ("lag", "gap", "event", "own delay", "target wait", "CPU pressure")  # per event or tick, not operations
_NOT_OPERATIONS = (INVARIANT_TYPE, CONFOUNDED_TYPE)
_MARK_BEGIN, _MARK_END = "<!-- sse-harness load: begin -->", "<!-- sse-harness load: end -->"


@dataclasses.dataclass(frozen=True)
class Threshold:
    name: str
    limit: float
    observed: float | None
    met: bool
    unit: str = ""

    def sentence(self) -> str:
        shown = "not measured" if self.observed is None else f"{self.observed:g}{self.unit}"
        relation = {"lag p99": "<=", "failure ratio": "<=", "completed jobs": ">="}.get(self.name, "vs")
        return f"{self.name} {shown} (limit {relation} {self.limit:g}{self.unit}): {'met' if self.met else 'MISSED'}"


@dataclasses.dataclass(frozen=True)
class LoadResult:
    target: str
    profile: str
    started_at: str
    duration_s: float
    settings: dict[str, Any]
    rows: list[dict[str, Any]]  # locust_stats.csv, one dict per request type
    failures: list[dict[str, Any]]  # locust_failures.csv
    exceptions: list[dict[str, Any]]  # locust_exceptions.csv: errors in the user code (ours)
    history: list[dict[str, Any]]  # locust_stats_history.csv
    thresholds: list[Threshold]
    error: str  # the tool could not do its job (outcome error, exit 2)

    def row(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["Name"] == name and r["Type"] not in _NOT_OPERATIONS), None)

    @property
    def confounded(self) -> dict[str, dict[str, Any]]:
        """Timings over their limit that starvation explained, by what was timed: how many, the
        longest, and the most each source explained (ms)."""
        out: dict[str, dict[str, Any]] = {}
        rows = [r for r in self.rows if r["Type"] == CONFOUNDED_TYPE]
        for r in rows:
            if " / " not in r["Name"]:
                out[r["Name"]] = {"count": int(r["Request Count"]), "maxMs": _num(r["Max Response Time"])}
        for r in rows:
            kind, _, source = r["Name"].partition(" / ")
            if source and kind in out:
                out[kind][_camel(source) + "MaxMs"] = _num(r["Max Response Time"])
        return out

    @property
    def invariant_failures(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.failures:
            if f["Method"] == INVARIANT_TYPE:
                out[f["Name"]] = out.get(f["Name"], 0) + int(f["Occurrences"])
        return out

    @property
    def exit_code(self) -> int:
        if self.error:
            return 2
        return 0 if all(t.met for t in self.thresholds) and not self.invariant_failures else 1

    @property
    def outcome(self) -> str:
        return {0: Outcome.PASS, 1: Outcome.FAIL, 2: Outcome.ERROR}[self.exit_code]

    def figures(self) -> dict[str, Any]:
        def count(name: str, key: str = "Request Count") -> int:
            row = self.row(name)
            return int(row[key]) if row else 0

        def pct(name: str) -> dict[str, float] | None:
            row = self.row(name)
            if not row or not int(row["Request Count"]):
                return None
            return {f"p{p.rstrip('%')}" if p != "100%" else "max": _num(row[p]) for p in _PERCENTILES} | {
                "mean": round(_num(row["Average Response Time"]), 1)}

        def wait(name: str) -> dict[str, float] | None:
            row = self.row(name)
            if not row or not int(row["Request Count"]):
                return None  # not measured (the target's pid unknown, no PSI)
            return {"totalMs": round(_num(row["Average Response Time"]) * int(row["Request Count"])),
                    "samples": int(row["Request Count"]), "p99": _num(row["99%"]),
                    "max": round(_num(row["Max Response Time"]), 1)}

        jobs, failed_jobs = count("job"), count("job", "Failure Count")
        # Failure ratio: failures over operations, i.e. every row but the per-event samples and the
        # excused timings.
        operations = [r for r in self.rows if r["Name"] not in _SAMPLES and r["Name"] != "Aggregated"
                      and r["Type"] != CONFOUNDED_TYPE]
        counted = sum(int(r["Request Count"]) for r in operations)
        failures = sum(int(r["Failure Count"]) for r in operations)
        # A stream profile's reader counts every event ("event"); the contract's, every live one ("lag").
        events = count("event") if self.row("event") else count("lag")
        return {
            "jobs": jobs, "completedJobs": jobs - failed_jobs, "failedJobs": failed_jobs,
            "events": events, "eventsPerSecond": round(events / self.duration_s, 1) if self.duration_s else None,
            "lagMs": pct("lag"), "gapMs": pct("gap"), "connectMs": pct("connect"), "firstEventMs": pct("first event"),
            "jobMs": pct("job"), "reconnects": count("reconnect"), "reconnectMs": pct("reconnect"),
            "cancels": count("cancel"), "cancelMs": pct("cancel"), "ownDelayMs": pct("own delay"),
            "targetWaitMs": wait("target wait"), "cpuPressureMs": wait("CPU pressure"),
            "confounded": self.confounded,
            "failures": failures, "failureRatio": round(failures / counted, 4) if counted else None,
            "streamBytes": int(_num(self.row("job")["Average Content Size"]) * jobs) if jobs else 0,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": SCHEMA_VERSION, "kind": "load", "target": self.target, "profile": self.profile,
            "startedAt": self.started_at, "durationS": round(self.duration_s, 1), "settings": self.settings,
            "outcome": self.outcome, "exitCode": self.exit_code, "error": self.error or None,
            "figures": self.figures(),
            "thresholds": [{"name": t.name, "limit": t.limit, "observed": t.observed, "met": t.met}
                           for t in self.thresholds],
            "invariantFailures": self.invariant_failures,
            "requestTypes": [{"type": r["Type"], "name": r["Name"], "requests": int(r["Request Count"]),
                              "failures": int(r["Failure Count"]), "medianMs": _num(r["Median Response Time"]),
                              "p95Ms": _num(r["95%"]), "p99Ms": _num(r["99%"]), "maxMs": _num(r["Max Response Time"])}
                             for r in self.rows if r["Name"] != "Aggregated"],
            "failures": [{"type": f["Method"], "name": f["Name"], "error": f["Error"],
                          "occurrences": int(f["Occurrences"])} for f in self.failures],
            "exceptions": [{"count": e.get("Count"), "message": e.get("Message")} for e in self.exceptions],
        }


def _camel(words: str) -> str:
    first, *rest = words.split()
    return first.lower() + "".join(w[:1].upper() + w[1:].lower() for w in rest)


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number else 0.0  # N/A and NaN as 0


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def read_result(prefix: Path, *, target: str, profile: str, started_at: str, duration_s: float,
                settings: dict[str, Any], max_lag_p99_ms: float | None, max_failure_ratio: float | None,
                min_completed_jobs: int | None, error: str = "") -> LoadResult:
    """Read ``<prefix>_stats.csv`` and its siblings and judge the thresholds."""
    def table(kind: str) -> list[dict[str, Any]]:
        # The end state (written by harness.load as locust quits) when there, else locust's own.
        final = prefix.with_name(f"{prefix.name}_final_{kind}.csv")
        return _read_csv(final if final.exists() else prefix.with_name(f"{prefix.name}_{kind}.csv"))

    rows = table("stats")
    if not rows and not error:
        error = f"locust wrote no statistics ({prefix.name}_stats.csv missing or empty)"
    exceptions = table("exceptions")
    if exceptions and not error:
        error = f"the load user raised {len(exceptions)} kind(s) of exception (see {prefix.name}_exceptions.csv)"
    result = LoadResult(target, profile, started_at, duration_s, settings, rows,
                        table("failures"), exceptions,
                        _read_csv(prefix.with_name(prefix.name + "_stats_history.csv")), [], error)
    figures = result.figures()
    thresholds = []
    if max_lag_p99_ms is not None:
        lag = figures["lagMs"]
        observed = lag["p99"] if lag else None
        thresholds.append(Threshold("lag p99", max_lag_p99_ms, observed, observed is not None and observed <= max_lag_p99_ms,
                                    " ms"))
    if max_failure_ratio is not None:
        ratio = figures["failureRatio"]
        thresholds.append(Threshold("failure ratio", max_failure_ratio, ratio, ratio is not None and ratio <= max_failure_ratio))
    if min_completed_jobs is not None:
        done = figures["completedJobs"]
        thresholds.append(Threshold("completed jobs", min_completed_jobs, done, done >= min_completed_jobs))
    return dataclasses.replace(result, thresholds=thresholds)


# -- the load section in the report formats ----------------------------------------------------

def _series(result: LoadResult, name: str, column: str) -> list[tuple[float, float]]:
    rows = [r for r in result.history if r.get("Name") == name]
    if not rows:
        return []
    t0 = _num(rows[0]["Timestamp"])
    return [(_num(r["Timestamp"]) - t0, _num(r[column])) for r in rows if r.get(column) not in (None, "N/A", "")]


def _fmt_pct(p: dict[str, float] | None) -> str:
    return "—" if not p else f"p50 {p['p50']:g} · p95 {p['p95']:g} · p99 {p['p99']:g} · max {p['max']:g} ms"


def starvation_lines(result: LoadResult) -> list[str]:
    """What the machine cost: the worker's own delay, the target's wait for a core (or the
    machine's CPU pressure), and the timings over their limit that these explained."""
    f = result.figures()
    pid = result.settings.get("targetPid")
    lines = [f"the load generator's own delay {_fmt_pct(f['ownDelayMs'])}"]
    for key, what in (("targetWaitMs", f"the target's run-queue wait{f' (pid {pid})' if pid else ''}"),
                      ("cpuPressureMs", "the machine's CPU pressure")):
        w = f[key]
        if w:
            lines.append(f"{what}: {w['totalMs'] / 1000:.1f} s in all over {w['samples']} readings, one per "
                         f"100 ms or more (p99 {w['p99']:g} ms, max {w['max']:.0f} ms in one)")
    if not f["targetWaitMs"]:
        lines.append("the target's run-queue wait: not measured (another host, or its pid not found)")
    for kind, c in sorted(f["confounded"].items()):
        sources = ", ".join(f"{name} up to {c[key]:.0f} ms" for key, name in (
            ("ownDelayMaxMs", "own delay"), ("targetWaitMaxMs", "the target's wait"),
            ("cpuPressureMaxMs", "CPU pressure")) if key in c)
        lines.append(f"excused, not the target's: {kind} {c['count']}x (longest {c['maxMs']:.0f} ms; "
                     f"explained by {sources})")
    return lines


def to_markdown(result: LoadResult) -> str:
    f = result.figures()
    lines = [_MARK_BEGIN, f"## Load: {result.target}", "",
             f"Started {result.started_at}, {result.duration_s:.1f} s; " + ", ".join(
                 f"{k} {v}" for k, v in result.settings.items() if v not in (None, "", 0, 0.0, False)) + ".", "",
             f"**{result.outcome}** (exit {result.exit_code})" + (f": {result.error}" if result.error else ""), "",
             f"- jobs followed {f['jobs']}, completed {f['completedJobs']}, failed {f['failedJobs']}",
             f"- events {f['events']} ({f['eventsPerSecond']}/s); lag {_fmt_pct(f['lagMs'])}",
             f"- gap while a stage works {_fmt_pct(f['gapMs'])}",
             f"- connect {_fmt_pct(f['connectMs'])}; first event {_fmt_pct(f['firstEventMs'])}",
             f"- reconnects {f['reconnects']} ({_fmt_pct(f['reconnectMs'])}); cancels {f['cancels']} ({_fmt_pct(f['cancelMs'])})",
             *(f"- {line}" for line in starvation_lines(result)),
             f"- failure ratio {f['failureRatio']}", ""]
    if result.thresholds:
        lines += ["| threshold | observed | limit | verdict |", "| --- | --- | --- | --- |"]
        lines += [f"| {t.name} | {t.observed if t.observed is not None else '—'} | {t.limit:g} | "
                  f"{'✅ met' if t.met else '❌ missed'} |" for t in result.thresholds]
        lines.append("")
    if result.failures:
        lines += ["| failure | type | error | occurrences |", "| --- | --- | --- | --- |"]
        lines += [f"| {x['Name']} | {x['Method']} | {x['Error'].replace('|', '/')[:120]} | {x['Occurrences']} |"
                  for x in result.failures]
        lines.append("")
    else:
        lines += ["No failures.", ""]
    lines.append(_MARK_END)
    return "\n".join(lines) + "\n"


def to_html_section(result: LoadResult) -> str:
    from ._reports import _svg_bars, _svg_line  # the report's own plot helpers

    esc = html.escape
    f = result.figures()
    lag99 = _series(result, "lag", "99%")
    lag50 = _series(result, "lag", "50%")
    users = _series(result, "Aggregated", "User Count")
    limit = next((t.limit for t in result.thresholds if t.name == "lag p99"), None)
    plots = (_svg_line("lag p99 over time (ms, locust's 10 s window)", lag99, y_label="ms", limit=limit)
             + _svg_line("lag p50 over time (ms)", lag50, y_label="ms")
             + _svg_line("users over time", users, y_label="users"))
    by_name: dict[str, int] = {}
    for x in result.failures:
        by_name[x["Name"]] = by_name.get(x["Name"], 0) + int(x["Occurrences"])
    plots += _svg_bars("failures by name", sorted(by_name.items())) if by_name else ""
    rows = "".join(f"<tr><td>{esc(t.name)}</td><td>{esc(str(t.observed))}</td><td>{t.limit:g}</td>"
                   f"<td class='{Outcome.PASS if t.met else Outcome.FAIL}'>{'met' if t.met else 'missed'}</td></tr>"
                   for t in result.thresholds)
    failures = "".join(f"<tr><td>{esc(x['Name'])}</td><td>{esc(x['Method'])}</td><td>{esc(x['Error'][:200])}</td>"
                       f"<td>{esc(x['Occurrences'])}</td></tr>" for x in result.failures)
    types = "".join(f"<tr><td>{esc(r['Type'])}</td><td>{esc(r['Name'])}</td><td>{esc(r['Request Count'])}</td>"
                    f"<td>{esc(r['Failure Count'])}</td><td>{esc(r['50%'])}</td><td>{esc(r['95%'])}</td>"
                    f"<td>{esc(r['99%'])}</td><td>{esc(r['Max Response Time'])}</td></tr>" for r in result.rows)
    outcome = result.outcome
    return f"""{_MARK_BEGIN}<section id="load"><h2>Load: {esc(result.target)} — <span class="{outcome}">{outcome}</span></h2>
<p>Started {esc(result.started_at)}; {result.duration_s:.1f} s; {esc(json.dumps(result.settings))}</p>
{f'<p class="error">{esc(result.error)}</p>' if result.error else ''}
<p>Jobs followed {f['jobs']}, completed {f['completedJobs']}, failed {f['failedJobs']}; events {f['events']}
({f['eventsPerSecond']}/s); lag {esc(_fmt_pct(f['lagMs']))}; gap {esc(_fmt_pct(f['gapMs']))};
failure ratio {f['failureRatio']}.</p>
<ul>{"".join(f"<li>{esc(line)}</li>" for line in starvation_lines(result))}</ul>
{f'<table><tr><th>threshold</th><th>observed</th><th>limit</th><th>verdict</th></tr>{rows}</table>' if rows else ''}
{plots}
<h3>Failures</h3>{f'<table><tr><th>name</th><th>type</th><th>error</th><th>occurrences</th></tr>{failures}</table>' if failures else '<p>None.</p>'}
<details><summary>request types (ms)</summary><table><tr><th>type</th><th>name</th><th>requests</th><th>failures</th>
<th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>{types}</table></details></section>{_MARK_END}"""


def to_junit_suite(result: LoadResult) -> ET.Element:
    invariants = result.invariant_failures
    cases = len(result.thresholds) + 2
    failed = sum(not t.met for t in result.thresholds) + bool(invariants)
    suite = ET.Element("testsuite", name="sse-load", tests=str(cases), failures=str(failed),
                       errors=str(int(bool(result.error))), time=f"{result.duration_s:.3f}",
                       timestamp=result.started_at)
    ran = ET.SubElement(suite, "testcase", classname="sse.load", name="load run", time=f"{result.duration_s:.3f}")
    if result.error:
        ET.SubElement(ran, "error", message=result.error).text = result.error
    for t in result.thresholds:
        case = ET.SubElement(suite, "testcase", classname="sse.load.threshold", name=t.name, time="0")
        if not t.met:
            ET.SubElement(case, "failure", message=t.sentence()).text = t.sentence()
        else:
            ET.SubElement(case, "system-out").text = t.sentence()
    case = ET.SubElement(suite, "testcase", classname="sse.load", name="invariants under load", time="0")
    if invariants:
        text = "\n".join(f"{name}: {n}" for name, n in sorted(invariants.items()))
        ET.SubElement(case, "failure", message=f"broken under load: {', '.join(sorted(invariants))}").text = text
    excused = [line for line in starvation_lines(result) if line.startswith("excused")]
    if excused:
        ET.SubElement(case, "system-out").text = "\n".join(excused)
    return suite


def _merge_text(path: Path, section: str, *, standalone: str, insert_before: str | None) -> None:
    if not path.exists():
        path.write_text(standalone)
        return
    text = path.read_text()
    if _MARK_BEGIN in text and _MARK_END in text:
        head, _, rest = text.partition(_MARK_BEGIN)
        _, _, tail = rest.partition(_MARK_END)
        text = head + section.strip() + tail
    elif insert_before and insert_before in text:
        head, _, tail = text.rpartition(insert_before)
        text = head + section + insert_before + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def write_load_reports(result: LoadResult, directory: Path) -> dict[str, Path]:
    """load.json, and the load section in report.md, report.html and junit.xml: added to the
    conformance report already in ``directory`` (a `run` with the same --report-dir), else
    written as a report of its own."""
    from ._reports import _CSS

    directory.mkdir(parents=True, exist_ok=True)
    written = {"load.json": directory / "load.json", "md": directory / "report.md",
               "html": directory / "report.html", "junit": directory / "junit.xml"}
    written["load.json"].write_text(json.dumps(result.to_json(), indent=1, default=str))
    md = to_markdown(result)
    _merge_text(written["md"], md, standalone=f"# SSE load: {result.target}\n\n{md}", insert_before=None)
    section = to_html_section(result)
    standalone = (f'<!doctype html><html lang="en"><meta charset="utf-8"><title>SSE load report</title>'
                  f"<style>{_CSS}</style><h1>SSE load: {html.escape(result.target)}</h1>\n{section}\n</html>\n")
    _merge_text(written["html"], section, standalone=standalone, insert_before="<h2>Environment</h2>")
    suite = to_junit_suite(result)
    junit = written["junit"]
    root: ET.Element
    try:
        existing = ET.parse(junit).getroot() if junit.exists() else None
    except ET.ParseError:
        existing = None
    if existing is None:
        root = ET.Element("testsuites")
    elif existing.tag == "testsuites":
        root = existing
    else:
        root = ET.Element("testsuites")
        root.append(existing)
    for old in [s for s in root if s.get("name") == "sse-load"]:
        root.remove(old)
    root.append(suite)
    junit.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
    return written
