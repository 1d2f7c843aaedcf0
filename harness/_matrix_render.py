"""The comparison matrix written out: matrix.html (self-contained, offline), matrix.md, matrix.json."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

from ._outcomes import Outcome
from ._matrix import ABSENT, OUTCOME_ORDER, Matrix, family_of, to_json

__all__ = ["matrix_html", "matrix_markdown", "write_matrix"]

_ICON = {Outcome.PASS: "✅", Outcome.FAIL: "❌", Outcome.NON_STRICT: "⚠️", Outcome.INFO: "ℹ️", Outcome.ERROR: "💥",
         Outcome.SKIP: "⏭️", ABSENT: "·"}
_SHORT = {**{str(o): str(o) for o in Outcome}, ABSENT: "—"}


def _counts(counts: dict[str, int]) -> str:
    """3 pass · 1 fail · 2 skip (outcomes that occur, in a fixed order)."""
    return " · ".join(f"{n} {_SHORT[o] if o != ABSENT else 'absent'}" for o, n in
                      ((o, counts.get(o, 0)) for o in OUTCOME_ORDER) if n)


def _short(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _ids(matrix: Matrix, ids: list[str]) -> str:
    """Case ids, a whole family said as such: "families 1-11, 14.1"."""
    families = [f for f in matrix.families if all(i in ids for i, _ in matrix.cases if family_of(i) == f)]
    rest = [i for i in ids if family_of(i) not in families]
    runs: list[list[str]] = []
    for f in families:  # consecutive whole families as one range
        if runs and matrix.families.index(f) == matrix.families.index(runs[-1][-1]) + 1:
            runs[-1].append(f)
        else:
            runs.append([f])
    said = [f"family {r[0]}" if len(r) == 1 else f"families {r[0]}-{r[-1]}" for r in runs]
    return ", ".join(said + rest)


def _md(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def matrix_markdown(matrix: Matrix) -> str:
    """The same table as matrix.html, for a job summary or docs/: one row per case, a row of
    sub-totals per family, the servers' name, version, date and machine in the header."""
    names = [s.name for s in matrix.servers]
    lines = ["# SSE conformance matrix", "",
             "| server | version | date | machine | target | profile | report |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in matrix.servers:
        lines.append(f"| {_md(s.name)} | {_md(s.version)}{' (profile)' if s.version_from == 'profile' else ''} | "
                     f"{s.date} | {_md(s.machine)} | {_md(s.target)} | {_md(s.profile)} | {_md(s.report)} |")
    errors = [s for s in matrix.servers if s.error]
    lines += [""] + [f"> {_md(s.name)}: the run could not be done: {_md(s.error)}" for s in errors] + ([""] if errors else [])
    lines += ["| case | title | " + " | ".join(map(_md, names)) + " |", "| --- | --- |" + " --- |" * len(names)]
    family = None
    for case_id, title in matrix.cases:
        if family_of(case_id) != family:
            family = family_of(case_id)
            sub = matrix.subtotals(family)
            lines.append(f"| **{family}** | *family {family}* | " + " | ".join(f"*{_counts(sub[n])}*" for n in names) + " |")
        cells = [matrix.cell(case_id, n) for n in names]
        lines.append(f"| {case_id} | {_md(title)} | " + " | ".join(f"{_ICON[c.outcome]} {_md(c.verdict)}"
                                                                    for c in cells) + " |")
    totals = matrix.subtotals()
    lines.append("| **all** | | " + " | ".join(f"**{_counts(totals[n])}**" for n in names) + " |")
    cells = [(case_id, n, matrix.cell(case_id, n)) for case_id, _ in matrix.cases for n in names]
    shown = [(case_id, n, c) for case_id, n, c in cells if c.outcome not in (Outcome.PASS, Outcome.SKIP, ABSENT)]
    if shown:
        lines += ["", "## Findings", "", "| case | server | outcome | first finding or reason |", "| --- | --- | --- | --- |"]
        lines += [f"| {case_id} | {_md(n)} | {c.verdict} | {_md(c.first)} |" for case_id, n, c in shown]
    skips: dict[tuple[str, str], list[str]] = {}
    for case_id, n, c in cells:
        if c.outcome in (Outcome.SKIP, ABSENT):
            skips.setdefault((c.first, n), []).append(case_id)
    if skips:
        lines += ["", "## Skips, by reason", "", "| reason | server | cases |", "| --- | --- | --- |"]
        lines += [f"| {_md(reason)} | {_md(n)} | {_ids(matrix, ids)} |" for (reason, n), ids in skips.items()]
    return "\n".join(lines) + "\n"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#f4f4f4;z-index:1}th.srv{min-width:8em}
td.o{text-align:center;white-space:nowrap}td.o a{color:inherit;text-decoration:none;display:block}
.o-pass{background:#cdebd3;color:#17692b}.o-fail{background:#f4c7cc;color:#8b0016;font-weight:bold}
.o-non-strict{background:#fbe6b0;color:#6b4500}.o-info{background:#d3e5f8;color:#1d4f85}
.o-error{background:#ead0f0;color:#6a0075;font-weight:bold}.o-skip{background:#eeeeee;color:#666}
.o-absent{background:#fff;color:#aaa}tr.fam td{background:#fafafa;font-size:12px;color:#444}
tr.fam td:first-child{font-weight:bold}small{color:#666}.legend span{display:inline-block;padding:1px 6px;margin-right:4px}
"""


def matrix_html(matrix: Matrix, created_at: str = "") -> str:
    """One page, no network: cases x servers, a coloured cell per outcome with the first finding
    on hover and a link to the case in that server's own report, family sub-totals."""
    esc = html.escape
    names = [s.name for s in matrix.servers]
    head = "".join(
        f'<th class="srv" data-server="{esc(s.name)}"><b>{esc(s.name)}</b><br><small>'
        f'{esc(s.version)}{" (profile)" if s.version_from == "profile" else ""}<br>{esc(s.date)}<br>'
        f'<span title="{esc(s.machine)}">{esc(_short(s.machine))}</span><br>'
        f'<a href="{esc(s.report)}">report</a></small></th>' for s in matrix.servers)
    rows, family = [], None
    for case_id, title in matrix.cases:
        if family_of(case_id) != family:
            family = family_of(case_id)
            sub = matrix.subtotals(family)
            rows.append(f'<tr class="fam" data-family="{esc(family)}"><td>{esc(family)}</td><td>family {esc(family)}'
                        "</td>" + "".join(f"<td>{esc(_counts(sub[n]))}</td>" for n in names) + "</tr>")
        cells = []
        for n in names:
            c = matrix.cell(case_id, n)
            label = esc(_SHORT[c.outcome] + ("*" if c.verdict != c.outcome else ""))
            hover = esc(c.verdict + (f": {c.first}" if c.first else ""))
            inner = f'<a href="{esc(c.link)}">{label}</a>' if c.link else label
            cells.append(f'<td class="o o-{c.outcome}" data-server="{esc(n)}" data-outcome="{c.outcome}" '
                         f'title="{hover}">{inner}</td>')
        rows.append(f'<tr data-case="{esc(case_id)}"><td>{esc(case_id)}</td><td>{esc(title)}</td>{"".join(cells)}</tr>')
    totals = matrix.subtotals()
    rows.append('<tr class="fam"><td>all</td><td></td>' + "".join(f"<td>{esc(_counts(totals[n]))}</td>" for n in names)
                + "</tr>")
    errors = "".join(f'<p class="o-error">{esc(s.name)}: the run could not be done: {esc(s.error)}</p>'
                     for s in matrix.servers if s.error)
    legend = "".join(f'<span class="o-{o}">{o if o == ABSENT else _SHORT[o]}</span>' for o in OUTCOME_ORDER)
    return f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>SSE conformance matrix</title>
<link rel="icon" href="data:,"><style>{_CSS}</style><h1>SSE conformance matrix</h1>
<p>{len(matrix.cases)} cases × {len(names)} servers{f"; made {esc(created_at)}" if created_at else ""}. Hover a cell
for its first finding; click it for the case in that server's own report. * the verdict says more (a retry, a
baseline). A profile's unclaimed cases are skips with the reason.</p>
<p class="legend">{legend}</p>{errors}
<table id="matrix"><thead><tr><th>case</th><th>title</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
</html>
"""


def write_matrix(matrix: Matrix, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    written = {"json": directory / "matrix.json", "md": directory / "matrix.md", "html": directory / "matrix.html"}
    written["json"].write_text(json.dumps(to_json(matrix, created), indent=1, default=str))
    written["md"].write_text(matrix_markdown(matrix))
    written["html"].write_text(matrix_html(matrix, created))
    return written
