"""Family 13: the stream through Debian's nginx with its default proxy settings. The config is
nginx's defaults around one proxy_pass (pure); nginx is started and stopped by its pid, no worker
left; the reference server (X-Accel-Buffering: no) passes, a variant without the header fails."""

import json
import os
import sys

import httpx
import pytest
import trio

from conftest import ROOT, LoopbackServer, RunningServer
from harness import Severity, Starvation, load_profile
from harness.nginx import NginxError, find_nginx, render_config, running_nginx, upstream_origin
from harness._runner import run_suite
from scenarios.reverse_proxy import PATTERN, SAME_EVENTS, TIMESTAMPS, check_held_back, held_back, worst_burst
from tracebuild import segment

NGINX = find_nginx()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")


# -- the config: nginx's defaults, our plumbing -----------------------------------------------
def test_the_config_is_one_proxy_pass_with_every_proxy_setting_at_its_default():
    text = render_config(workdir="/tmp/w/", port=8123, upstream="http://127.0.0.1:9000")
    directives = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "proxy_pass http://127.0.0.1:9000;" in directives
    assert [d for d in directives if d.startswith("proxy_") and not d.startswith("proxy_temp_path")] == \
        ["proxy_pass http://127.0.0.1:9000;"]  # buffering, HTTP version, buffers, timeouts: nginx's defaults
    assert "listen 127.0.0.1:8123;" in directives
    assert "pid /tmp/w/nginx.pid;" in directives and "error_log /tmp/w/error.log notice;" in directives
    assert "daemon off;" in directives  # the master is our child: stopped by its pid
    assert all("/var/" not in d and "/etc/" not in d for d in directives)  # nothing outside its temp dir
    assert not any(d.startswith("user ") for d in directives)
    as_root = render_config(workdir="/tmp/w", port=8123, upstream="http://h:1", run_as_root=True)
    assert "user nobody nogroup;" in as_root


def test_the_upstream_is_the_targets_origin():
    assert upstream_origin("http://127.0.0.1:8080/api/") == "http://127.0.0.1:8080"
    assert upstream_origin("https://example.test/x") == "https://example.test:443"
    assert upstream_origin("http://[::1]:81") == "http://[::1]:81"
    with pytest.raises(NginxError):
        upstream_origin("ftp://x")


# -- the judgement, over hand-built recordings --------------------------------------------------
def _events(n: int, spacing: float, first: float = 0.05) -> list[tuple[float, bytes]]:
    return [(first + i * spacing, f"id: {i + 1}\ndata: {{\"ts\": {(first + i * spacing) * 1000:.0f}}}\n\n".encode())
            for i in range(n)]


def _buffered(chunks, every: int) -> list[tuple[float, bytes]]:
    """What nginx's buffer makes of them: held until ``every`` events are in, then one read."""
    out = []
    for i in range(0, len(chunks), every):
        group = chunks[i:i + every]
        out.append((group[-1][0] + 0.001, b"".join(data for _, data in group)))
    return out


def _ts(event):
    return json.loads(event.data)["ts"]


@pytest.mark.parametrize("mode", [SAME_EVENTS, TIMESTAMPS, PATTERN])
def test_prompt_through_the_proxy_passes_and_a_buffered_stream_fails(mode):
    sent = _events(40, 0.1)
    direct = segment(sent)
    prompt = segment([(at + 0.002, data) for at, data in sent])
    held = held_back(direct, prompt, mode=mode, timestamp_ms=_ts, proxied_reached_end=True)
    assert len(held) == 40 and max(h.held for h in held) < 0.01
    assert check_held_back(held, limit=0.25, starvation=Starvation(), burst_text="") == []

    buffered = segment(_buffered(sent, 10))
    held = held_back(direct, buffered, mode=mode, timestamp_ms=_ts, proxied_reached_end=True)
    assert worst_burst(held) == (10, pytest.approx(0.901, abs=0.01))
    found = check_held_back(held, limit=0.25, starvation=Starvation(), burst_text="10 in one read")
    assert [f.severity for f in found] == [Severity.FAIL]
    assert "held back by nginx" in found[0].message and "10 in one read" in found[0].observed


def test_events_that_never_came_through_are_a_fail_with_how_long_they_were_held():
    sent = _events(20, 0.1)
    direct = segment(sent)
    stuck = segment(_buffered(sent[:10], 10), end="timeout", ended_at=7.0)  # the rest still in nginx's buffer
    held = held_back(direct, stuck, mode=PATTERN, timestamp_ms=_ts, proxied_reached_end=False)
    assert sum(h.missing for h in held) == 10
    found = check_held_back(held, limit=0.25, starvation=None, burst_text="")
    assert "10 event(s) that the direct reader got never came through nginx" in found[0].message
    assert "still held after 5.95s" in found[0].observed


def test_a_hold_that_our_own_stall_explains_is_confounded_not_the_targets_fail():
    sent = _events(20, 0.1)
    late = segment([(at + 0.4, data) for at, data in sent])  # every event 0.4 s late through the proxy ...
    held = held_back(segment(sent), late, mode=SAME_EVENTS, timestamp_ms=_ts, proxied_reached_end=True)
    stalled = Starvation(own=tuple((at + 0.4, 0.5) for at, _ in sent))  # ... while our loop stood still
    found = check_held_back(held, limit=0.25, starvation=stalled, burst_text="")
    assert [f.severity for f in found] == [Severity.CONFOUNDED]
    assert [f.severity for f in check_held_back(held, limit=0.25, starvation=Starvation(), burst_text="")] == \
        [Severity.FAIL]


