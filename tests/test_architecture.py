"""Rules of the code base that a test can hold."""

import pytest

from conftest import ROOT


def test_the_judge_never_imports_the_judged():
    """harness/ and scenarios/ reach the reference server only as a separate process."""
    import ast

    for package in ("harness", "scenarios"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                assert not any(n.split(".")[0] == "reference_server" for n in names), f"{path} imports {names}"


def _imports(path) -> list[str]:
    import ast

    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.append(node.module or "")
    return names


def test_the_observation_layer_never_reaches_up_into_the_judges():
    """harness/ (decoder, client, runner, reports) never imports scenarios/: the runner receives
    cases from the registry (entry points, --cases), so data flows one way."""
    for path in (ROOT / "harness").rglob("*.py"):
        names = _imports(path)
        assert not any(n.split(".")[0] == "scenarios" for n in names), f"{path} imports {names}"


def test_one_version_one_outcome_vocabulary():
    """The version is written once (pyproject.toml); the outcome words once (harness._outcomes.Outcome)."""
    import re

    for package in ("harness", "scenarios", "reference_server"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"""["']\d+\.\d+\.\d+["']""", text), f"{path} writes a version string"
    words = ("'pass'", '"pass"', '"non-strict"', "'non-strict'")
    for path in (ROOT / "harness").rglob("*.py"):
        if path.name == "_outcomes.py":
            continue
        text = path.read_text()
        assert not any(w in text for w in words), f"{path} spells an outcome out instead of using Outcome"


def _private_harness_imports(path) -> list[str]:
    """The private harness modules (harness._*) a file imports, however it spells the import."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("harness._")]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.startswith("harness._"):
                found.append(node.module)
            elif node.module == "harness":
                found += [f"harness.{alias.name}" for alias in node.names if alias.name.startswith("_")]
    return found


def test_the_built_in_cases_use_only_what_a_users_cases_can_use():
    """scenarios/ (the built-in families) and examples/ (a user's own cases) import the harness by
    its public names only: harness, harness.checks, harness.browser, harness.nginx."""
    paths = [*(ROOT / "scenarios").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    offenders = {str(p.relative_to(ROOT)): names for p in paths if (names := _private_harness_imports(p))}
    assert not offenders, f"private harness modules imported: {offenders}"


def test_the_private_import_rule_catches_every_spelling(tmp_path):
    """The rule above sees each way a private module can be imported (so that it can fail)."""
    for text in ("import harness._cases", "from harness._timing import overdue", "from harness import _client",
                 "def f():\n    from harness._browser import open_browser\n"):
        path = tmp_path / "case.py"
        path.write_text(text + "\n")
        assert _private_harness_imports(path), text
    path = tmp_path / "case.py"
    path.write_text("from harness import checks, Event\nfrom harness.browser import open_browser\nfrom ._core import x\n")
    assert not _private_harness_imports(path)


def test_every_public_harness_name_is_importable():
    """What the public modules list in __all__ exists (a case author's import never fails)."""
    import importlib

    for module in ("harness", "harness.browser", "harness.checks", "harness.nginx"):
        imported = importlib.import_module(module)
        missing = [name for name in imported.__all__ if not hasattr(imported, name)]
        assert not missing, f"{module}.__all__ names what it lacks: {missing}"


def _outcome_literals(path) -> list[tuple[int, str]]:
    """Outcome words written as string literals where they can only stand for an outcome: compared
    with something (``x.outcome == "fail"``, ``in ("fail", "error")``), made into one
    (``Outcome("fail")``), or a lookup's default (``.get("outcome", "fail")``). Other uses of these
    words (a JSON key "error", an event named "error") are not outcomes."""
    import ast

    words = {"pass", "fail", "non-strict", "info", "error", "skip"}

    def literals(node) -> list[str]:
        if isinstance(node, ast.Constant) and node.value in words:
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.Set, ast.List)):
            return [w for e in node.elts for w in literals(e)]
        return []

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        sides = []
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Outcome":
            sides = node.args
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            sides = node.args[1:]
        found += [(node.lineno, w) for side in sides for w in literals(side)]
    return found


def test_outcomes_are_compared_as_outcome_members():
    """harness/ compares, makes and defaults outcomes with Outcome members, never with their words."""
    for path in (ROOT / "harness").rglob("*.py"):
        if path.name != "_outcomes.py":
            assert not _outcome_literals(path), f"{path} spells outcomes out: {_outcome_literals(path)}"


def test_the_outcome_literal_rule_catches_what_it_is_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('a = r.outcome == "fail"\nb = x in ("pass", "error")\nc = Outcome("skip")\n'
                     'd = e.get("outcome", "fail")\nkey = {"error": 1}\nf = e.get("error")\n')
    assert _outcome_literals(probe) == [(1, "fail"), (2, "pass"), (2, "error"), (3, "skip"), (4, "fail")]


def test_one_target_set_up():
    """Profile resolution, the embedded server's start, the local-host rule, the keep-alive
    fallback and the restart hook live in harness._target; the commands and the plugin call it."""
    import re

    owner = ROOT / "harness" / "_target.py"
    users = ("_cli.py", "_load_cli.py", "pytest_plugin.py", "_probe_cli.py", "_matrix_cli.py", "_runner.py",
             "_context.py", "load.py")
    rules = {
        "profile resolution": r"\bload_profile\(",
        "the embedded server's start": r"\bserver_process\(|\breference_server_args\(",
        "the own-server rule": r"\[\"target\"\]|get\(\"target\"",
        "the local-host rule": r"\"127\.0\.0\.1\", \"localhost\"|is_loopback\b.*=|def is_same_host",
        "a keep-alive fallback": r"\"keepalive_seconds\"",
        "the restart hook": r"\brestart_for\(",
        "browser discovery": r"\bfind_browser\(",
    }
    for name in users:
        text = (ROOT / "harness" / name).read_text()
        for rule, pattern in rules.items():
            assert not re.search(pattern, text), f"harness/{name} has its own {rule}: use harness._target"
        assert "_target import" in text, f"harness/{name} does not use harness._target"
    owned = owner.read_text()
    assert all(re.search(pattern, owned) for rule, pattern in rules.items() if rule != "the local-host rule")


def test_one_pass_fail_rule():
    """Which outcomes fail a run is decided by harness._outcomes.gate; the runner, the diff, the
    baseline and the plugin call it and list no failing outcomes of their own."""
    import re

    for name in ("_runner.py", "_diff.py", "_baseline.py", "pytest_plugin.py"):
        text = (ROOT / "harness" / name).read_text()
        assert "gate" in text, f"harness/{name} does not use harness._outcomes' gate rule"
        assert not re.search(r"\(Outcome\.FAIL, Outcome\.NON_STRICT\)|Outcome\.FAIL\s*:\s*\d", text), \
            f"harness/{name} lists failing outcomes itself"


@pytest.mark.xdist_group("heavy")
def test_the_heavy_group_is_one_worker_at_a_time(request):
    """The tests that take a core of their own run one after another only while xdist's loadgroup
    groups them; it stopped, silently, with pytest 9.2 (pytest-dev/pytest-xdist#1386)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by xdist's --dist loadgroup")
    assert request.node.nodeid.endswith("@heavy"), (
        f"{request.node.nodeid}: xdist's loadgroup does not group here; the heavy tests would run at once")
