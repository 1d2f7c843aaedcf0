"""Load on a stream profile (issue 18, item 5): the judge of any stream and the set-up steps (pure),
then `sse-harness load --profile` against the two example servers and against the variant server
described as a stream profile with a set-up request, correct and broken. Servers and locust are
separate processes on 127.0.0.1, stopped by pid."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, example_server, job_stream_profile, variant_server
from harness import Decoder, Event, load_profile
from harness._invariants import AnyStreamJudge, StreamIds
from harness._stream_profile import SetupAnswer, SetupFailed, StreamRequest

CLI = [sys.executable, "-c", "import sys; from harness._cli import main; sys.exit(main(sys.argv[1:]))", "load"]


def events(text: str) -> list[Event]:
    return [r for r in Decoder().feed(text.encode(), 0.0) if isinstance(r, Event)]


def ids(*numbers) -> str:
    return "".join(f"id: {n}\ndata: x\n\n" for n in numbers)


def kinds(judge, text: str) -> list[str]:
    """What each event broke: StreamIds.see gives one breach or None, AnyStreamJudge.see a list."""
    out = []
    for event in events(text):
        found = judge.see(event)
        out += [b.kind for b in ([found] if found is not None and not isinstance(found, list) else found or [])]
    return out


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


# -- the judge of any stream (pure) ---------------------------------------------------------------

def test_stream_ids_repeat_and_gap_once_the_stream_counts_up_by_one():
    assert kinds(StreamIds(), ids(57, 58, 59, 60)) == []  # a reader that joined a channel late
    assert kinds(StreamIds(), ids(1, 2, 3, 5, 6)) == ["id gap"]
    # A resume the server answered from the start: one breach for the run of old ids.
    assert kinds(StreamIds(), ids(1, 2, 3, 4, 1, 2, 3, 4, 5)) == ["id repeat"]
    # Ids that do not count up by one (timestamps, say): increasing is all that is judged.
    assert kinds(StreamIds(), ids(100, 250, 900, 1200)) == []
    assert kinds(StreamIds(), ids(100, 250, 250)) == ["id repeat"]
    assert kinds(StreamIds(), ids("a1", "b2", "a1")) == ["id repeat"]
    # An event without an id line of its own (the id persists) is not judged.
    assert kinds(StreamIds(), ids(1, 2, 3) + "data: [DONE]\n\n") == []


def test_any_stream_judge_ends_as_the_profile_means(tmp_path):
    tokens = load_profile(ROOT / "examples" / "token_stream" / "profile.toml")
    judge = AnyStreamJudge(tokens)
    assert judge.ids is None  # not claimed
    assert kinds(judge, "data: {}\n\ndata: [DONE]\n\n") == [] and judge.terminal.terminal.data == "[DONE]"
    assert kinds(AnyStreamJudge(tokens), "data: [DONE]\n\ndata: {}\n\n") == ["event after terminal"]
    assert [b.kind for b in AnyStreamJudge(tokens).terminal.end(server_closed=True, ended_at=1.0, close_within=1.0)] \
        == ["no terminal event"]
    by_field = load_profile(write(tmp_path, '[stream]\npath = "/s"\n[meaning]\nend_field = "data:/state"\n'
                                            'end_values = ["done"]\n[claims]\nids = true\n'))
    judge = AnyStreamJudge(by_field)
    assert kinds(judge, 'id: 1\ndata: {"state": "busy"}\n\nid: 3\ndata: {"state": "done"}\n\n') == []
    assert judge.terminal.terminal.id == "3"
    channel = AnyStreamJudge(load_profile(ROOT / "examples" / "notify_channel" / "profile.toml"))
    assert channel.terminal is None and channel.ids is not None  # never ends; ids claimed


# -- the set-up steps, sans I/O: one copy for `run` (httpx) and `load` (locust) ---------------------

SET_UP = """
[[setup]]
path = "/session"
json = { user = "u" }
capture = { session = "header:Mcp-Session-Id" }
[[setup]]
path = "/runs"
headers = { "X-Session" = "{session}" }
body = '{"session": "{session}"}'
capture = { run = "json:/run/id" }
[stream]
method = "POST"
path = "/runs/{run}/events"
headers = { "X-Session" = "{session}" }
json = { from = "start" }
"""


def test_set_up_steps_fill_captures_into_later_requests(tmp_path):
    spec = load_profile(write(tmp_path, SET_UP)).stream
    steps = spec.opening("http://127.0.0.1:9/", {"Authorization": "Bearer t"})
    first = next(steps)
    assert (first.method, first.url, first.path, first.headers["Authorization"]) == \
        ("POST", "http://127.0.0.1:9/session", "/session", "Bearer t")
    second = steps.send(SetupAnswer(201, {"mcp-session-id": "S1"}, b"{}"))  # header names in any case
    assert second.headers["X-Session"] == "S1" and second.content == b'{"session": "S1"}'
    with pytest.raises(StopIteration) as done:
        steps.send(SetupAnswer(200, {}, b'{"run": {"id": 42}}'))
    assert done.value.value == {"session": "S1", "run": "42"}
    request = spec.request("http://127.0.0.1:9", {}, done.value.value)
    assert request == StreamRequest("http://127.0.0.1:9/runs/42/events", "POST",
                                    {"X-Session": "S1", "Content-Type": "application/json"}, b'{"from": "start"}',
                                    {"session": "S1", "run": "42"})


def test_set_up_failures_are_the_targets_and_name_what_was_missing(tmp_path):
    spec = load_profile(write(tmp_path, SET_UP)).stream
    steps = spec.opening("http://127.0.0.1:9", {})
    next(steps)
    with pytest.raises(SetupFailed, match=r"header:Mcp-Session-Id \(capture session\) is not in its answer"):
        steps.send(SetupAnswer(200, {}, b""))
    steps = spec.opening("http://127.0.0.1:9", {})
    next(steps)
    with pytest.raises(SetupFailed, match="answered HTTP 503: busy"):
        steps.send(SetupAnswer(503, {}, b"busy"))


def test_what_load_cannot_do_on_a_stream_profile_is_exit_2(tmp_path):
    hooked = write(tmp_path, '[stream]\nhook = "somewhere:opener"\n')
    done = subprocess.run([*CLI, "--profile", str(hooked), "--report-dir", str(tmp_path / "r")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "[stream].hook 'somewhere:opener' is an async function" in done.stdout, done.stdout
    assert "describe the stream with [stream] and [[setup]]" in " ".join(done.stdout.split()), done.stdout
    channel = ROOT / "examples" / "notify_channel" / "profile.toml"
    done = subprocess.run([*CLI, "--profile", str(channel), "--job-id", "j1", "--report-dir", str(tmp_path / "r")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--job-id is for the contract's jobs" in done.stdout, done.stdout


# -- runs ------------------------------------------------------------------------------------------

def final(prefix: Path, kind: str) -> list[dict]:
    with open(f"{prefix}_final_{kind}.csv", newline="") as f:
        return list(csv.DictReader(f))


def load_run(tmp_path: Path, profile: Path, base_url: str, *extra: str, name: str = "r"):
    report = tmp_path / name
    done = subprocess.run([*CLI, "--profile", str(profile), "--target", base_url, "--users", "5", "--spawn-rate", "10",
                           "--run-time", "5s", *extra, "--report-dir", str(report)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    rows = {r["Name"]: r for r in final(report / "locust", "stats")}
    failures = {r["Name"]: int(r["Occurrences"]) for r in final(report / "locust", "failures")}
    summary = json.loads((report / "load.json").read_text())
    return done, rows, failures, summary


def count(rows: dict, name: str) -> int:
    return int(rows[name]["Request Count"]) if name in rows else 0


@pytest.mark.xdist_group("busy")
def test_the_post_token_stream_under_load(tmp_path):
    """POST, tokens ending in data: [DONE], a timestamp mapped: every answer read to its end,
    every token's lag, no failure."""
    with example_server("token_stream") as server:
        done, rows, failures, summary = load_run(tmp_path, ROOT / "examples" / "token_stream" / "profile.toml",
                                                 server.base_url)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert failures == {} and summary["invariantFailures"] == {}
    jobs, tokens = count(rows, "job"), count(rows, "event")
    assert jobs >= 5 and int(rows["job"]["Failure Count"]) == 0
    assert tokens >= 25 * jobs  # 24 tokens and [DONE] per answer (answers cut off by the run's end count too)
    assert count(rows, "lag") >= 24 * jobs and float(rows["lag"]["50%"]) < 1000
    assert rows["connect"]["Type"] == "POST" and summary["figures"]["events"] == tokens


