"""`sse-harness matrix`: many servers' reports as one table (cases x servers), from fresh runs (the
reference server and a broken variant, one after another) or from report dirs; matrix.json per
cell; `sse-harness diff` on two matrices; matrix.html in Chromium."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest

from conftest import ROOT, RunningServer
from harness._browser import BrowserUnavailable, find_browser, open_browser
from harness._cli import main as cli_main
from harness._matrix import build_matrix, load_matrix
from harness._matrix_cli import parse_entry
from harness._matrix_render import matrix_markdown
from harness._profile import ProfileError

ONLY = ["1.1", "12.3", "12.5", "14.1"]  # healthz; a prompt head; keep-alive (the fault's); 14: unclaimed by the contract


def first_finding(case: dict) -> str:
    return case["reason"] or next((f["message"] for f in case["findings"]), "")


@pytest.fixture(scope="module")
def two_server_matrix(tmp_path_factory) -> Path:
    """The matrix over the embedded reference server and the keepalive-slow variant (a profile
    that names it by base_url), run through the CLI."""
    out = tmp_path_factory.mktemp("matrix")
    slow = RunningServer([sys.executable, str(ROOT / "tests" / "variants" / "server.py"), "keepalive-slow", "--port",
                          "0", "--data-dir", "{data_dir}", "--keepalive", "1", "--time-scale", "0.25",
                          "--max-concurrent-jobs", "12", "--retry-ms", "200", "--diagnostics"])
    try:
        profile = out / "slow.toml"
        profile.write_text(f'[target]\nbase_url = "{slow.base_url}"\n')
        code = cli_main(["matrix", "--profile", "reference", "--profile", f"keepalive-slow={profile}",
                         *[a for i in ONLY for a in ("--only", i)], "--report-dir", str(out / "m")])
    finally:
        slow.stop()
    assert code == 0
    return out / "m"


@pytest.mark.xdist_group("busy")
def test_cells_are_the_single_reports(two_server_matrix):
    """Every cell of matrix.json is its server's own report.json: outcome, first finding, figures,
    a link to an anchor that report.html has; the variant's fault shows where it should."""
    matrix = load_matrix(two_server_matrix)
    assert [s["name"] for s in matrix["servers"]] == ["reference", "keepalive-slow"]
    reports = {name: json.loads((two_server_matrix / name / "report.json").read_text())
               for name in ("reference", "keepalive-slow")}
    assert [c["id"] for c in matrix["cases"]] == ONLY
    for server in matrix["servers"]:
        report = reports[server["name"]]
        assert server["version"] == report["environment"]["advertised"]["version"] and server["versionFrom"] == "healthz"
        assert (server["startedAt"], server["machine"]) == (report["startedAt"], report["environment"]["platform"])
        page = (two_server_matrix / server["report"]).read_text()
        for case in report["cases"]:
            cell = next(c for c in matrix["cases"] if c["id"] == case["id"])["cells"][server["name"]]
            assert cell["outcome"] == case["outcome"], (server["name"], case["id"])
            assert (cell["firstFinding"] or "") == first_finding(case)
            assert cell["figures"] == case["figures"]
            assert cell["link"] == f"{server['name']}/report.html#c{case['id']}"
            assert f'id="c{case["id"]}"' in page
    outcomes = {c["id"]: {n: cell["outcome"] for n, cell in c["cells"].items()} for c in matrix["cases"]}
    assert outcomes["12.3"] == {"reference": "pass", "keepalive-slow": "pass"}
    assert outcomes["12.5"] == {"reference": "pass", "keepalive-slow": "fail"}
    # A case the profile does not claim is a skip with its reason, on every server.
    browser_cells = next(c for c in matrix["cases"] if c["id"] == "14.1")["cells"].values()
    assert all(c["outcome"] == "skip" and "claim" in c["firstFinding"] for c in browser_cells), list(browser_cells)
    none = dict.fromkeys(matrix["totals"]["reference"], 0)
    assert matrix["subtotals"]["12"] == {"reference": {**none, "pass": 2}, "keepalive-slow": {**none, "pass": 1, "fail": 1}}
    md = (two_server_matrix / "matrix.md").read_text()
    assert re.search(r"^\| 12\.5 \| .* \| ✅ pass \| ❌ fail \|$", md, re.M), md
    assert "| **12** | *family 12* | *2 pass* | *1 pass · 1 fail* |" in md


