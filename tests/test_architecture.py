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
