"""Reports from one run: report.json (schema v1), junit.xml, report.html (self-contained), report.md."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Iterable
from xml.etree import ElementTree as ET

from ._outcomes import Outcome, Severity
from ._runner import RunReport

__all__ = ["FORMATS", "timing_rows", "write_reports"]

FORMATS = ("json", "junit", "html", "md")
SCHEMA_VERSION = 1
_ICON = {Outcome.PASS: "✅", Outcome.FAIL: "❌", Outcome.NON_STRICT: "⚠️", Outcome.INFO: "ℹ️", Outcome.ERROR: "💥",
         Outcome.SKIP: "⏭️"}


def _verdict(report: RunReport, r) -> str:
    """The outcome as the gate sees it: a baseline's expected failure or stale entry says so, and
    so does a verdict reached only on a later try."""
    if r.id in report.stale:
        return f"{r.outcome} (stale in the baseline: remove it)"
    if r.id in report.expected:
        return f"{r.outcome} (expected: {report.expected[r.id]})"
    if r.retries:
        return f"{r.outcome} ({_tries(r)})"
    return str(r.outcome)


def _tries(r) -> str:
    """How a case that was tried again got its verdict."""
    n = len(r.retries) + 1
    if r.confounded:
        return f"confounded in all {n} tries"
    return f"on try {n} of {n}: {len(r.retries)} earlier confounded"


def _starvation_line(report: RunReport) -> str:
    """The header's line on timing: the slack in force and how starved the whole run was."""
    env = report.environment
    slack = env.get("timingSlack", 1.0)
    text = (f"Timing tolerances x{slack:g}" + (" (--timing-slack)" if slack != 1 else " (the contract's)"))
    figures = env.get("starvation") or {}
    if figures:
        parts = [f"the harness's loop stalled at most {figures.get('ownStallMaxMs', 0):g} ms"]
        if figures.get("targetWaitMs") is not None:
            parts.append(f"the target waited {figures['targetWaitMs']:g} ms for a core "
                         f"({figures.get('targetObserved', '?')})")
        elif figures.get("targetObserved"):
            parts.append(f"the target: {figures['targetObserved']}")
        if figures.get("machineStallMs") is not None:
            parts.append(f"the machine's CPU pressure {figures['machineStallMs']:g} ms")
        text += f"; over {figures.get('windowMs', 0) / 1000:.1f} s " + ", ".join(parts)
    retried = sum(1 for r in report.results if r.retries)
    if retried:
        text += f"; {retried} case(s) tried again because starvation explained a timing breach"
    return text + "."


def timing_rows(report: RunReport) -> list[dict[str, Any]]:
    """Per timing case (one whose evidence carries the starvation of its measured window): its
    tries and the starvation figures beside its verdict."""
    rows = []
    for r in report.results:
        figures = r.evidence.get("starvation")
        if not isinstance(figures, dict) and not r.retries:
            continue
        rows.append({"id": r.id, "outcome": str(r.outcome), "tries": len(r.retries) + 1,
                     **(figures if isinstance(figures, dict) else {})})
    return rows


def summary(report: RunReport) -> dict[str, int]:
    return {
        "total": len(report.results), "passed": report.count(Outcome.PASS), "failed": report.count(Outcome.FAIL),
        "nonStrict": report.count(Outcome.NON_STRICT), "informational": report.count(Outcome.INFO),
        "errors": report.count(Outcome.ERROR), "skipped": report.count(Outcome.SKIP),
        "expectedFailures": sum(1 for r in report.results if r.id in report.expected),
        "staleBaselineEntries": len(report.stale),
        "retried": sum(1 for r in report.results if r.retries),
        "confounded": sum(1 for r in report.results if r.confounded),
    }


def _finding(f) -> dict[str, Any]:
    return {"message": f.message, "expected": f.expected, "observed": f.observed, "eventId": f.event_id,
            "severity": f.severity}