@pytest.mark.xdist_group("busy")
async def test_matrix_html_in_chromium(two_server_matrix):
    """matrix.html offline in Chromium: a coloured cell per outcome, the first finding on hover
    (title), the link into the server's own report lands on the case; a screenshot beside it."""
    try:
        browser_path = find_browser()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    shot = two_server_matrix / "matrix.png"
    async with open_browser(browser_path) as browser:
        async def look(pw):
            context = await pw.new_context(viewport={"width": 1100, "height": 700}, offline=True)
            page = await context.new_page()
            await page.goto((two_server_matrix / "matrix.html").as_uri(), timeout=15_000)
            cells = await page.eval_on_selector_all(
                "td.o", "tds => tds.map(td => [td.closest('tr').dataset.case, td.dataset.server, td.dataset.outcome, "
                        "getComputedStyle(td).backgroundColor, td.title])")
            head = await page.inner_text("thead")
            await page.screenshot(path=str(shot), full_page=True)
            await page.click("tr[data-case='12.5'] td[data-server='keepalive-slow'] a")
            await page.wait_for_load_state()
            landed = (page.url, await page.eval_on_selector("#c12\\.5", "h => h.textContent"))
            await context.close()
            return cells, head, landed

        cells, head, landed = await browser.call(look, timeout=40)
    by_key = {(case, server): (outcome, colour, title) for case, server, outcome, colour, title in cells}
    assert by_key[("12.5", "reference")][0] == "pass" and by_key[("12.5", "keepalive-slow")][0] == "fail"
    assert by_key[("12.5", "reference")][1] != by_key[("12.5", "keepalive-slow")][1]  # coloured apart
    assert by_key[("12.5", "reference")][1] == by_key[("12.3", "keepalive-slow")][1]  # one colour per outcome
    assert by_key[("14.1", "reference")][1] not in (by_key[("12.5", "reference")][1], by_key[("12.5", "keepalive-slow")][1])
    report = json.loads((two_server_matrix / "keepalive-slow" / "report.json").read_text())
    finding = first_finding(next(c for c in report["cases"] if c["id"] == "12.5"))
    assert finding and finding in by_key[("12.5", "keepalive-slow")][2]
    assert "reference" in head and "keepalive-slow" in head and "0.1.0" in head
    assert landed[0].endswith("keepalive-slow/report.html#c12.5") and "12.5" in landed[1] and "fail" in landed[1]
    assert shot.stat().st_size > 10_000


# -- from report dirs, and diff: hand-written report.json files (no server) --------------------------

def report(target: str, outcomes: dict[str, str], *, version: str | None = None) -> dict:
    env = {"platform": "Linux-test", "harness": "0.1.0", **({"advertised": {"version": version}} if version else {})}
    return {"schemaVersion": 1, "target": target, "profile": "contract", "startedAt": "2026-01-02T03:04:05.000Z",
            "durationMs": 1000, "summary": {}, "error": None, "environment": env,
            "cases": [{"id": i, "title": f"case {i}", "outcome": o, "reason": "not claimed by the profile: replay"
                       if o == "skip" else None, "findings": [{"message": f"{i} went wrong"}] if o == "fail" else [],
                       "figures": {"lag": {"value": 10.0, "unit": "ms", "floor": 1.0}}} for i, o in outcomes.items()]}


def write(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(data))
    return directory