# -- nginx itself: started, used, stopped by its pid ------------------------------------------
@needs_nginx
async def test_nginx_starts_proxies_and_stops_by_its_pid_with_no_worker_left(reference_server):
    async with running_nginx(upstream_origin(reference_server.base_url), binary=NGINX) as proxy:
        master, workers = proxy.pid, proxy.workers
        assert workers and master not in workers
        async with httpx.AsyncClient() as client:
            reply = await client.get(proxy.base_url + "/api/healthz")
        assert reply.status_code == 200 and reply.headers["server"].startswith("nginx")
    for pid in (master, *workers):
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert proxy.left_over == ()
    assert not os.path.exists(proxy.workdir)


@needs_nginx
async def test_nginx_that_cannot_start_is_the_harnesss_error_with_its_log():
    with pytest.raises(NginxError, match="host not found"):
        async with running_nginx("http://no-such-host.invalid:80", binary=NGINX):
            pass


# -- the case, against servers ----------------------------------------------------------------
@pytest.mark.xdist_group("busy")
@needs_nginx
async def test_the_reference_server_passes_through_default_nginx(reference_server):
    report = await run_suite(load_profile(base_url=reference_server.base_url), only=["13.1"], parallel=2)
    (result,) = report.results
    assert result.outcome == "pass", (result.reason, result.findings, result.evidence.get("heldMs"))
    assert result.evidence["xAccelBuffering"] == "no" and result.evidence["mode"] == TIMESTAMPS
    assert any("no worker left" in step for step in result.steps)


@pytest.mark.xdist_group("busy")
@needs_nginx
async def test_a_server_without_x_accel_buffering_fails_through_default_nginx():
    server = RunningServer([sys.executable, str(ROOT / "tests" / "variants" / "server.py"), "no-accel-header",
                            "--port", "0", "--data-dir", "{data_dir}", "--keepalive", "1", "--time-scale", "0.25",
                            "--max-concurrent-jobs", "12", "--retry-ms", "200", "--diagnostics"])
    try:
        report = await run_suite(load_profile(base_url=server.base_url), only=["1.2", "13.1"], parallel=2)
    finally:
        server.stop()
    got = {r.id: r for r in report.results}
    assert got["1.2"].outcome == "fail"
    assert any("X-Accel-Buffering" in f.message for f in got["1.2"].findings)
    proxied = got["13.1"]
    assert proxied.outcome == "fail", (proxied.reason, proxied.findings)
    text = " ".join(f"{f.message} {f.observed}" for f in proxied.findings)
    assert "buffered by nginx:" in text and "events arrived in one read after" in text
    assert "X-Accel-Buffering: no" in text  # what to do about it
    # The evidence shows both arrival patterns: one by one directly, in bursts through nginx.
    assert max(n for _, n in proxied.evidence["proxiedReads"]) > 2 * max(n for _, n in proxied.evidence["directReads"])


async def _never_a_head(stream, request: bytes) -> None:
    """Flask-SSE on a quiet channel: no status line until the first publish (here: never), until
    the reader (nginx, or the harness) leaves."""
    while await stream.receive_some(4096):
        pass


@pytest.mark.xdist_group("busy")
@needs_nginx
async def test_a_stream_with_no_head_is_12_3s_finding_not_13_1s(nursery, tmp_path):
    """No head directly: 13.1 skips naming 12.3 (it said "the stream answered HTTP None directly")."""
    server = LoopbackServer(nursery, _never_a_head)
    path = tmp_path / "profile.toml"
    path.write_text('[stream]\npath = "/stream"\nshared = true\n[timing]\njob_timeout_seconds = 3  # the window\n')
    report = await run_suite(load_profile(path, base_url=await server.start()), only=["13.1"])
    (result,) = report.results
    assert result.outcome == "skip" and "12.3 judges the missing head" in result.reason, (result.reason,
                                                                                         result.findings)


async def _a_head_for_http_1_1_only(stream, request: bytes) -> None:
    """Events for a reader's HTTP/1.1 request; nothing at all for nginx's HTTP/1.0 one."""
    if request.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1"):
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                              b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\n")
        for n in range(1, 40):
            await stream.send_all(f"id: {n}\ndata: {n}\n\n".encode())
            await trio.sleep(0.05)
    while await stream.receive_some(4096):
        pass


@pytest.mark.xdist_group("busy")
@needs_nginx
async def test_a_head_that_comes_directly_but_not_through_nginx_is_a_fail_that_says_so(nursery, tmp_path):
    server = LoopbackServer(nursery, _a_head_for_http_1_1_only)
    path = tmp_path / "profile.toml"
    path.write_text('[stream]\npath = "/stream"\nshared = true\n[timing]\njob_timeout_seconds = 3  # the window\n')
    report = await run_suite(load_profile(path, base_url=await server.start()), only=["13.1"])
    (result,) = report.results
    assert result.outcome == "fail", (result.outcome, result.reason, result.findings)
    assert result.findings[0].message.startswith("through nginx no response head came, though it came directly")
    assert "not enough to explain it" in result.findings[0].observed  # the machine's starvation, weighed


def test_case_is_registered_for_any_stream():
    from scenarios import CASES

    case_ = next(c for c in CASES if c.id == "13.1")
    assert case_.needs == ("stream",)
