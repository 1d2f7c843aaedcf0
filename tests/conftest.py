"""Fixtures: real servers as separate processes on ephemeral 127.0.0.1 ports, stopped by pid."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
# examples/real/serving.py serves the real examples as their expected.toml says: `import serving`.
sys.path.insert(0, str(ROOT / "examples" / "real"))

# What every contract server earns on plain HTTP/1.1, by design of the contract itself: the
# browser's six-connection limit (10.5) and the event type named `error` (10.6) are client
# hazards, non-strict with their advice. Family 11 needs a target the harness can restart.
CONTRACT_HAZARDS = {"10.5", "10.6"}


def acceptable(result, also_non_strict=frozenset()) -> bool:
    """A correct server's result: pass, a documented hazard, 11.x skipped for want of a restart,
    or a case whose needs the contract profile does not claim (family 14: a contract job's
    stream is family 10's), skipped saying so."""
    if result.outcome == "pass":
        return True
    if result.outcome == "non-strict":
        return result.id in CONTRACT_HAZARDS or result.id in also_non_strict
    if result.outcome == "skip" and result.reason.startswith("not claimed by the profile:"):
        return True
    if result.outcome == "skip" and result.id == "10.5" and "connection limit was never reached" in result.reason:
        return True  # the machine could not open six streams before the jobs ended: no verdict either way
    return result.outcome == "skip" and result.id.startswith("11.") and "restart" in result.reason


class RunningServer:
    def __init__(self, args: list[str], *, timeout: float = 30.0) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="sse-test-")
        args = [a.replace("{data_dir}", self.data_dir) for a in args]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                                        stdin=subprocess.DEVNULL)
        self.output: list[str] = []
        deadline = time.monotonic() + timeout
        self.base_url = None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode(errors="replace")
            if not line:
                break
            self.output.append(line)
            if line.startswith("listening on http://"):
                self.base_url = line.split(" ", 2)[2].strip()
                break
        if self.base_url is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.output))
        # Keep draining its output (into a file: tests may read it) so that a chatty server
        # never blocks on a full pipe.
        self._log = tempfile.NamedTemporaryFile(prefix="sse-test-", suffix=".log", delete=False)
        self._drain = subprocess.Popen(["cat"], stdin=self.process.stdout, stdout=self._log)

    def output_so_far(self) -> str:
        self._log.flush()
        return "".join(self.output) + Path(self._log.name).read_text(errors="replace")

    def output_after_exit(self) -> str:
        """Everything the server printed; call once it has exited."""
        self._drain.wait(5)
        self._log.flush()
        return "".join(self.output) + Path(self._log.name).read_text(errors="replace")

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_drain", None) is not None:
            self._drain.wait(5)
            self._log.close()
            os.unlink(self._log.name)
        subprocess.run(["rm", "-rf", self.data_dir], check=False)


@contextlib.contextmanager
def example_server(name: str) -> Iterator[RunningServer]:
    """examples/NAME/app.py (the stream-profile examples) on a free 127.0.0.1 port, stopped by
    its pid on leaving. The real servers of examples/real/ are served by examples/real/serving.py."""
    server = RunningServer([sys.executable, str(ROOT / "examples" / name / "app.py"), "0"])
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def variant_server(fault: str, *extra: str) -> Iterator[RunningServer]:
    """tests/variants/server.py with ``fault`` (its keep-alive 1 s, retry 200 ms), stopped by its
    pid on leaving; ``extra``: more of its options."""
    server = RunningServer([sys.executable, str(ROOT / "tests" / "variants" / "server.py"), fault, "--port", "0",
                            "--data-dir", "{data_dir}", "--keepalive", "1", "--retry-ms", "200", *extra])
    try:
        yield server
    finally:
        server.stop()


def job_stream_profile(job: str) -> str:
    """The reference server's job stream described as a stream profile (TOML): a set-up request
    creates the job (``job``: its JSON body, an inline TOML table), its id is captured into the
    stream's path; no timestamp mapped."""
    return f"""
[[setup]]
method = "POST"
path = "/api/jobs"
json = {job}
capture = {{ id = "json:/jobId" }}
[stream]
path = "/api/jobs/{{id}}/events"
[meaning]
end_types = ["job-completed", "job-failed", "job-cancelled"]
[claims]
ids = true
replay = true
keepalive_seconds = 1
retry_ms = 200
finished = "204"
"""


async def start_in_process(nursery, config) -> tuple[str, "trio.Event"]:
    """The reference server in this process (its internals patchable), started in ``nursery``:
    its base URL, and the event that stops it."""
    import trio

    from reference_server._app import serve

    stop = trio.Event()
    binds = await nursery.start(lambda task_status: serve(config, task_status=task_status, shutdown_trigger=stop.wait))
    return binds[0], stop


def reference_args(*extra: str, keepalive: float = 1.0, max_jobs: int = 12) -> list[str]:
    return [sys.executable, "-m", "reference_server", "--port", "0", "--data-dir", "{data_dir}",
            "--keepalive", str(keepalive), "--time-scale", "0.25", "--max-concurrent-jobs", str(max_jobs),
            "--retry-ms", "200", "--diagnostics", *extra]


@pytest.fixture(scope="session")
def reference_server():
    server = RunningServer(reference_args())
    yield server
    server.stop()


@pytest.fixture
def fresh_server():
    started: list[RunningServer] = []

    def start(args: list[str]) -> RunningServer:
        server = RunningServer(args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class LoopbackServer:
    """A few lines of HTTP on 127.0.0.1 in the test's own trio loop: ``answer(stream, request)``
    writes whatever the case needs (or nothing at all); every connection ends within ``hold``."""

    def __init__(self, nursery, answer, *, hold: float = 90.0) -> None:
        self.nursery, self.answer, self.hold = nursery, answer, hold
        self.requests: list[bytes] = []

    async def start(self) -> str:
        listeners = await self.nursery.start(functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1"))
        return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"

    async def _serve(self, stream) -> None:
        with trio.move_on_after(self.hold):
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            request, _, rest = head.partition(b"\r\n\r\n")
            self.requests.append(request)
            length = next((int(line.split(b":", 1)[1]) for line in request.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(rest) < length:
                rest += await stream.receive_some(4096)
            try:
                await self.answer(stream, request)
            except trio.BrokenResourceError:
                pass  # the reader left
        with trio.move_on_after(1):
            await stream.aclose()
