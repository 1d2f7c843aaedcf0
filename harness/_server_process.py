"""Start a server under test as a separate process (the judge never imports the judged)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
from functools import partial
from typing import AsyncIterator, Awaitable, Callable, Sequence

import trio

from ._errors import HarnessError
from ._tasks import background_nursery

__all__ = ["ServerProcess", "reference_server_args", "server_process"]

# What the reference server imports beyond the core install: the extra sse-harness[server].
SERVER_EXTRA_MODULES = ("quart", "quart_trio", "hypercorn", "ffmpeg", "imageio_ffmpeg")


class ServerStartError(HarnessError):
    """The server process did not come up: the message carries its output."""


def missing_server_modules() -> list[str]:
    """The modules of the extra sse-harness[server] that this Python cannot import."""
    return [name for name in SERVER_EXTRA_MODULES if importlib.util.find_spec(name) is None]


class ServerProcess:
    def __init__(self, process: trio.Process, base_url: str, output: list[str]) -> None:
        self.process = process
        self.base_url = base_url
        self.output = output  # its lines, bounded
        self._restart: Callable[[str], Awaitable[None]] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def restart(self, how: str) -> None:
        """Stop the server with SIGKILL (``how="KILL"``) or SIGTERM (``"TERM"``), wait for it to
        exit, and start it again with the same arguments, on the same port (and data folder)."""
        if self._restart is None:
            raise HarnessError("this server process cannot be restarted")
        await self._restart(how)


def reference_server_args(data_dir: str, *, keepalive: float = 1.0, time_scale: float = 0.25,
                          max_concurrent_jobs: int = 12, diagnostics: bool = True, extra: Sequence[str] = ()) -> list[str]:
    """The command line of the embedded reference server. Raises ServerStartError, naming the
    extra, when this install has not got its packages (a core install gates a target of its own)."""
    missing = missing_server_modules()
    if missing:
        raise ServerStartError(f"the embedded reference server needs sse-harness[server] (not installed here: "
                               f"{', '.join(missing)}): pip install 'sse-harness[server]', or name the server "
                               f"under test with --target URL (or a profile's [target].base_url)")
    args = [sys.executable, "-m", "reference_server", "--port", "0", "--data-dir", data_dir,
            "--keepalive", str(keepalive), "--time-scale", str(time_scale),
            "--max-concurrent-jobs", str(max_concurrent_jobs), "--retry-ms", "200"]
    if diagnostics:
        args.append("--diagnostics")
    return [*args, *extra]


async def _kill_now(process: trio.Process) -> None:
    process.kill()


@contextlib.asynccontextmanager
async def server_process(args: Sequence[str] | None = None, *, start_timeout: float = 20.0,
                         env: dict[str, str] | None = None) -> AsyncIterator[ServerProcess]:
    """Run ``args`` (default: the reference server on a free port) until the block ends.

    The process must print ``listening on http://HOST:PORT`` on stdout. It is stopped by
    its own pid: SIGTERM, then SIGKILL after 5 s.
    """
    with tempfile.TemporaryDirectory(prefix="sse-harness-") as data_dir:
        if args is None:
            args = reference_server_args(data_dir)
        args = list(args)
        output: list[str] = []
        async with background_nursery() as nursery:  # the block's own exception leaves as itself

            async def launch(argv: list[str]) -> tuple[trio.Process, str]:
                process: trio.Process = await nursery.start(partial(
                    trio.run_process, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, check=False, deliver_cancel=_kill_now,
                    env={**os.environ, **(env or {})}))
                got_url = trio.Event()
                found: list[str] = []

                async def read_output() -> None:
                    pending = b""
                    async for chunk in process.stdout:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for raw in lines:
                            line = raw.decode(errors="replace")
                            output.append(line)
                            del output[:-500]
                            if line.startswith("listening on http://") and not found:
                                found.append(line.split(" ", 2)[2].strip())
                                got_url.set()
                    got_url.set()  # exited before listening: wake the waiter

                nursery.start_soon(read_output)
                with trio.move_on_after(start_timeout):
                    await got_url.wait()
                if not found:
                    process.kill()
                    raise ServerStartError(f"server did not start ({' '.join(argv[:4])}...):\n" + "\n".join(output[-30:]))
                return process, found[0].rstrip("/")

            async def stop(process: trio.Process, how: int, wait: float) -> None:
                if process.returncode is None:
                    process.send_signal(how)
                    with trio.move_on_after(wait):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()

            process, base_url = await launch(args)
            server = ServerProcess(process, base_url, output)

            async def restart(how: str) -> None:
                signum = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}[how]
                with trio.CancelScope(shield=True):
                    await stop(server.process, signum, 10)
                port = server.base_url.rsplit(":", 1)[1]
                again = list(args)
                if "--port" in again:  # the same port as before (it was perhaps 0: "any")
                    again[again.index("--port") + 1] = port
                server.process, url = await launch(again)
                if url != server.base_url:
                    raise ServerStartError(f"the restarted server listens on {url}, not {server.base_url}")

            server._restart = restart
            try:
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await stop(server.process, signal.SIGTERM, 5)
