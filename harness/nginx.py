"""A real reverse proxy in front of the target: Debian's nginx, started on loopback with the
defaults a deployment gets when it writes nothing but ``proxy_pass`` (family 13).

"Default" here is the most common deployment: Debian's ``/etc/nginx/nginx.conf`` with a site
whose ``location /`` holds one line, ``proxy_pass http://app;``. Every ``proxy_*`` directive
keeps nginx's compiled-in default: ``proxy_buffering on``, ``proxy_http_version 1.0`` to the
upstream, ``proxy_buffer_size``/``proxy_buffers`` one memory page (4 KiB here), ``proxy_read_timeout
60s``, X-Accel-* answer headers honoured and hidden. Debian's own http-level lines that reach a
proxied answer are kept (sendfile, tcp_nopush, gzip on: its gzip_types is text/html only). Only
the process's plumbing is ours: the config file, prefix, pid file, logs and temp paths live in
a temp dir, it listens on 127.0.0.1 on a free port, runs in the foreground (``daemon off``: the
master is our child, stopped by its pid) with one worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import trio

from ._errors import HarnessError

__all__ = ["NginxError", "NginxProxy", "find_nginx", "render_config", "running_nginx", "upstream_origin"]

# Where Debian puts it (root's PATH has /usr/sbin; a user's often has not).
_PLACES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
# The temp paths nginx would otherwise create under its compiled-in /var/lib/nginx.
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxError(HarnessError):
    """nginx could not be started or stopped as the harness needs: the harness's own trouble."""


def find_nginx() -> str | None:
    """The nginx binary (SSE_HARNESS_NGINX, PATH, then Debian's place), or None."""
    named = os.environ.get("SSE_HARNESS_NGINX")
    if named:
        return named if os.access(named, os.X_OK) else None
    found = shutil.which("nginx")
    if found:
        return found
    return next((p for p in _PLACES if os.access(p, os.X_OK)), None)


def upstream_origin(base_url: str) -> str:
    """``scheme://host:port`` of the target, what ``proxy_pass`` names (no path: nginx then
    passes each request's URI unchanged)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NginxError(f"cannot proxy to {base_url!r}: not an http(s) URL with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def render_config(*, workdir: str, port: int, upstream: str, run_as_root: bool = False) -> str:
    """The nginx.conf: nginx's defaults around one ``proxy_pass``, plumbing under ``workdir``.
    (Pure: tests read it.)"""
    work = workdir.rstrip("/")
    temps = "\n".join(f"    {name}_temp_path {work}/{name}_temp;" for name in _TEMP_PATHS)
    # As root the workers drop to an unprivileged user; nginx's own default is nobody (Debian's
    # nginx.conf says www-data): say nobody, so that it never depends on www-data existing.
    user = "user nobody nogroup;\n" if run_as_root else ""
    return f"""# sse-harness 13.1: Debian's nginx, default proxy settings (rendered by harness.nginx)
{user}daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log notice;

events {{
    worker_connections 256;
}}

