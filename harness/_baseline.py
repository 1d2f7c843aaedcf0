"""Expected failures: a baseline file lets a team gate on a server that still fails a few cases.

A listed case that fails as listed does not fail the gate; a listed case that now does better
fails it as stale ("remove it from the baseline"), so the baseline only shrinks; an unlisted
failure fails as usual.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from ._errors import UsageError
from ._outcomes import EXPECTABLE, Outcome, gate_rank
from ._runner import RunReport

__all__ = ["BaselineError", "apply_baseline", "load_baseline", "write_baseline"]

_PLACEHOLDER = "TODO: why this failure is accepted, who fixes it, by when"


class BaselineError(UsageError):
    """The baseline file cannot be used (unreadable, malformed, an unknown outcome): the user's to fix."""


def load_baseline(path: str | Path) -> dict[str, tuple[Outcome, str]]:
    """``{case id: (the outcome listed, its reason)}`` from a baseline TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BaselineError(f"baseline {path} is not valid TOML: {exc}") from None
    entries = data.get("expected", [])
    unknown = sorted(set(data) - {"expected"})
    if unknown or not isinstance(entries, list):
        raise BaselineError(f"baseline {path}: only [[expected]] entries are allowed (found {unknown or entries!r})")
    out: dict[str, tuple[Outcome, str]] = {}
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("case"), str):
            raise BaselineError(f"baseline {path}: entry {i} needs case = \"N.M\"")
        extra = sorted(set(entry) - {"case", "outcome", "reason"})
        if extra:
            raise BaselineError(f"baseline {path}: entry {i} has unknown key(s) {', '.join(extra)}")
        try:
            outcome = Outcome(entry.get("outcome", Outcome.FAIL))
        except ValueError:
            raise BaselineError(f"baseline {path}: entry {i} ({entry['case']}): outcome must be one of "
                                f"{', '.join(Outcome)}") from None
        if outcome not in EXPECTABLE:
            raise BaselineError(f"baseline {path}: entry {i} ({entry['case']}): only {' or '.join(EXPECTABLE)} can "
                                f"be expected")
        if entry["case"] in out:
            raise BaselineError(f"baseline {path}: case {entry['case']} is listed twice")
        out[entry["case"]] = (outcome, str(entry.get("reason", "")).strip() or "(no reason given)")
    return out


def apply_baseline(report: RunReport, baseline: dict[str, tuple[Outcome, str]]) -> RunReport:
    """The same report with the baseline's verdicts: expected failures and stale entries."""
    expected, stale = {}, {}
    outcomes = {r.id: r.outcome for r in report.results}
    for case_id, (listed, reason) in baseline.items():
        now = outcomes.get(case_id)
        if now is None:
            continue  # not run this time (--only): neither expected nor stale
        if now == listed:
            expected[case_id] = reason
        elif gate_rank(now) < gate_rank(listed):  # does better than listed
            stale[case_id] = f"listed as {listed}, now {now}: remove it from the baseline"
    return dataclasses.replace(report, expected=expected, stale=stale)


def write_baseline(report_json: dict[str, Any]) -> str:
    """A baseline listing every failing and non-strict case of a report.json, a reason to fill in."""
    lines = ["# sse-harness baseline: failures expected for now. `sse-harness run --baseline THIS_FILE`",
             "# A listed case that still fails does not fail the gate; one that passes now fails it",
             "# until removed (the baseline only shrinks). Fill in each reason.", ""]
    for entry in report_json.get("cases", []):
        if entry.get("outcome") in EXPECTABLE:
            lines += ["[[expected]]", f"case = {json.dumps(entry['id'])}", f"outcome = {json.dumps(entry['outcome'])}",
                      f"# {entry.get('title', '')}", f"reason = {json.dumps(_PLACEHOLDER)}", ""]
    return "\n".join(lines)
