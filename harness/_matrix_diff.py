"""`sse-harness diff` on two matrices: per server (column), what changed, as diff_reports says it
for two runs of one server; servers in only one matrix are named."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from rich.console import Console

from ._diff import Diff, diff_reports, print_tables, to_markdown
from ._matrix import MatrixError, column_report, load_matrix

__all__ = ["MatrixDiff", "diff_matrices", "main", "matrix_diff_markdown"]


@dataclasses.dataclass(frozen=True)
class MatrixDiff:
    old: str
    new: str
    servers: dict[str, Diff]  # per server in both, in the new matrix's column order
    added: tuple[str, ...]  # servers only in the new matrix
    removed: tuple[str, ...]  # only in the old

    @property
    def regressions(self) -> dict[str, int]:
        return {name: len(d.regressions) for name, d in self.servers.items() if d.regressions}

    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def diff_matrices(old: dict[str, Any], new: dict[str, Any], *, threshold: float = 0.2,
                  strict: bool = False) -> MatrixDiff:
    """Compare two loaded matrix.json documents column by column (servers matched by name)."""
    old_names = [s["name"] for s in old["servers"]]
    new_names = [s["name"] for s in new["servers"]]
    servers = {name: diff_reports(column_report(old, name), column_report(new, name), threshold=threshold,
                                  strict=strict) for name in new_names if name in old_names}
    return MatrixDiff(old.get("_source", "?"), new.get("_source", "?"), servers,
                      tuple(n for n in new_names if n not in old_names), tuple(n for n in old_names if n not in new_names))


def matrix_diff_markdown(diff: MatrixDiff) -> str:
    lines = ["# SSE conformance matrix: what changed per server", "", f"- old: `{diff.old}`", f"- new: `{diff.new}`", ""]
    if diff.added:
        lines.append(f"New servers: {', '.join(diff.added)}.")
    if diff.removed:
        lines.append(f"Servers no longer in the matrix: {', '.join(diff.removed)}.")
    for name, server_diff in diff.servers.items():
        body = to_markdown(server_diff).split("\n", 1)[1]  # its own title replaced by the server's
        lines += ["", f"## {name}", body.replace("\n## ", "\n### ")]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace, console: Console) -> int:
    """Exit 0: no server regressed; 1: one did; 2: a matrix could not be read."""
    from ._matrix import is_matrix

    errors = Console(stderr=True, soft_wrap=True)
    if is_matrix(args.old) != is_matrix(args.new):
        which = args.old if is_matrix(args.old) else args.new
        errors.print(f"cannot compare a matrix ({which}) with one run's report: give two matrices or two reports",
                     style="red", markup=False)
        return 2
    try:
        old, new = load_matrix(args.old), load_matrix(args.new)
    except MatrixError as exc:
        errors.print(f"cannot compare: {exc} (both must be matrices, or both reports)", style="red", markup=False)
        return 2
    diff = diff_matrices(old, new, threshold=args.threshold / 100, strict=args.strict)
    if args.format == "md":
        sys.stdout.write(matrix_diff_markdown(diff))
        return diff.exit_code()
    for name in diff.added:
        console.print(f"[cyan]new server: {name}")
    for name in diff.removed:
        console.print(f"[yellow]server no longer in the matrix: {name}")
    for name, server_diff in diff.servers.items():
        console.rule(name)
        print_tables(server_diff, console)
    return diff.exit_code()
