"""The CI recipes (examples/ci/, docs/ci.md) hold together: YAML that parses, sse-harness command
lines the CLI's own parser accepts, paths that agree; and `run` writes the GitHub job summary."""

from __future__ import annotations

import re
import shlex
import string
from pathlib import Path

import pytest
import yaml

from harness._cli import _parser, main

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / "examples" / "ci" / "github-actions.yml"
GITLAB = ROOT / "examples" / "ci" / "gitlab-ci.yml"
_CONTROL = {"&&", "||", ";", "|", "&", ">", ">>", "<", "(", ")", "{", "}"}


def harness_commands(script: str, env: dict[str, str]) -> list[list[str]]:
    """Every `sse-harness ...` command in a shell script, as argv with $VARS from ``env`` filled in."""
    script = script.replace("\\\n", " ")
    found = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
        for i, word in enumerate(words):
            if word == "sse-harness" and (i == 0 or words[i - 1] in _CONTROL):
                argv = []
                for arg in words[i + 1:]:
                    if arg in _CONTROL:
                        break
                    argv.append(string.Template(arg).safe_substitute(env))
                found.append(argv)
    return found


def parse(argv: list[str]):
    try:
        return _parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"the CLI refuses: sse-harness {shlex.join(argv)}")


def github_expression(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", lambda m: env[m.group(1)], value)


def test_github_workflow_runs_the_gate_and_publishes_what_it_wrote() -> None:
    workflow = yaml.safe_load(GITHUB.read_text())
    env = workflow["env"]
    steps = workflow["jobs"]["conformance"]["steps"]
    commands = [parse(argv) for step in steps if "run" in step for argv in harness_commands(step["run"], env)]
    assert [c.command for c in commands] == ["run", "diff"]
    run, diff = commands
    report_dir = str(run.report_dir)
    assert run.target == env["TARGET"] and {"json", "junit", "md"} <= set(run.format.split(","))
    by_action = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}
    junit = github_expression(by_action["mikepenz/action-junit-report"]["with"]["report_paths"], env)
    assert junit == f"{report_dir}/junit.xml"
    assert github_expression(by_action["actions/upload-artifact"]["with"]["path"], env) == report_dir
    assert diff.new == report_dir and diff.format == "md"
    gate = next(i for i, step in enumerate(steps) if "sse-harness run" in step.get("run", ""))
    # Everything after the gate still runs when the gate went red.
    assert all("!cancelled()" in step["if"] or step["if"] == "always()" for step in steps[gate + 1:]), steps
    stop = steps[-1]
    assert stop["if"] == "always()" and "server.pid" in stop["run"]
    start = next(step for step in steps if "server.pid" in step.get("run", "") and step is not stop)
    assert "nohup" in start["run"] and env["TARGET"].rsplit(":", 1)[1] in start["run"]


def test_gitlab_job_runs_the_gate_and_publishes_what_it_wrote() -> None:
    job = yaml.safe_load(GITLAB.read_text())["sse-conformance"]
    env = job["variables"]
    lines = [*job["before_script"], *job["script"], *job["after_script"]]
    commands = [parse(argv) for line in lines for argv in harness_commands(line, env)]
    assert [c.command for c in commands] == ["run"]
    report_dir = str(commands[0].report_dir)
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == f"{report_dir}/junit.xml"
    assert job["artifacts"]["paths"] == [f"{report_dir}/"]
    assert any("server.pid" in line and "kill" in line for line in job["after_script"])


def test_the_docs_show_the_recipes_as_they_are_in_the_files() -> None:
    doc = (ROOT / "docs" / "ci.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    assert GITHUB.read_text() in blocks and GITLAB.read_text() in blocks
    for block in re.findall(r"```sh\n(.*?)```", doc, flags=re.S):
        for argv in harness_commands(block, {}):
            parse(argv)


def test_the_command_finder_finds_commands_after_shell_operators() -> None:
    script = 'cd x && sse-harness run --only "4.*" | tee out # sse-harness fake\necho sse-harness; sse-harness list'
    assert harness_commands(script, {}) == [["run", "--only", "4.*"], ["list"]]


def test_run_appends_report_md_to_the_github_step_summary(tmp_path, monkeypatch, capsys) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    # Nothing listens on port 9 here: the run cannot be done, quickly, and still reports.
    code = main(["run", "--target", "http://127.0.0.1:9", "--only", "1.1", "--report-dir", str(tmp_path / "r")])
    assert code == 2
    text = summary.read_text()
    assert text.startswith("earlier step\n# SSE conformance: http://127.0.0.1:9\n")
    assert "The run could not be done" in text and "| 1.1 |" in text
    assert text.split("earlier step\n", 1)[1] == (tmp_path / "r" / "report.md").read_text() + "\n"
