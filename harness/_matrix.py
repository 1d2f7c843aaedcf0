"""The comparison matrix: many servers' reports as one table, cases down the side, servers across.

Built from report.json documents only (a fresh run's or an old report dir's), so a matrix of
runs made today and one of last month's reports are the same thing. matrix.json (schema 1) keeps
per cell what `sse-harness diff` needs to compare two matrices server by server."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ._errors import UsageError
from ._outcomes import OUTCOMES
from ._diff import DiffError, _first, id_key, load_report, verdict

__all__ = ["Cell", "Matrix", "MatrixError", "Server", "build_matrix", "column_report", "dir_columns", "is_matrix", "load_matrix",
           "matrix_from_dirs", "to_json"]

MATRIX_SCHEMA = 1
MATRIX_KIND = "sse-harness matrix"
ABSENT = "absent"  # the case is not in this server's report (its run selected other cases)
OUTCOME_ORDER = (*(str(o) for o in OUTCOMES), ABSENT)


class MatrixError(UsageError):
    """A matrix that cannot be built or read from what the user gave (a report dir, a file, two
    servers of one name): the user's to fix; the message names the file. A ValueError too."""


@dataclasses.dataclass(frozen=True)
class Server:
    """A column: one server's run, as its report tells it."""

    name: str
    version: str  # as given by who started it, else the healthz's when it advertised one, else the profile's name
    version_from: str  # "given" | "healthz" | "profile"
    target: str
    profile: str
    started_at: str
    duration_ms: int
    machine: str  # the platform the run was made on (report environment)
    harness: str
    report: str  # the server's own report.html, relative to the matrix's directory
    summary: dict[str, int]
    error: str = ""  # why its run as a whole could not be done

    @property
    def date(self) -> str:
        return self.started_at[:10]


@dataclasses.dataclass(frozen=True)
class Cell:
    outcome: str  # one of OUTCOME_ORDER
    verdict: str  # the outcome with what a baseline or a retry said of it
    first: str  # the first finding, or the reason of a skip or error
    figures: dict[str, Any]  # the case's declared figures (harness.Measure), as in report.json
    link: str  # the case's section in the server's own report ("" when absent)
    confounded: bool = False
    retries: int = 0
    expected: str | None = None
    stale: str | None = None


@dataclasses.dataclass(frozen=True)
class Matrix:
    servers: tuple[Server, ...]
    cases: tuple[tuple[str, str], ...]  # (id, title) in natural id order: every case any server has
    cells: dict[str, dict[str, Cell]]  # case id -> server name -> cell

    def cell(self, case_id: str, server: str) -> Cell:
        return self.cells[case_id][server]

    @property
    def families(self) -> list[str]:
        seen: list[str] = []
        for case_id, _ in self.cases:
            family = family_of(case_id)
            if family not in seen:
                seen.append(family)
        return seen

    def subtotals(self, family: str | None = None) -> dict[str, dict[str, int]]:
        """Per server, how many cells of each outcome (of one family, or of all)."""
        out = {s.name: dict.fromkeys(OUTCOME_ORDER, 0) for s in self.servers}
        for case_id, _ in self.cases:
            if family is None or family_of(case_id) == family:
                for s in self.servers:
                    out[s.name][self.cells[case_id][s.name].outcome] += 1
        return out


def family_of(case_id: str) -> str:
    return case_id.split(".", 1)[0]


def _version(report: dict[str, Any]) -> tuple[str, str]:
    advertised = (report.get("environment") or {}).get("advertised")
    if isinstance(advertised, dict) and isinstance(advertised.get("version"), (str, int, float)):
        return str(advertised["version"]), "healthz"
    return str(report.get("profile") or "?"), "profile"


def _cell(case: dict[str, Any], link: str) -> Cell:
    return Cell(case["outcome"], verdict(case), _first(case),
                case.get("figures") if isinstance(case.get("figures"), dict) else {}, link,
                bool(case.get("confounded")), len(case.get("retries") or ()), case.get("expected"), case.get("stale"))


def build_matrix(columns: Iterable[tuple[str, dict[str, Any], str]], versions: dict[str, str] | None = None) -> Matrix:
    """The matrix of ``columns``: (server name, its loaded report.json, the path of its
    report.html relative to where the matrix is written), left to right. ``versions``: a server's
    version as whoever started it knows it (a library's distribution version), before the healthz's."""
    servers: list[Server] = []
    reports: dict[str, dict[str, Any]] = {}
    for name, report, html_path in columns:
        if name in reports:
            raise MatrixError(f"two servers are named {name!r}: name them apart (NAME=PROFILE)")
        version, version_from = ((versions[name], "given") if name in (versions or {}) else _version(report))
        env = report.get("environment") or {}
        summary = report.get("summary") if isinstance(report.get("summary"), dict) else {}
        servers.append(Server(name, version, version_from, str(report.get("target", "?")),
                              str(report.get("profile", "?")), str(report.get("startedAt", "")),
                              int(report.get("durationMs") or 0), str(env.get("platform", "?")),
                              str(env.get("harness", "?")), html_path, dict(summary), str(report.get("error") or "")))
        reports[name] = report
    titles: dict[str, str] = {}
    for report in reports.values():
        for case in report["cases"]:
            titles.setdefault(case["id"], str(case.get("title", "")))
    order = sorted(titles, key=id_key)
    cells: dict[str, dict[str, Cell]] = {i: {} for i in order}
    for server in servers:
        by_id = {c["id"]: c for c in reports[server.name]["cases"]}
        for case_id in order:
            case = by_id.get(case_id)
            cells[case_id][server.name] = (
                _cell(case, f"{server.report}#c{case_id}") if case is not None else
                Cell(ABSENT, ABSENT, "not in this server's report: its run selected other cases", {}, ""))
    return Matrix(tuple(servers), tuple((i, titles[i]) for i in order), cells)