def test_matrix_from_report_dirs(tmp_path, capsys):
    a = write(tmp_path / "runs" / "alpha", report("http://a", {"1.1": "pass", "12.7": "skip", "12.10": "fail"},
                                                  version="2.3"))
    b = write(tmp_path / "runs" / "b", report("http://b", {"1.1": "fail", "12.10": "info"}))
    out = tmp_path / "m"
    assert cli_main(["matrix", str(a), f"beta={b}", "--report-dir", str(out)]) == 0
    assert [(s["name"], s["version"], s["versionFrom"]) for s in load_matrix(out)["servers"]] == \
        [("alpha", "2.3", "healthz"), ("beta", "contract", "profile")]
    assert cli_main(["matrix", str(a), f"beta={b}", "--server-version", "beta=beta-lib 9.1", "--report-dir",
                     str(out)]) == 0
    matrix = load_matrix(out)
    assert matrix["servers"][1]["version"] == "beta-lib 9.1" and matrix["servers"][1]["versionFrom"] == "given"
    cells = {c["id"]: c["cells"] for c in matrix["cases"]}
    assert [c["id"] for c in matrix["cases"]] == ["1.1", "12.7", "12.10"]  # natural order, every server's cases
    assert cells["12.7"]["alpha"]["firstFinding"] == "not claimed by the profile: replay"
    assert cells["12.7"]["beta"]["outcome"] == "absent"  # not in beta's report
    assert cells["12.10"]["alpha"] == {**cells["12.10"]["alpha"], "outcome": "fail", "firstFinding": "12.10 went wrong",
                                       "link": "../runs/alpha/report.html#c12.10"}
    assert matrix["subtotals"]["12"]["alpha"]["skip"] == 1 and matrix["totals"]["beta"]["absent"] == 1
    page = (out / "matrix.html").read_text()
    assert 'title="fail: 12.10 went wrong"' in page and 'href="../runs/alpha/report.html#c12.10"' in page
    assert "http" not in page.replace("http://a", "").replace("http://b", "")  # offline: nothing fetched
    # Not a report dir, and two columns of one name: exit 2, nothing written.
    assert cli_main(["matrix", str(tmp_path / "nowhere"), "--report-dir", str(tmp_path / "x")]) == 2
    assert cli_main(["matrix", str(a), f"alpha={b}", "--report-dir", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert "two servers are named 'alpha'" in capsys.readouterr().out


def test_markdown_has_family_subtotals():
    matrix = build_matrix([("a", report("http://a", {"1.1": "pass", "1.2": "fail", "12.1": "skip"}), "a/report.html")])
    md = matrix_markdown(matrix)
    assert "| **1** | *family 1* | *1 pass · 1 fail* |" in md and "| **12** | *family 12* | *1 skip* |" in md
    assert "| **all** | | **1 pass · 1 fail · 1 skip** |" in md


def test_diff_of_two_matrices(tmp_path, capsys):
    """Per server, what changed: a regression on one, a fix on another, a server added; the exit
    code says a server regressed. A matrix against a report is refused (exit 2)."""
    old_a = report("http://a", {"1.1": "pass", "12.1": "fail"})
    old_b = report("http://b", {"1.1": "pass", "12.1": "pass"})
    new_a, new_b = copy.deepcopy(old_a), copy.deepcopy(old_b)
    new_a["cases"][1].update(outcome="pass", findings=[])  # a fixed 12.1
    new_b["cases"][0].update(outcome="fail", findings=[{"message": "healthz is gone"}])  # b's 1.1 regressed
    new_b["cases"][1]["figures"]["lag"]["value"] = 50.0
    runs = tmp_path / "runs"
    for label, a, b, extra in (("old", old_a, old_b, []), ("new", new_a, new_b, [f"c={write(runs / 'c', old_b)}"])):
        assert cli_main(["matrix", f"a={write(runs / label / 'a', a)}", f"b={write(runs / label / 'b', b)}", *extra,
                         "--report-dir", str(tmp_path / label)]) == 0
    capsys.readouterr()
    assert cli_main(["diff", str(tmp_path / "old"), str(tmp_path / "new" / "matrix.json"), "--format", "md"]) == 1
    md = capsys.readouterr().out
    a_part, b_part = md.split("## a\n")[1].split("## b\n")
    assert "New servers: c." in md
    assert "| 12.1 | ✅ fixed | fail | pass |" in a_part and "regression" not in a_part.split("**")[2]
    assert "| 1.1 | ❌ regression | pass | fail |" in b_part and "healthz is gone" in b_part
    assert "| 12.1 | lag | 10 ms | 50 ms |" in b_part
    assert cli_main(["diff", str(tmp_path / "old"), str(tmp_path / "old")]) == 0
    assert cli_main(["diff", str(tmp_path / "old"), str(runs / "old" / "a")]) == 2


def test_profile_entries_name_their_column_and_server(tmp_path):
    """`reference` and a profile without [target].base_url run on the embedded reference server;
    one with it names its server; profile.toml is named by its directory; a name that cannot be a
    directory is refused."""
    named = tmp_path / "mine.toml"
    named.write_text('[target]\nbase_url = "http://127.0.0.1:9"\n')
    unnamed = tmp_path / "lib" / "profile.toml"
    unnamed.parent.mkdir()
    unnamed.write_text('[paths]\ncreate = "/api/jobs"\n')
    assert (parse_entry("reference").name, parse_entry("reference").embedded) == ("reference", True)
    assert (parse_entry(str(named)).name, parse_entry(str(named)).embedded) == ("mine", False)
    assert (parse_entry(str(unnamed)).name, parse_entry(str(unnamed)).embedded) == ("lib", True)
    assert parse_entry(f"x-1={named}").name == "x-1"
    with pytest.raises(ProfileError, match="cannot name a column"):
        parse_entry(f"../up={named}")
