"""Family 11 against restart-recovery faults: each broken variant is caught by exactly the restart
cases aimed at it (the other restart cases pass). The variant server is restarted by a shell
command in its profile, as a user's server would be (a pid file, the same port and data). The
correct server passing the family is tests/test_restart.py (the embedded reference server)."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT
from harness import load_profile
from harness._restart import restart_for
from harness._runner import run_suite

# fault -> the family-11 cases that must fail (and no other family-11 case may)
DETECTION = {
    "restart-loses-history": {"11.4"},
    "restart-ids-from-1": {"11.1", "11.2"},  # the stream and the snapshot both show the new numbering
    "restart-left-running": {"11.1", "11.2"},
    "restart-leaves-folder": {"11.3"},
}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


class RestartableVariant:
    """The variant server started in the background by a shell, tracked by a pid file: the
    profile's restart command kills it with the harness's signal and starts it again."""

    def __init__(self, fault: str) -> None:
        self.state = tempfile.mkdtemp(prefix="sse-restart-")
        self.data_dir = os.path.join(self.state, "data")
        self.fault = fault
        try:
            self._launch("0")
            deadline = time.monotonic() + 30
            self.base_url = None
            while self.base_url is None and time.monotonic() < deadline:
                for line in self.log().splitlines():
                    if line.startswith("listening on http://"):
                        self.base_url = line.split(" ", 2)[2].strip()
                time.sleep(0.05)
            if self.base_url is None:
                raise RuntimeError("variant did not start:\n" + self.log())
        except BaseException:
            self.stop()
            raise
        self.port = self.base_url.rsplit(":", 1)[1]

    def _server(self, port: str) -> str:
        args = [sys.executable, str(ROOT / "tests" / "variants" / "server.py"), self.fault, "--port", port,
                "--data-dir", self.data_dir, "--keepalive", "1", "--time-scale", "0.25", "--max-concurrent-jobs",
                "12", "--retry-ms", "200", "--diagnostics"]
        return (f"cd {ROOT} && setsid {' '.join(args)} </dev/null >>{self.state}/log 2>&1 & "
                f"echo $! > {self.state}/pid")

    def _launch(self, port: str) -> None:
        subprocess.run(["sh", "-c", self._server(port)], check=True, timeout=10)

    def restart_command(self) -> str:
        # Stop the pid in the file with the harness's signal, wait until it is gone (or a zombie:
        # dead, its reaping is its parent's), start the same server on the same port and data.
        return (f"pid=$(cat {self.state}/pid); kill -s {{signal}} $pid; i=0; "
                f"while [ -r /proc/$pid/stat ] && [ \"$(cut -d' ' -f3 /proc/$pid/stat)\" != Z ] && [ $i -lt 200 ]; "
                f"do sleep 0.05; i=$((i+1)); done; {self._server(self.port)}")

    def stop(self) -> None:
        try:
            pid = int(Path(self.state, "pid").read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None and _state(pid) not in ("gone", "Z"):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _state(pid) not in ("gone", "Z") and time.monotonic() < deadline:
                time.sleep(0.05)
            if _state(pid) not in ("gone", "Z"):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", self.state], check=False)

    def log(self) -> str:
        try:
            return Path(self.state, "log").read_text(errors="replace")
        except FileNotFoundError:  # the shell has not opened it yet
            return ""


async def _family_11(fault: str):
    server = RestartableVariant(fault)
    try:
        profile = load_profile(base_url=server.base_url)
        profile = profile.__class__(**{**profile.__dict__, "restart_command": server.restart_command(),
                                       "restart_timeout": 30.0})
        report = await run_suite(profile, only=["11"], restart=restart_for(profile))
        return report, server.log()
    finally:
        server.stop()


@pytest.mark.parametrize("fault", sorted(DETECTION))
async def test_restart_fault_is_caught_by_exactly_its_cases(fault):
    report, log = await _family_11(fault)
    got = {r.id: r.outcome for r in report.results}
    assert set(got) == {"11.1", "11.2", "11.3", "11.4", "11.5"}
    errors = {r.id: r.reason for r in report.results if r.outcome == "error"}
    assert not errors, f"{fault}: the harness erred instead of judging: {errors}\n{log[-2000:]}"
    failed = {case for case, outcome in got.items() if outcome == "fail"}
    details = {r.id: (r.outcome, [f"{f.message} ({f.observed!r:.80})" for f in r.findings][:2]) for r in report.results}
    assert failed == DETECTION[fault], f"{fault}: failing {sorted(failed)}: {details}"