@pytest.mark.xdist_group("busy")
def test_the_notification_channel_under_load_with_resumes(tmp_path):
    """GET broadcast channel, ids, replay, keep-alive 1 s: every reader cut once and resumed with
    Last-Event-ID (no gap, no repeat across it), sessions of 2 s on a stream that never ends."""
    with example_server("notify_channel") as server:
        done, rows, failures, summary = load_run(
            tmp_path, ROOT / "examples" / "notify_channel" / "profile.toml", server.base_url,
            "--cut-share", "1", "--cut-within", "0.5", "--session-seconds", "2")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert failures == {} and summary["invariantFailures"] == {}
    assert count(rows, "job") >= 5 and count(rows, "reconnect") >= 5
    assert float(rows["reconnect"]["50%"]) >= 900  # the channel's retry (1000 ms) waited as EventSource does
    assert count(rows, "event") > 0 and "lag" not in rows  # no timestamp mapped: no lag
    assert summary["figures"]["events"] == count(rows, "event")


# The reference server's job stream as a stream profile: a set-up request creates the job, its id
# is captured into the stream's path; the job's own stageSeconds keep it short.
JOB_STREAM = job_stream_profile(
    '{ topic = "load on a stream profile", scenes = 1, '
    'stageSeconds = { script = 0.2, tts = 0.2, visuals = 0.2, compose = 0.2, render = 0.2 } }')


