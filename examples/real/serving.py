"""Serve the real examples (examples/real/NAME/) on 127.0.0.1 as their expected.toml [server] says,
each stopped by its pid: shared by tests/test_real_servers.py and docs/make_real_servers_matrix.py.

    import sys; sys.path.insert(0, "examples/real"); import serving
    with serving.redis_server(tmp_dir) as redis_url, serving.example("flask-sse", redis_url) as server:
        ... server.base_url ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Iterator

REAL = Path(__file__).resolve().parent
NAMES = sorted(p.name for p in REAL.iterdir() if (p / "expected.toml").is_file())
BIN = Path(sys.executable).parent

__all__ = ["BIN", "NAMES", "REAL", "Served", "example", "expected", "free_port", "needs_redis", "redis_server",
           "serve", "start_example"]


def expected(name: str) -> dict:
    return tomllib.loads((REAL / name / "expected.toml").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Served:
    """A process we started, on 127.0.0.1:port; stopped by its pid."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def serve(argv: list[str], *, cwd: Path, port: int, env: dict[str, str] | None = None, timeout: float = 20.0) -> Served:
    """Start argv and wait until it accepts on the port (or exits, or the timeout passes)."""
    log = Path(tempfile.mkstemp(prefix="sse-real-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})})
    served = Served(process, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {process.returncode}:\n{served.output()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return served
        except OSError:
            time.sleep(0.1)
    served.stop()
    raise RuntimeError(f"{argv} did not accept on port {port} within {timeout:g} s:\n{served.output()}")


def needs_redis(name: str) -> bool:
    return any("{redis_url}" in v for v in expected(name)["server"].get("env", {}).values())


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Debian's redis-server on a free loopback port, its own config and directory, nothing saved;
    yields its URL. RuntimeError when it is not installed."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server): Flask-SSE needs a Redis")
    port = free_port()
    config = Path(workdir) / "redis.conf"
    config.write_text(f'bind 127.0.0.1\nport {port}\ndir {workdir}\nsave ""\nappendonly no\ndaemonize no\n'
                      f"protected-mode yes\nlogfile \"\"\n")
    server = serve([exe, str(config)], cwd=Path(workdir), port=port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()


def start_example(name: str, redis_url: str | None = None) -> Served:
    """The example app NAME, served as its expected.toml [server] says, on a free port.
    {python}: this interpreter, {bin}: its scripts, {port}, {redis_url} (when the recipe needs one)."""
    recipe = expected(name)["server"]
    values = {"python": sys.executable, "bin": str(BIN), "port": str(free_port())}
    if redis_url is not None:
        values["redis_url"] = redis_url

    def fill(text: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], text)

    return serve([fill(a) for a in recipe["command"]], cwd=REAL / name, port=int(values["port"]),
                 env={k: fill(v) for k, v in recipe.get("env", {}).items()})


@contextlib.contextmanager
def example(name: str, redis_url: str | None = None) -> Iterator[Served]:
    server = start_example(name, redis_url)
    try:
        yield server
    finally:
        server.stop()
