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