def to_json(report: RunReport) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "target": report.target,
        "profile": report.profile,
        "startedAt": report.started_at,
        "durationMs": report.duration_ms,
        "summary": summary(report),
        "error": report.error or None,
        "cases": [
            {"id": r.id, "title": r.title, "invariants": list(r.invariants), "outcome": r.outcome,
             "durationMs": r.duration_ms, "reason": r.reason or None, "steps": list(r.steps),
             "findings": [_finding(f) for f in r.findings], "evidence": r.evidence, "figures": r.figures(),
             "origin": r.origin, "retries": list(r.retries), "confounded": r.confounded,
             "expected": report.expected.get(r.id), "stale": report.stale.get(r.id)}
            for r in report.results
        ],
        "environment": report.environment,
    }


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def to_junit(report: RunReport) -> bytes:
    s = summary(report)
    suite = ET.Element("testsuite", name="sse-conformance", tests=str(s["total"]),
                       failures=str(s["failed"]), errors=str(s["errors"]), skipped=str(s["skipped"]),
                       time=f"{report.duration_ms / 1000:.3f}", timestamp=report.started_at)
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"sse.family{r.id.split('.')[0]}"
                             + ("" if r.origin == "built-in" else f".{_slug(r.origin)}"),
                             name=f"{r.id} {r.title}", time=f"{r.duration_ms / 1000:.3f}")
        detail = "\n".join(f"{f.message}: expected {f.expected!r}, observed {f.observed!r}"
                           + (f" (event {f.event_id})" if f.event_id else "") for f in r.findings)
        if r.id in report.stale:
            ET.SubElement(case, "failure", message=f"listed in the baseline as {r.id} failing, but it is "
                                                   f"{r.outcome} now: remove it from the baseline")
        elif r.outcome == Outcome.FAIL and r.id in report.expected:
            ET.SubElement(case, "skipped", message=f"expected failure (baseline): {report.expected[r.id]}")
        elif r.outcome == Outcome.FAIL:
            first = next((f.message for f in r.findings if f.severity == Severity.FAIL), "failed")
            ET.SubElement(case, "failure", message=first).text = detail
        elif r.outcome == Outcome.ERROR:
            ET.SubElement(case, "error", message=r.reason).text = r.reason
        elif r.outcome == Outcome.SKIP:
            ET.SubElement(case, "skipped", message=r.reason)
        if r.outcome in (Outcome.NON_STRICT, Outcome.INFO) or r.steps or r.retries:
            tries = [f"tries: {_tries(r)}"] + [f"try {t['try']}: {t['finding']}: observed {t['observed']}"
                                               for t in r.retries] if r.retries else []
            starved = r.evidence.get("starvation")
            starved = [f"starvation in the measured window: {json.dumps(starved)}"] if starved else []
            ET.SubElement(case, "system-out").text = "\n".join([f"outcome: {r.outcome}", *tries, *starved, *r.steps,
                                                                detail])
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="utf-8", xml_declaration=True)