@pytest.mark.xdist_group("busy")
@pytest.mark.parametrize("fault, failure", [("correct", None), ("id-skip", "id gap"), ("lei-ignored", "id repeat")])
def test_a_broken_stream_fails_by_name(tmp_path, fault, failure):
    """The variant server's job stream through a set-up request: correct, exit 0 with every job
    resumed once; ids that skip, "id gap"; a resume answered from the start (Last-Event-ID
    ignored while the profile claims replay), "id repeat"."""
    profile = write(tmp_path, JOB_STREAM)
    with variant_server(fault) as server:
        done, rows, failures, summary = load_run(tmp_path, profile, server.base_url, "--cut-share", "1",
                                                 "--cut-within", "0.4")
    assert count(rows, "setup /api/jobs") >= 5 and count(rows, "reconnect") >= 1, sorted(rows)
    if failure is None:
        assert done.returncode == 0 and failures == {}, done.stdout[-4000:] + done.stderr[-3000:]
        assert int(rows["job"]["Failure Count"]) == 0 and count(rows, "job") >= 5
    else:
        assert done.returncode == 1 and failure in summary["invariantFailures"], (failures, done.stdout[-4000:])
        assert set(summary["invariantFailures"]) == {failure}


@pytest.mark.xdist_group("busy")
def test_a_keepalive_claim_the_stream_does_not_keep_fails_by_name(tmp_path):
    """The channel sends a keep-alive after 1 s of quiet; a profile claiming 0.3 s: "keep-alive
    silence" (the same channel under its true claim passes, above)."""
    claimed = (ROOT / "examples" / "notify_channel" / "profile.toml").read_text()
    profile = write(tmp_path, claimed.replace("keepalive_seconds = 1\n", "keepalive_seconds = 0.3\n"))
    assert "keepalive_seconds = 0.3" in profile.read_text()
    with example_server("notify_channel") as server:
        done, _, _, summary = load_run(tmp_path, profile, server.base_url, "--cut-share", "0",
                                       "--session-seconds", "4")
    assert done.returncode == 1 and set(summary["invariantFailures"]) == {"keep-alive silence"}, done.stdout[-4000:]
