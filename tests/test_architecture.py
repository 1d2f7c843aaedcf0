"""Rules of the code base that a test can hold."""

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

    for module in ("harness", "harness.checks", "harness.nginx"):
        imported = importlib.import_module(module)
        missing = [name for name in imported.__all__ if not hasattr(imported, name)]
        assert not missing, f"{module}.__all__ names what it lacks: {missing}"
