"""Restarting a target for the restart family (11): the embedded server's own restart, or a
profile's shell command. Either way the harness learns only "it is back" (healthz answers)."""

from __future__ import annotations

import subprocess
import tempfile
from typing import Any, Awaitable, Callable

import httpx
import trio

from ._errors import HarnessError, TargetFault
from ._profile import Profile

__all__ = ["Restart", "restart_for"]

# restart("KILL" | "TERM"): stop the target with that signal and bring it back on the same address
# and data. Returns once it answers healthz. Raises TargetFault when the target did not come back
# (its fault) and HarnessError when the harness could not do the restart (ours).
Restart = Callable[[str], Awaitable[None]]


async def _kill_now(process: trio.Process) -> None:
    process.kill()


async def wait_until_healthy(profile: Profile, deadline: float) -> float:
    """Poll healthz until it answers 200 (seconds waited) or the deadline passes (TargetFault)."""
    started = trio.current_time()
    last: Any = None
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as http:
        while trio.current_time() < deadline:
            try:
                reply = await http.get(profile.url("healthz"), headers=profile.headers())
                if reply.status_code == 200:
                    return trio.current_time() - started
                last = f"HTTP {reply.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await trio.sleep(0.05)
    raise TargetFault(f"the target did not answer healthz after its restart (last: {last})")


def _shell(profile: Profile) -> Restart:
    async def restart(how: str) -> None:
        deadline = trio.current_time() + profile.restart_timeout
        command = profile.restart_command.replace("{signal}", how)
        # The command may leave the server in the background, holding whatever output it was
        # given: a file, so that nothing waits for the server to close a pipe.
        with tempfile.TemporaryFile() as errors:
            with trio.move_on_at(deadline) as scope:
                result = await trio.run_process(["sh", "-c", command], stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=errors, check=False,
                                                deliver_cancel=_kill_now)
            errors.seek(0)
            tail = errors.read()[-600:].decode(errors="replace").strip()
        if scope.cancelled_caught:
            raise HarnessError(f"the restart command did not return within {profile.restart_timeout:g} s: {command}")
        if result.returncode != 0:
            raise HarnessError(f"the restart command exited with {result.returncode}: {tail or command}")
        await wait_until_healthy(profile, deadline)

    return restart


def _embedded(profile: Profile, server: Any) -> Restart:
    from ._server_process import ServerStartError

    async def restart(how: str) -> None:
        deadline = trio.current_time() + profile.restart_timeout
        with trio.move_on_at(deadline) as scope:
            try:
                await server.restart(how)
            except ServerStartError as exc:
                raise TargetFault(str(exc)) from None
        if scope.cancelled_caught:
            raise TargetFault(f"the reference server did not come back within {profile.restart_timeout:g} s")
        await wait_until_healthy(profile, deadline)

    return restart


def restart_for(profile: Profile, server: Any = None) -> Restart | None:
    """How to restart this target: the embedded ``server`` (a ServerProcess), else the profile's
    command; None when neither can."""
    if server is not None:
        return _embedded(profile, server)
    if profile.restart_command:
        return _shell(profile)
    return None