def to_markdown(report: RunReport) -> str:
    s = summary(report)
    lines = [
        f"# SSE conformance: {report.target}",
        "",
        f"Profile `{report.profile}`, started {report.started_at}, {report.duration_ms / 1000:.1f} s.",
        "",
        f"**{s['passed']} passed, {s['failed']} failed**, {s['nonStrict']} non-strict, {s['informational']} info, "
        f"{s['errors']} errors, {s['skipped']} skipped of {s['total']}"
        + (f"; {s['retried']} tried again" if s["retried"] else "") + ".",
        "",
        _starvation_line(report),
        "",
    ]
    if report.error:
        lines += [f"> The run could not be done: {report.error}", ""]
    if report.expected or report.stale:
        lines += [f"Baseline: {s['expectedFailures']} expected failure(s) do not fail the gate; "
                  f"{s['staleBaselineEntries']} stale entr(ies) do, until removed from the baseline.", ""]
    lines += ["| case | outcome | title | first finding |", "| --- | --- | --- | --- |"]
    for r in report.results:
        first = r.reason or next((f.message for f in r.findings), "")
        origin = "" if r.origin == "built-in" else f" ({r.origin})"
        lines.append(f"| {r.id} | {_ICON[r.outcome]} {_verdict(report, r)} | {r.title}{origin} | "
                     f"{first.replace('|', '/')} |")
    timed = timing_rows(report)
    if timed:
        lines += ["", "Timing verdicts and the starvation in each measured window (ms): the harness's own loop "
                      "stall, the target's wait for a core, the machine's CPU pressure.", "",
                  "| case | outcome | tries | own stall | target wait | machine | window |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in timed:
            lines.append(f"| {row['id']} | {row['outcome']} | {row['tries']} | {_ms(row.get('ownStallMs'))} | "
                         f"{_ms(row.get('targetWaitMs'))} | {_ms(row.get('machineStallMs'))} | {_ms(row.get('windowMs'))} |")
    return "\n".join(lines) + "\n"


def _ms(value: Any) -> str:
    return "—" if value is None else f"{value:g}"


# -- HTML with inline SVG plots ------------------------------------------------------------

def _svg_line(title: str, points: list[tuple[float, float]], *, marks: Iterable[tuple[float, str]] = (),
              y_label: str = "", x_label: str = "s", limit: float | None = None, width: int = 640,
              height: int = 220) -> str:
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = min(0, min(ys)), max(ys + ([limit] if limit else [])) or 1
    pad = 40

    def sx(x): return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)
    def sy(y): return height - pad + (y - y0) / ((y1 - y0) or 1) * -(height - 2 * pad)

    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{pad}" y="16" class="t">{html.escape(title)}</text>',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="ax"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="ax"/>',
             f'<text x="4" y="{sy(y1) + 4:.0f}" class="l">{y1:g}</text>',
             f'<text x="4" y="{sy(y0):.0f}" class="l">{y0:g}</text>',
             f'<text x="{width - pad}" y="{height - 8}" class="l">{x1:.1f} {x_label}</text>',
             f'<text x="{pad + 4}" y="{pad - 4}" class="l">{html.escape(y_label)}</text>',
             f'<path d="{path}" class="d"/>']
    if limit is not None:
        parts.append(f'<line x1="{pad}" y1="{sy(limit):.1f}" x2="{width - pad}" y2="{sy(limit):.1f}" class="lim"/>')
    for x, label in marks:
        kind = "rc" if label.startswith("reconnect") else "mk"
        parts.append(f'<line x1="{sx(x):.1f}" y1="{pad}" x2="{sx(x):.1f}" y2="{height - pad}" class="{kind}">'
                     f'<title>{html.escape(label)}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_bars(title: str, bars: list[tuple[str, float]], *, limit: float | None = None, unit: str = "",
              width: int = 640, height: int = 220) -> str:
    if not bars:
        return ""
    top = max([v for _, v in bars] + ([limit] if limit else [])) or 1
    pad, n = 40, len(bars)
    step = (width - 2 * pad) / n
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{pad}" y="16" class="t">{html.escape(title)}</text>']
    for i, (label, value) in enumerate(bars):
        h = value / top * (height - 2 * pad)
        x = pad + i * step
        over = limit is not None and value > limit
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - pad - h:.1f}" width="{step - 4:.1f}" height="{h:.1f}" '
                     f'class="{"bad" if over else "bar"}"><title>{html.escape(label)}: {value:g}{unit}</title></rect>')
        parts.append(f'<text x="{x + 2:.1f}" y="{height - pad + 14}" class="l">{html.escape(label[:10])}</text>')
        parts.append(f'<text x="{x + 2:.1f}" y="{height - pad - h - 3:.1f}" class="l">{value:g}</text>')
    if limit is not None:
        y = height - pad - limit / top * (height - 2 * pad)
        parts.append(f'<line x1="{pad}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" class="lim"/>'
                     f'<text x="{width - pad - 80}" y="{y - 4:.1f}" class="l">limit {limit:g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _plots_for(r) -> str:
    """The plots the case declared over its evidence (Plot), drawn where the evidence has them."""
    ev, out = r.evidence, []
    for plot in getattr(r, "plots", ()):
        values = ev.get(plot.key)
        if not values:
            continue
        if plot.kind == "line":
            marks = [(m[0], m[1]) for m in ev.get(plot.marks, [])] if plot.marks else []
            out.append(_svg_line(f"{r.id}: {plot.title}", [tuple(p) for p in values], marks=marks,
                                 y_label=plot.y_label))
        elif plot.kind == "bars":
            parts = [ev.get(key) for key in plot.limit]
            limit = sum(parts) if parts and all(isinstance(v, (int, float)) for v in parts) else None
            out.append(_svg_bars(f"{r.id}: {plot.title}", [(f"#{i + 1}", v) for i, v in enumerate(values)],
                                 limit=limit, unit=plot.unit))
    return "".join(out)


def _plots_across(report: RunReport) -> str:
    """Plots of one figure per case (kind ``across``), as the cases declared them."""
    declared: dict[str, Any] = {}
    for r in report.results:
        for plot in getattr(r, "plots", ()):
            if plot.kind == "across":
                declared.setdefault(plot.key, plot)
    out = []
    for key, plot in declared.items():
        bars = [(r.id, r.evidence[key]) for r in report.results if isinstance(r.evidence.get(key), (int, float))]
        limits = {r.evidence.get(plot.limit[0]) for r in report.results if plot.limit and key in r.evidence}
        limit = limits.pop() if len(limits) == 1 else None
        out.append(_svg_bars(plot.title, bars, limit=limit if isinstance(limit, (int, float)) else None,
                             unit=plot.unit))
    return "".join(out)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
.pass{color:#17692b}.fail{color:#b00020;font-weight:bold}.non-strict{color:#8a5a00}.error{color:#7a0080;font-weight:bold}
.skip,.info{color:#555}details{margin:.3em 0 1em 1em}pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:300px}
svg{background:#fafafa;border:1px solid #eee;margin:.5em 0;display:block}.t{font-weight:bold;font-size:12px}
.l{font-size:10px;fill:#555}.ax{stroke:#999}.d{fill:none;stroke:#1f5fbf;stroke-width:1.5}.lim{stroke:#b00020;stroke-dasharray:4 3}
.mk{stroke:#e08000;stroke-width:1}.rc{stroke:#2a9d3a;stroke-width:1;stroke-dasharray:2 2}.bar{fill:#1f5fbf}.bad{fill:#b00020}
"""


def to_html(report: RunReport) -> str:
    s = summary(report)
    esc = html.escape
    rows, details = [], []
    for r in report.results:
        first = r.reason or next((f.message for f in r.findings), "")
        origin = "" if r.origin == "built-in" else f" <small>({esc(r.origin)})</small>"
        rows.append(f'<tr><td><a href="#c{esc(r.id)}">{esc(r.id)}</a></td><td class="{r.outcome}">'
                    f"{esc(_verdict(report, r))}</td><td>{esc(r.title)}{origin}</td><td>{r.duration_ms} ms</td>"
                    f"<td>{esc(first)}</td></tr>")
        findings = "".join(f"<li class='{f.severity}'>{esc(f.message)} — expected <code>{esc(json.dumps(f.expected, default=str))}"
                           f"</code>, observed <code>{esc(json.dumps(f.observed, default=str)[:400])}</code>"
                           f"{' at event ' + esc(f.event_id) if f.event_id else ''}</li>" for f in r.findings)
        steps = "".join(f"<li>{esc(t)}</li>" for t in r.steps)
        tries = "".join(f"<li>try {t['try']} ({t['durationMs']} ms): {esc(t['finding'])} — expected "
                        f"<code>{esc(str(t['expected']))}</code>, observed <code>{esc(str(t['observed']))}</code></li>"
                        for t in r.retries)
        plotted = {p.key for p in getattr(r, "plots", ()) if p.kind == "line"}
        evidence = {k: v for k, v in r.evidence.items() if k not in plotted}
        details.append(
            f'<h3 id="c{esc(r.id)}">{esc(r.id)} {esc(r.title)} — <span class="{r.outcome}">{esc(r.outcome)}</span></h3>'
            f"<p>Invariants: {esc(', '.join(r.invariants) or '—')}. {esc(r.reason)}</p>"
            + (f"<p>Tried again ({esc(_tries(r))}): the machine's starvation explained the timing breach of</p>"
               f"<ul>{tries}</ul>" if tries else "")
            + (f"<p>Steps:</p><ol>{steps}</ol>" if steps else "")
            + (f"<p>Findings:</p><ul>{findings}</ul>" if findings else "")
            + _plots_for(r)
            + f"<details><summary>evidence</summary><pre>{esc(json.dumps(evidence, indent=1, default=str)[:20000])}</pre></details>")
    latency_plot = _plots_across(report)
    timed = timing_rows(report)
    timing_table = ("<h2>Timing verdicts</h2><p>The starvation in each measured window (ms): the harness's own loop "
                    "stall, the target's wait for a core, the machine's CPU pressure.</p><table><tr><th>case</th>"
                    "<th>outcome</th><th>tries</th><th>own stall</th><th>target wait</th><th>machine</th><th>window</th>"
                    "</tr>" + "".join(
                        f"<tr><td>{esc(row['id'])}</td><td class='{esc(row['outcome'])}'>{esc(row['outcome'])}</td>"
                        f"<td>{row['tries']}</td><td>{_ms(row.get('ownStallMs'))}</td><td>{_ms(row.get('targetWaitMs'))}"
                        f"</td><td>{_ms(row.get('machineStallMs'))}</td><td>{_ms(row.get('windowMs'))}</td></tr>"
                        for row in timed) + "</table>") if timed else ""
    shot = report.environment.get("pageScreenshot")  # written beside the report by the CLI
    return f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>SSE conformance report</title>
<style>{_CSS}</style><h1>SSE conformance: {esc(report.target)}</h1>
<p>Profile <code>{esc(report.profile)}</code>; started {esc(report.started_at)}; {report.duration_ms / 1000:.1f} s.</p>
<p><b>{s['passed']} passed, {s['failed']} failed</b>, {s['nonStrict']} non-strict, {s['informational']} info,
{s['errors']} errors, {s['skipped']} skipped of {s['total']}{f"; {s['retried']} tried again" if s['retried'] else ""}.</p>
<p>{esc(_starvation_line(report))}</p>
{f'<p class="error">The run could not be done: {esc(report.error)}</p>' if report.error else ''}
<table><tr><th>case</th><th>outcome</th><th>title</th><th>time</th><th>first finding</th></tr>{''.join(rows)}</table>
{latency_plot}
{timing_table}
{f'<p><a href="{esc(shot)}">The target&#39;s web page mid-job (screenshot)</a></p>' if shot else ''}
<h2>Cases</h2>{''.join(details)}
<h2>Environment</h2><pre>{esc(json.dumps(report.environment, indent=1, default=str))}</pre></html>
"""


def write_reports(report: RunReport, directory: Path, formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in formats:
        if fmt == "json":
            path = directory / "report.json"
            path.write_text(json.dumps(to_json(report), indent=1, default=str))
        elif fmt == "junit":
            path = directory / "junit.xml"
            path.write_bytes(to_junit(report))
        elif fmt == "html":
            path = directory / "report.html"
            path.write_text(to_html(report))
        elif fmt == "md":
            path = directory / "report.md"
            path.write_text(to_markdown(report))
        else:
            raise ValueError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
        written[fmt] = path
    return written


def link_latest(directory: Path) -> None:
    latest = directory.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        os.symlink(directory.name, latest)
    except OSError:
        pass
