"""Which cases exist: case ids, the registry, the ``@case`` decorator, entry points and ``--cases`` files.

The numbered cases live in ``scenarios`` (and in any package that registers cases through the
``sse_harness.cases`` entry point, or a module named with ``--cases``). The runner receives
cases from the registry and never imports them.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Iterator, Sequence

from ._errors import UsageError
from ._outcomes import Judge, Measure, Plot
from ._profile import Profile
from ._stream_profile import CLAIMS

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "Case", "CaseLoadError", "Registry", "case", "case_sort_key", "load_cases"]


# A case id: family, number, an optional lower-case suffix (4.3, 10.12, 4.3a).
_CASE_ID = re.compile(r"(\d+)\.(\d+)([a-z]*)")


def case_sort_key(case_id: str) -> tuple[int, int, str]:
    """Natural order: 4.2 < 4.3 < 4.3a < 4.3b < 4.10 < 10.1."""
    match = _CASE_ID.fullmatch(case_id)
    if match is None:
        raise CaseLoadError(f"case id {case_id!r} is not N.M or N.Ma (a family, a number, an optional letter suffix)")
    return int(match[1]), int(match[2]), match[3]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    title: str
    invariants: tuple[str, ...]
    run: Callable[["Context", Judge], Awaitable[None]]
    exclusive: bool = False  # runs alone: it fills the target's capacity or needs a quiet target
    timeout: float = 60.0
    plots: tuple[Plot, ...] = ()
    module: str = ""  # the module that registered it (its origin is looked up by the registry)
    measures: tuple[Measure, ...] = ()
    # What the target must claim for the case to apply (harness._stream_profile.CLAIMS): a case
    # whose needs the profile does not claim is skip, naming the missing claim.
    needs: tuple[str, ...] = ("contract",)

    def unmet(self, profile: Profile) -> str:
        """Why the case does not apply to this profile ("" when it does)."""
        missing = profile.claims.missing(self.needs)
        if not missing:
            return ""
        return "not claimed by the profile: " + "; ".join(CLAIMS.get(m, m) for m in missing)

    def title_for(self, profile: Profile) -> str:
        """The title with the values in force: a title may name the profile's timing
        (``{terminal_close_seconds:g}``, ``{progress_interval_ms:g}``...), not hard-code it."""
        values = dict(profile.timing)
        values["progress_interval_ms"] = values["progress_interval_seconds"] * 1000
        try:
            return self.title.format(**values)
        except (KeyError, ValueError, IndexError):
            return self.title

    @property
    def sort_key(self) -> tuple[int, int, str]:
        return case_sort_key(self.id)


class Registry:
    """The cases a run can choose from, validated as they register."""

    def __init__(self) -> None:
        self._cases: dict[str, Case] = {}
        self._origins: dict[str, str] = {}  # module (or package) name -> where it came from

    def add(self, case_: Case) -> None:
        case_sort_key(case_.id)  # raises on a malformed id
        existing = self._cases.get(case_.id)
        if existing is not None and (existing.module, getattr(existing.run, "__qualname__", None)) == \
                (case_.module, getattr(case_.run, "__qualname__", None)):
            self._cases[case_.id] = case_  # the same module imported again (say, after sys.modules was reset)
            return
        if existing is not None:
            raise CaseLoadError(f"duplicate case id {case_.id}: registered by {existing.module or '?'} "
                             f"({self.origin(existing)}) and again by {case_.module or '?'}")
        self._cases[case_.id] = case_

    def unregister(self, module: str) -> list[Case]:
        """Take out the cases that ``module`` (a package or module name) and its submodules
        registered, and return them: for a tool or a test that loads cases for a while."""
        gone = [c for c in self._cases.values() if c.module == module or c.module.startswith(module + ".")]
        for case_ in gone:
            del self._cases[case_.id]
        return gone

    def note_origin(self, module: str, origin: str) -> None:
        self._origins.setdefault(module, origin)

    def origin(self, case_: Case) -> str:
        module = case_.module
        while module:
            if module in self._origins:
                return self._origins[module]
            module = module.rpartition(".")[0]
        return "built-in" if case_.module.split(".")[0] == "scenarios" else f"module {case_.module}"

    def __iter__(self) -> Iterator[Case]:
        return iter(sorted(self._cases.values(), key=lambda c: c.sort_key))

    def __len__(self) -> int:
        return len(self._cases)


REGISTRY = Registry()


def case(case_id: str, title: str, *, invariants: tuple[str, ...] = (), exclusive: bool = False,
         timeout: float = 60.0, plots: Sequence[Plot] = (), measures: Sequence[Measure] = (),
         needs: Sequence[str] = ("contract",)):
    """Register a scenario function as a numbered case (``N.M``, or ``N.Ma`` for a variant).
    ``needs``: the claims the target's profile must make for the case to run (default: the
    contract's job API); see harness._stream_profile.CLAIMS."""
    unknown = [n for n in needs if n not in CLAIMS]
    if unknown:
        raise CaseLoadError(f"case {case_id}: unknown need(s) {unknown}; known: {', '.join(sorted(CLAIMS))}")

    def register(func):
        REGISTRY.add(Case(case_id, title, tuple(invariants), func, exclusive, timeout, tuple(plots),
                          getattr(func, "__module__", "") or "", tuple(measures), tuple(needs)))
        return func

    return register


ENTRY_POINT_GROUP = "sse_harness.cases"


class CaseLoadError(UsageError):
    """A case module named with --cases or by an entry point could not be loaded."""


def load_cases(extra: Sequence[str] = (), *, registry: Registry = REGISTRY) -> list[Case]:
    """Every case a run can choose from: the packages registered under the entry-point group
    ``sse_harness.cases`` (the built-in families are one of them), then each ``extra`` item:
    a module name (``my_pkg.cases``) or a ``.py`` file."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist.name if entry.dist is not None else "?"
        origin = "built-in" if entry.value.split(":")[0] == "scenarios" else f"{dist} (entry point {entry.name})"
        registry.note_origin(entry.value.split(":")[0], origin)
        try:
            entry.load()
        except ValueError:
            raise  # a malformed or duplicate case id: its message says which
        except Exception as exc:
            raise CaseLoadError(f"cases of {origin} ({entry.value}) failed to load: {type(exc).__name__}: {exc}") from exc
    for item in extra:
        _load_extra(item, registry)
    if not len(registry):
        raise CaseLoadError(f"no cases registered: is sse-harness installed (pip install -e .)? "
                            f"It registers its families under the entry point group {ENTRY_POINT_GROUP}")
    return list(registry)


def _load_extra(item: str, registry: Registry) -> None:
    path = Path(item)
    if item.endswith(".py"):
        if not path.is_file():
            raise CaseLoadError(f"--cases {item}: no such file")
        name = f"sse_harness_cases_{abs(hash(str(path.resolve())))}"
        if name in sys.modules:
            return
        registry.note_origin(name, f"file {item}")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except ValueError:
            raise
        except Exception as exc:
            del sys.modules[name]
            raise CaseLoadError(f"--cases {item} failed to load: {type(exc).__name__}: {exc}") from exc
        return
    registry.note_origin(item, f"module {item}")
    try:
        importlib.import_module(item)
    except ImportError as exc:
        raise CaseLoadError(f"--cases {item}: cannot import it ({exc}); give a module name or a .py file") from exc
