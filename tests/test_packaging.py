"""The package as a user gets it: the wheel built from this tree, installed (not editable) with the
core only into a fresh venv, run from another directory. The core is what a CI gate needs; the
reference server, the browser family and load are extras that it names when they are missing.

Heavy, one worker at a time: the wheel, a venv, the core's packages from the registry through
pip's cache. Measured: 21 s in all with the cache warm (wheel 4.6 s, venv 5.4 s); 118 s at a load
average of 45 (wheel 40 s, venv 36 s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, RunningServer, reference_args

# Its own group: mostly pip and venv I/O, it overlaps the heavy whole-suite runs on the other worker.
pytestmark = pytest.mark.xdist_group("packaging")

PACKAGES = ("harness", "scenarios", "reference_server")
# What the core must not bring: the extras' packages (import names).
EXTRAS_MODULES = ("quart", "quart_trio", "hypercorn", "ffmpeg", "imageio_ffmpeg", "playwright", "locust")
# Modules that are the extras' by design: the locust user and the pytest plugin (pytest loads it).
NEEDS_AN_EXTRA = {"harness.load", "harness._load_plan", "harness._locustfile", "harness.pytest_plugin"}


def _data_files() -> set[str]:
    """Every file under the packages that is not Python source: the wheel must carry each."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".py", ".pyc"):
                found.add(path.relative_to(ROOT).as_posix())
    return found


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """(the wheel, the build's output, the venv's bin folder, the figures in s)."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"  # a copy: the build's own folders (build/, *.egg-info) stay out of the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip"]
    # Without PYTHONDONTWRITEBYTECODE, which makes distutils warn that it does not byte-compile.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.monotonic()
    build = subprocess.run([*pip, "wheel", ".", "--no-deps", "-v", "-w", str(work / "dist")], cwd=source, env=env,
                           capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    built = time.monotonic()
    (wheel,) = (work / "dist").glob("sse_harness-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    # The repo's pip installs into the new venv: no pip of its own to bootstrap; the registry's
    # answers and wheels come through pip's cache.
    install = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    figures = {"build": built - started, "install": time.monotonic() - built}
    print(f"wheel built in {figures['build']:.1f} s, core venv in {figures['install']:.1f} s")
    return wheel, build.stdout + build.stderr, venv / "bin", figures


def _run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}  # rich wraps at the width: a reason stays on one line
    env.pop("SSE_HARNESS_BROWSER", None)
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_wheel_carries_every_data_file_and_builds_without_warnings(core):
    wheel, log, _, _ = core
    names = set(zipfile.ZipFile(wheel).namelist())
    data = _data_files()
    assert {"harness/contract.toml", "reference_server/static/index.html"} <= data
    assert not data - names, f"missing from the wheel: {sorted(data - names)}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    warnings = [line for line in log.splitlines() if "warning" in line.lower() and "is ignored" not in line]
    assert not warnings, "\n".join(warnings)


def test_the_core_install_has_no_extra_and_imports_everything_but_the_extras_own(core, tmp_path):
    _, _, bin_dir, _ = core
    script = f"""
import importlib, importlib.util, json, pkgutil
import harness, scenarios
absent = [m for m in {EXTRAS_MODULES!r} if importlib.util.find_spec(m) is None]
broken = {{}}
for package in (harness, scenarios):
    for info in pkgutil.iter_modules(package.__path__):
        name = package.__name__ + "." + info.name
        try:
            importlib.import_module(name)
        except ImportError as exc:
            broken[name] = repr(exc)