def column_name(path: Path) -> str:
    """A report dir's name; a profile file's: its stem, or its directory's name when the stem says
    nothing (examples/real/litestar/profile.toml -> litestar)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".toml":
        return path.parent.name if path.stem == "profile" else path.stem
    return path.resolve().name if path.is_dir() else path.stem


def dir_columns(dirs: Iterable[Path | str], matrix_dir: Path) -> list[tuple[str, dict[str, Any], str]]:
    """Columns of existing runs (report dirs, or report.json files), each named by its directory
    (NAME=DIR names it otherwise), linked relative to ``matrix_dir``."""
    columns = []
    for given in dirs:
        name, eq, where = str(given).partition("=")
        path = Path(where if eq else name)
        try:
            report = load_report(path)
        except DiffError as exc:
            raise MatrixError(str(exc)) from None
        folder = path if path.is_dir() else path.parent
        columns.append((name if eq else column_name(folder), report,
                        os.path.relpath(folder / "report.html", matrix_dir)))
    return columns


def matrix_from_dirs(dirs: Iterable[Path | str], matrix_dir: Path) -> Matrix:
    return build_matrix(dir_columns(dirs, matrix_dir))


# -- matrix.json ----------------------------------------------------------------------------------

def to_json(matrix: Matrix, created_at: str = "") -> dict[str, Any]:
    return {
        "schemaVersion": MATRIX_SCHEMA,
        "kind": MATRIX_KIND,
        "createdAt": created_at,
        "servers": [{"name": s.name, "version": s.version, "versionFrom": s.version_from, "target": s.target,
                     "profile": s.profile, "startedAt": s.started_at, "durationMs": s.duration_ms,
                     "machine": s.machine, "harness": s.harness, "report": s.report, "summary": s.summary,
                     "error": s.error or None} for s in matrix.servers],
        "cases": [{"id": case_id, "title": title, "family": family_of(case_id),
                   "cells": {name: {"outcome": c.outcome, "verdict": c.verdict, "firstFinding": c.first or None,
                                    "figures": c.figures, "link": c.link or None, "confounded": c.confounded,
                                    "retries": c.retries, "expected": c.expected, "stale": c.stale}
                             for name, c in matrix.cells[case_id].items()}}
                  for case_id, title in matrix.cases],
        "subtotals": {family: matrix.subtotals(family) for family in matrix.families},
        "totals": matrix.subtotals(),
    }


def _matrix_file(path: Path) -> Path:
    return path / "matrix.json" if path.is_dir() else path


def is_matrix(path: str | Path) -> bool:
    """Whether ``path`` is a matrix.json or a directory holding one (and no report.json)."""
    path = Path(path)
    if path.is_dir():
        return (path / "matrix.json").is_file() and not (path / "report.json").is_file()
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("kind") == MATRIX_KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_matrix(path: str | Path) -> dict[str, Any]:
    file = _matrix_file(Path(path))
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise MatrixError(f"{file}: cannot read it: {exc}") from None
    except ValueError as exc:
        raise MatrixError(f"{file}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != MATRIX_KIND:
        raise MatrixError(f"{file}: not an sse-harness matrix.json")
    if data.get("schemaVersion") != MATRIX_SCHEMA:
        raise MatrixError(f"{file}: schemaVersion {data.get('schemaVersion')!r}; this harness reads {MATRIX_SCHEMA}")
    data["_source"] = str(file)
    return data


def column_report(matrix: dict[str, Any], name: str) -> dict[str, Any]:
    """One server's column of a loaded matrix.json as a report.json that diff_reports reads."""
    server = next(s for s in matrix["servers"] if s["name"] == name)
    cases = []
    for case in matrix["cases"]:
        cell = case["cells"].get(name)
        if cell is None or cell["outcome"] == ABSENT:
            continue
        cases.append({"id": case["id"], "title": case["title"], "outcome": cell["outcome"],
                      "reason": cell.get("firstFinding"), "figures": cell.get("figures") or {},
                      "confounded": cell.get("confounded", False), "retries": [{}] * int(cell.get("retries") or 0),
                      "expected": cell.get("expected"), "stale": cell.get("stale")})
    return {"schemaVersion": 1, "target": server["target"], "profile": server["profile"],
            "startedAt": server["startedAt"], "durationMs": server["durationMs"], "error": server.get("error"),
            "cases": cases, "_source": f"{matrix.get('_source', '?')} [{name}]"}