http {{
    # From Debian's /etc/nginx/nginx.conf (the lines that can reach a proxied answer).
    sendfile on;
    tcp_nopush on;
    gzip on;
    default_type application/octet-stream;
    access_log {work}/access.log;
{temps}

    server {{
        listen 127.0.0.1:{port};
        # The whole site: one proxy_pass and every proxy_* directive at nginx's default
        # (proxy_buffering on, proxy_http_version 1.0, buffers of one memory page).
        location / {{
            proxy_pass {upstream};
        }}
    }}
}}
"""


@dataclasses.dataclass
class NginxProxy:
    """A running nginx: where it listens and what it logs."""

    port: int
    upstream: str
    workdir: str
    pid: int  # the master's
    config: str
    workers: tuple[int, ...] = ()
    left_over: tuple[int, ...] = ()  # workers still alive after the master stopped (killed by pid)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def via(self, url: str) -> str:
        """``url`` (on the upstream's origin) as requested through nginx."""
        if upstream_origin(url) != self.upstream:
            raise NginxError(f"the stream {url} is not on the proxied origin {self.upstream}")
        parts = urlsplit(url)
        return self.base_url + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def error_log(self, limit: int = 4000) -> str:
        """The end of nginx's error log (bounded)."""
        try:
            text = Path(self.workdir, "error.log").read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> tuple[int, ...]:
    """The processes whose parent is ``pid`` (nginx's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return tuple(sorted(found))


def _alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


async def _wait_listening(port: int, process: trio.Process, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        while process.returncode is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            return True
    return False


async def _stop(process: trio.Process, proxy: NginxProxy) -> None:
    """SIGTERM (nginx's fast shutdown) to the master by its pid, SIGKILL after 5 s; then every
    worker seen while it ran must be gone (a survivor is killed by its pid and named)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    left = []
    with trio.move_on_after(2):
        while True:
            left = [pid for pid in proxy.workers if _alive(pid)]
            if not left:
                break
            await trio.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proxy.left_over = tuple(left)


@contextlib.asynccontextmanager
async def running_nginx(upstream: str, *, binary: str, start_timeout: float = 5.0,
                        tries: int = 3) -> AsyncIterator[NginxProxy]:
    """nginx proxying to ``upstream`` (``scheme://host:port``) until the block ends; stopped by
    its master's pid, its workers checked gone (``proxy.left_over`` names any that were not).
    A start that fails raises NginxError with the error log's end."""
    with tempfile.TemporaryDirectory(prefix="sse-harness-nginx-") as workdir:
        os.chmod(workdir, 0o755)  # the workers (nobody, when we are root) write temp files below it
        root = os.geteuid() == 0
        failure = ""
        for _ in range(max(1, tries)):
            port = _free_port()
            config = render_config(workdir=workdir, port=port, upstream=upstream, run_as_root=root)
            conf_path = Path(workdir, "nginx.conf")
            conf_path.write_text(config)
            Path(workdir, "error.log").write_text("")
            argv = [binary, "-p", workdir + "/", "-c", str(conf_path), "-e", f"{workdir}/error.log"]
            stderr = os.open(Path(workdir, "stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                process = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL,
                                                           stdout=subprocess.DEVNULL, stderr=stderr)
            finally:
                os.close(stderr)
            proxy = NginxProxy(port, upstream, workdir, process.pid, config)
            try:
                listening = await _wait_listening(port, process, start_timeout)
                if listening:
                    pid_file = Path(workdir, "nginx.pid")
                    with trio.move_on_after(start_timeout):
                        while not pid_file.exists() or not pid_file.read_text().strip():
                            await trio.sleep(0.02)
                    written = pid_file.read_text().strip() if pid_file.exists() else ""
                    if written != str(process.pid):
                        raise NginxError(f"nginx's pid file says {written or 'nothing'}, its master is {process.pid}")
                    with trio.move_on_after(start_timeout):
                        while not proxy.workers:
                            proxy.workers = _children(process.pid)
                            if not proxy.workers:
                                await trio.sleep(0.02)
                    if not proxy.workers:
                        raise NginxError(f"nginx's master {process.pid} started no worker within {start_timeout:g}s")
                    try:
                        yield proxy
                    finally:
                        # What the block started may still be reading through nginx: stop regardless.
                        proxy.workers = tuple(sorted(set(proxy.workers) | set(_children(process.pid))))
                    return
                failure = proxy.error_log() + Path(workdir, "stderr.log").read_text(errors="replace")[-2000:]
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process, proxy)
            if "Address already in use" not in failure:
                break  # only a lost race for the port is worth another try
        raise NginxError(f"nginx ({binary}) did not start listening on 127.0.0.1 within {start_timeout:g}s: "
                         f"{failure.strip()[-1500:] or 'no error logged'}")