print(json.dumps({{"absent": absent, "broken": broken, "file": harness.__file__}}))
"""
    done = _run(bin_dir, "python", "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["absent"] == list(EXTRAS_MODULES), "the core install brings an extra's package"
    assert str(bin_dir.parent) in seen["file"], "not the installed wheel"
    assert set(seen["broken"]) == NEEDS_AN_EXTRA, seen["broken"]


def test_the_core_install_lists_runs_a_target_and_probes_from_another_directory(core, tmp_path):
    _, _, bin_dir, _ = core
    listing = _run(bin_dir, "sse-harness", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "3.6" in listing.stdout and "10.1" in listing.stdout and "14.1" in listing.stdout
    server = RunningServer(reference_args())  # from the repo's .venv: the reference server is an extra here
    try:
        # 3.5 is a timing verdict: on a busy machine it may be `error` (starvation), not the point here
        done = _run(bin_dir, "sse-harness", "run", "--target", server.base_url, "--only", "1", "--only", "3",
                    "--skip", "3.5", "--only", "10.1", "--report-dir", "report", "--format", "json", cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        results = {c["id"]: c for c in json.loads((tmp_path / "report" / "report.json").read_text())["cases"]}
        assert "10.1" in results and "3.1" in results and "1.1" in results
        assert results["10.1"]["outcome"] == "skip" and "sse-harness[browser]" in results["10.1"]["reason"]
        if shutil.which("ffmpeg"):  # the artifact check uses ffmpeg on PATH when imageio-ffmpeg is absent
            assert results["3.6"]["outcome"] == "pass", results["3.6"]
        else:
            assert results["3.6"]["outcome"] == "skip" and "sse-harness[server]" in results["3.6"]["reason"]
        others = {i: r["outcome"] for i, r in results.items() if i not in ("10.1", "3.6")}
        assert set(others.values()) == {"pass"}, others
        # probe writes a stream profile; family 14 on it skips naming the extra, as family 10 does
        job = _run(bin_dir, "python", "-c", "import httpx, sys; print(httpx.post(sys.argv[1] + '/api/jobs', json="
                   "{'topic': 'packaging', 'scenes': 2}).json()['jobId'])", server.base_url, cwd=tmp_path)
        assert job.returncode == 0, job.stderr
        probed = _run(bin_dir, "sse-harness", "probe", f"{server.base_url}/api/jobs/{job.stdout.strip()}/events",
                      "--seconds", "5", "--out", "stream.toml", cwd=tmp_path)
        assert probed.returncode == 0 and (tmp_path / "stream.toml").is_file(), probed.stdout + probed.stderr
        stream = _run(bin_dir, "sse-harness", "run", "--profile", "stream.toml", "--only", "14.1",
                      "--report-dir", "stream-report", "--format", "json", cwd=tmp_path)
        assert stream.returncode == 0, stream.stdout[-4000:] + stream.stderr[-4000:]
        (case,) = json.loads((tmp_path / "stream-report" / "report.json").read_text())["cases"]
        assert case["outcome"] == "skip" and "sse-harness[browser]" in case["reason"], case
    finally:
        server.stop()
    changes = _run(bin_dir, "sse-harness", "diff", "report", "report", cwd=tmp_path)
    assert changes.returncode == 0, changes.stdout + changes.stderr


def test_the_core_install_names_the_extra_for_the_embedded_server_and_for_load(core, tmp_path):
    _, _, bin_dir, _ = core
    run = _run(bin_dir, "sse-harness", "run", "--report-dir", "report", cwd=tmp_path, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "the embedded reference server needs sse-harness[server]" in run.stdout, run.stdout
    assert not (tmp_path / "report").exists()
    load = _run(bin_dir, "sse-harness", "load", "--run-time", "5s", cwd=tmp_path, timeout=60)
    assert load.returncode == 2, load.stdout + load.stderr
    assert "sse-harness load needs sse-harness[load]" in load.stdout, load.stdout


def test_with_the_server_extra_run_starts_the_embedded_reference_server(core, tmp_path):
    """Last in this file: it adds the [server] extra to the core venv the tests above judged."""
    wheel, _, bin_dir, _ = core
    started = time.monotonic()
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "-q",
                              f"{wheel}[server]"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    print(f"[server] added in {time.monotonic() - started:.1f} s")
    # 1.1 reads the embedded server's settings; 3.6 downloads the MP4 its ffmpeg rendered (the
    # extra's imageio-ffmpeg); the page is one of the wheel's data files.
    done = _run(bin_dir, "sse-harness", "run", "--only", "1.1", "--only", "3.6", "--report-dir", "report",
                "--format", "json", cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {c["id"]: c["outcome"] for c in report["cases"]} == {"1.1": "pass", "3.6": "pass"}, report["cases"]
    page = _run(bin_dir, "python", "-c", "import importlib.resources as r; "
                "print(r.files('reference_server').joinpath('static/index.html').read_text()[:200])", cwd=tmp_path)
    assert page.returncode == 0 and "<" in page.stdout, page.stdout + page.stderr
