"""`sse-harness probe`: the analysis on hand-built segments (harness._probe), and end to end
against the reference server."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest

from harness import load_profile
from harness._probe import analyse, reconnect_pause, resume_id, stream_problem
from harness._probe_render import render_profile, render_summary
from tracebuild import good_job, segment

URL = "http://test/events"


def _seg(chunks, *, sent=None, url=URL, **kwargs):
    """A segment as tracebuild builds it, at a URL, with the Last-Event-ID it sent."""
    return dataclasses.replace(segment(chunks, **kwargs), url=url, last_event_id_sent=sent)


def _timed(blocks: list[bytes], start: float = 0.1, step: float = 0.1) -> list[tuple[float, bytes]]:
    return [(start + i * step, b) for i, b in enumerate(blocks)]


def _draft(tmp_path, findings):
    path = tmp_path / "draft.toml"
    path.write_text(render_profile(findings))
    return load_profile(path)


def _job():
    """A finished contract job (ids 1..N, ts = 1_000_000 + n*100 ms arriving at n*100 ms past
    1000 s of wall time), a 204 at its last id, and the events after its middle id replayed."""
    blocks = [b"retry: 200\n\n"] + good_job()
    first = _seg(_timed(blocks), wall_offset=1000.0)
    middle = resume_id(first, first)
    after = [b for b in good_job() if int(b.split(b"\n")[0][4:]) > int(middle)]
    gone = dataclasses.replace(_seg([], sent=first.last_event_id), status=204, end="http-status")
    resumed = _seg(_timed(after), sent=middle, wall_offset=1000.0)
    return first, gone, resumed, middle


def test_a_finished_job_with_replay_and_204_is_claimed_as_seen(tmp_path):
    first, gone, resumed, middle = _job()
    assert middle == str(len(good_job()) // 2)
    f = analyse(first, gone, resumed)
    assert f.problem == "" and f.events == len(good_job()) and f.types["step-progress"] == 15
    assert f.ids == "all" and "increasing by 1" in f.ids_note
    assert f.progress.where == "data:/percent" and f.progress_scale == 100  # not stagePercent: it goes back
    assert f.timestamp.where == "data:/ts" and f.timestamp_format == "epoch_ms"
    assert f.job_id.where == "data:/jobId"  # correlationId "c" is too short for an id
    assert f.end_types == ("job-completed",) and f.ended
    assert f.replay and "Last-Event-ID: " + middle in f.replay_note
    assert f.finished_204 and f.retry_ms == 200
    profile = _draft(tmp_path, f)
    assert profile.kind == "stream" and profile.base_url == "http://test"
    assert {"ids", "replay", "finished-204", "ends", "timestamps", "progress", "retry", "browser"} <= profile.claims.names
    assert "keepalive" not in profile.claims.names  # no comment was seen
    assert profile.meaning.end_types == ("job-completed",) and profile.claims.retry_ms == 200
    assert any(line.startswith("# keepalive_seconds: not claimed: no comments") for line in
               render_profile(f).splitlines())


def test_replay_is_not_claimed_when_the_resume_restarts_or_refuses(tmp_path):
    first, gone, _, middle = _job()
    again = _seg(_timed(good_job()), sent=middle, wall_offset=1000.0)  # the whole job again
    f = analyse(first, gone, again)
    assert not f.replay and f.resume.got == "from-start" and "from the start" in f.replay_note
    assert "replay" not in _draft(tmp_path, f).claims.names
    refused = dataclasses.replace(_seg([], sent=middle), status=204, end="http-status")
    assert not analyse(first, gone, refused).replay
    assert not analyse(first, gone, None).replay  # the 204 at the last id alone shows no replay


def test_a_restart_after_the_end_is_said_and_finished_is_not_claimed(tmp_path):
    first, _, _, _ = _job()
    restart = _seg(_timed(good_job()[:5]), sent=first.last_event_id, end="client-closed")
    f = analyse(first, restart, None)
    assert f.reconnect.got == "from-start" and not f.finished_204 and "from the start" in f.finished_note
    assert "finished-204" not in _draft(tmp_path, f).claims.names


def _token(text: str) -> bytes:
    return f"data: {json.dumps({'id': 'chatcmpl-42', 'choices': [{'delta': {'content': text}}]})}\n\n".encode()


def test_a_post_token_stream_ending_in_done(tmp_path):
    blocks = [_token(w) for w in ("Hel", "lo", "!")] + [b"data: [DONE]\n\n"]
    first = _seg(_timed(blocks))
    again = _seg(_timed(blocks))  # a new POST: the same tokens again
    assert resume_id(first, again) is None  # no ids: nothing to resume from
    body = '{"prompt": "say \\"hi\\"\\n", "n": "é"}'
    f = analyse(first, again, None, method="POST", body=body, request_headers={"Content-Type": "application/json",
                                                                                "Authorization": "Bearer t"})
    assert f.end_data == "[DONE]" and f.end_types == () and f.ids == "none"
    assert f.job_id.where == "data:/id" and f.progress is None and f.timestamp is None
    assert f.reconnect.got == "from-start" and not f.replay and not f.finished_204
    profile = _draft(tmp_path, f)
    assert profile.stream.method == "POST" and profile.stream.content == body.encode()
    assert profile.stream.headers == {"Content-Type": "application/json", "Authorization": "Bearer t"}
    assert profile.meaning.end_data == "[DONE]" and "browser" not in profile.claims.names
    assert not {"ids", "replay", "finished-204"} & profile.claims.names


def _tick(n: int, **data) -> bytes:
    return f"id: {n}\nevent: tick\ndata: {json.dumps({'n': n, **data})}\n\n".encode()


def test_a_live_channel_with_keepalives_still_open_at_the_end():
    # events 1..4, then a quiet spell with a comment every second, then 5, 6; we closed it at 8 s
    chunks = [(0.5 * i, _tick(i)) for i in range(1, 5)]
    chunks += [(2.0 + k, b": ping\n\n") for k in (1, 2, 3)] + [(5.5, _tick(5)), (6.0, _tick(6))]
    first = _seg(chunks, end="timeout", ended_at=8.0)
    assert reconnect_pause(first) == 1.0  # twice the median gap between events
    assert resume_id(first, first) is None  # not ended: the reconnect with the last id tells
    resumed = _seg([(10.0, _tick(7)), (10.5, _tick(8))], sent="6", end="client-closed")
    f = analyse(first, resumed, None, paused=1.0)
    assert f.keepalive_seconds == 1.0 and "3 comment(s)" in f.keepalive_note
    assert not f.ended and "still open" in f.end_note and not f.ends
    assert f.replay and f.reconnect.got == "continued"
    assert f.progress is None  # n counts events: a sequence number, not progress
    skipped = _seg([(10.0, _tick(9))], sent="6", end="client-closed")
    f = analyse(first, skipped, None, paused=1.0)
    assert not f.replay and f.reconnect.got == "newer" and "7..8 were not replayed" in f.reconnect.note


def test_two_pings_amid_busy_events_claim_no_interval():
    """aiohttp-sse pinging every 3 s on a channel with an event every 0.5 s: two pings 0.11 s
    apart once claimed keepalive_seconds = 0.1, and 12.5 then failed the server for our guess."""
    chunks = [(0.5 * i, _tick(i)) for i in range(1, 16)] + [(3.01, b": ping\n\n"), (3.12, b": ping\n\n")]
    f = analyse(_seg(sorted(chunks, key=lambda c: c[0]), end="timeout", ended_at=8.0))
    assert f.keepalive_seconds == 0.0 and "too few in a row" in f.keepalive_note


def test_a_timer_keepalive_is_measured_between_comments():
    # a comment every 2 s whatever the events do: spacing between comments with nothing between
    chunks = [(0.2, _tick(1)), (2.0, b": ka\n\n"), (4.0, b": ka\n\n"), (5.0, _tick(2)), (6.0, b": ka\n\n"),
              (8.0, b": ka\n\n")]
    f = analyse(_seg(chunks, end="timeout", ended_at=9.0))
    assert f.keepalive_seconds == 2.0


def test_progress_as_a_fraction_timestamps_as_rfc3339_and_an_end_by_a_field(tmp_path):
    import datetime

    def block(i: int, status: str, fraction: float) -> bytes:
        at = datetime.datetime.fromtimestamp(1000 + i, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        data = {"run": {"runId": "run-7f3a", "state": {"progress": fraction}}, "status": status, "at": at,
                "created": 900, "seq": i}
        return f"event: update\ndata: {json.dumps(data)}\n\n".encode()

    blocks = [block(i, "running", i / 4) for i in range(4)] + [block(4, "succeeded", 1.0)]
    first = _seg([(i + 0.05, b) for i, b in enumerate(blocks)], wall_offset=1000.0)
    f = analyse(first)
    assert f.progress.where == "data:/run/state/progress" and f.progress_scale == 1
    assert f.timestamp.where == "data:/at" and f.timestamp_format == "rfc3339"  # "created" is one time for all
    assert f.job_id.where == "data:/run/runId"
    assert f.end_field == "data:/status" and f.end_values == ("succeeded",) and f.end_types == ()
    profile = _draft(tmp_path, f)
    assert profile.meaning.progress_scale == 1 and profile.meaning.end_values == ("succeeded",)
    assert profile.meaning.timestamp_ms(first.events[1]) == 1_001_000


def test_epoch_seconds_and_a_type_that_looks_like_an_end_but_recurs():
    blocks = [f"event: error\ndata: {json.dumps({'t': 1000 + i})}\n\n".encode() for i in range(3)]
    f = analyse(_seg(_timed(blocks, step=1.0), wall_offset=1000.0))
    assert f.timestamp.where == "data:/t" and f.timestamp_format == "epoch_s"
    assert f.ended and not f.ends and "does not look like an end" in f.end_note  # `error` came three times


def test_a_last_type_is_the_end_when_the_reconnect_got_204_even_by_another_name(tmp_path):
    blocks = [_tick(1), _tick(2), b"id: 3\nevent: bye\ndata: {}\n\n"]
    first = _seg(_timed(blocks))
    gone = dataclasses.replace(_seg([], sent="3"), status=204, end="http-status")
    f = analyse(first, gone, None)
    assert f.end_types == ("bye",) and f.finished_204
    assert analyse(first, None, None).end_types == ()  # without the 204: not an end that was seen
    assert "finished-204" in _draft(tmp_path, f).claims.names


def test_a_terminal_looking_event_on_a_stream_held_open_is_not_claimed():
    first = _seg([(0.1, _tick(1)), (0.2, b"id: 2\nevent: done\ndata: {}\n\n")], end="timeout", ended_at=20.0)
    f = analyse(first)
    assert not f.ends and "looks like an end, but the server kept the stream open 19.8 s" in f.end_note


def test_what_is_not_a_stream():
    unreachable = dataclasses.replace(_seg([]), status=None, end="connect-failed", end_detail="refused")
    assert stream_problem(unreachable) == "could not connect: refused"
    missing = dataclasses.replace(_seg([]), status=404, end="http-status", body=b'{"title": "no such job"}')
    assert "HTTP 404" in stream_problem(missing) and "no such job" in stream_problem(missing)
    plain = _seg([(0.1, b"data: x\n\n")], headers={"content-type": "text/plain"})
    assert stream_problem(plain) == "the response is text/plain, not text/event-stream"
    f = analyse(plain)
    assert f.problem and render_summary(f)[-1].startswith("not a stream: ")
    assert stream_problem(_seg([(0.1, b"data: x\n\n")])) == ""


def test_ids_on_some_events_only_are_not_claimed(tmp_path):
    blocks = [_tick(1), _tick(2), b"data: [DONE]\n\n"]
    f = analyse(_seg(_timed(blocks)))
    assert f.ids == "some" and "none on: message" in f.ids_note and f.end_data == "[DONE]"
    assert "ids" not in _draft(tmp_path, f).claims.names


# --- end to end: the command against the reference server ----------------------------------------

def _job_events(base_url: str) -> str:
    job = httpx.post(base_url + "/api/jobs", json={"topic": "probe"}, timeout=10).json()
    return f"{base_url}/api/jobs/{job['jobId']}/events"


def test_probe_a_job_stream_of_the_reference_server(reference_server, tmp_path, capsys):
    from harness._cli import main

    draft = tmp_path / "job.toml"
    assert main(["probe", _job_events(reference_server.base_url), "--seconds", "30", "--out", str(draft)]) == 0
    said = capsys.readouterr()
    assert said.out == ""  # the draft went to --out; what was seen, to stderr
    assert "content-type: text/event-stream" in said.err and "reconnect with Last-Event-ID" in said.err
    profile = load_profile(draft)
    assert profile.kind == "stream" and profile.base_url == reference_server.base_url
    assert {"ids", "replay", "finished-204", "ends", "progress", "retry", "browser"} <= profile.claims.names
    assert "timestamps" not in profile.claims.names  # one finished job's replay: its times are old
    assert profile.claims.retry_ms == 200 and profile.meaning.progress == "data:/percent"
    assert profile.meaning.job_id == "data:/jobId" and "job-completed" in profile.meaning.end_types


def _family_12(draft, tmp_path) -> dict[str, dict]:
    from harness._cli import main

    code = main(["run", "--profile", str(draft), "--only", "12", "--format", "json", "--report-dir",
                 str(tmp_path / "report")])
    cases = {c["id"]: c for c in json.loads((tmp_path / "report" / "report.json").read_text())["cases"]}
    assert cases, "family 12 ran no case"
    assert code == (1 if any(c["outcome"] == "fail" for c in cases.values()) else 0)
    return cases


def test_probe_then_run_family_12_on_the_draft_as_it_is(reference_server, tmp_path, capsys):
    """The two commands: probe, then run --profile with the draft untouched."""
    from harness._cli import main

    draft = tmp_path / "job.toml"
    assert main(["probe", _job_events(reference_server.base_url), "--seconds", "30", "--out", str(draft)]) == 0
    cases = _family_12(draft, tmp_path)
    outcomes = {c["id"]: c["outcome"] for c in cases.values()}
    assert not {"fail", "error"} & set(outcomes.values()), outcomes
    assert outcomes["12.9"] == "pass"  # finished = "204", as probed


def test_probe_then_run_with_the_setup_the_draft_suggests(reference_server, tmp_path, capsys):
    """The draft of a job's stream, edited as its comments say: a new job for every stream, and
    the timestamp claimed."""
    from harness._cli import main

    draft = tmp_path / "job.toml"
    url = _job_events(reference_server.base_url)
    assert main(["probe", url, "--seconds", "30", "--out", str(draft)]) == 0
    job = url.rsplit("/", 2)[-2]
    text = draft.read_text().replace(f"/{job}/", "/{id}/").replace("# timestamp = ", "timestamp = ")
    text = text.replace("# timestamp_format = ", "timestamp_format = ").replace(
        "\n[meaning]", '\n[[setup]]\nmethod = "POST"\npath = "/api/jobs"\njson = { topic = "probe" }\n'
                       'capture = { id = "json:/jobId" }\n\n[meaning]')
    draft.write_text(text)
    profile = load_profile(draft)
    assert "timestamps" in profile.claims.names and profile.stream.setup
    outcomes = {c["id"]: c["outcome"] for c in _family_12(draft, tmp_path).values()}
    assert not {"fail", "error"} & set(outcomes.values()), outcomes


def test_probe_writes_the_draft_to_stdout_without_out(reference_server, tmp_path, capsys):
    from harness._cli import main

    assert main(["probe", _job_events(reference_server.base_url), "--seconds", "30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# A draft stream profile written by `sse-harness probe`")
    (tmp_path / "d.toml").write_text(out)
    assert load_profile(tmp_path / "d.toml").claims.has("finished-204")


@pytest.mark.parametrize("path, said", [
    ("/api/jobs/nosuchjob/events", "HTTP 404"),
    ("/api/healthz", "not text/event-stream"),
])
def test_probe_refuses_what_is_not_a_stream_with_exit_2(reference_server, capsys, path, said):
    from harness._cli import main

    assert main(["probe", reference_server.base_url + path, "--seconds", "5"]) == 2
    out = capsys.readouterr()
    assert said in out.err and "no draft" in out.err and out.out == "" and "Traceback" not in out.err


def test_probe_an_unreachable_url_and_bad_arguments_exit_2(capsys):
    import socket

    from harness._cli import main

    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["probe", f"http://127.0.0.1:{port}/events", "--seconds", "2"]) == 2
    assert "could not connect" in capsys.readouterr().err
    assert main(["probe", "ftp://x/events"]) == 2
    assert main(["probe", "http://127.0.0.1:1/e", "--header", "no colon"]) == 2
    assert "Name: value" in capsys.readouterr().err


def test_a_short_job_id_counts_when_the_path_names_it():
    blocks = [f"id: {i}\nevent: progress\ndata: {json.dumps({'job': '1', 'percent': i * 50})}\n\n".encode()
              for i in (1, 2)]
    f = analyse(_seg(_timed(blocks), url="http://test/jobs/1/events"))
    assert f.job_id.where == "data:/job" and "the stream's path holds it" in f.job_id.note
    assert "[[setup]]" in render_profile(f) and f.per_job
    # a finished job behind a fixed path: a run would read its replay, timestamps as old as the job
    stamped = [b.replace(b'"percent"', b'"ts": %d, "percent"' % (1_000_000 + i * 100)) for i, b in enumerate(blocks)]
    f = analyse(_seg(_timed(stamped), url="http://test/jobs/1/events", wall_offset=1000.0))
    assert f.timestamp.where == "data:/ts" and "a run would read its replay" in f.timestamp_withheld
    assert '# timestamp = "data:/ts"' in render_profile(f)
    live = _seg(_timed(stamped), url="http://test/jobs/1/events", wall_offset=1000.0, end="timeout")
    assert analyse(live).timestamp_withheld == ""  # still running when probed: its own time
    assert analyse(_seg(_timed(blocks), url="http://test/events")).job_id is None  # "1" alone is no id


def test_probe_a_post_token_stream_end_to_end(tmp_path):
    """A stream opened by POST (a loopback server of a few lines: the body's words as tokens, then
    [DONE]); the request the probe sends and the draft's [stream] say the same thing."""
    import functools

    import trio

    from harness._probe_cli import _request, observe

    seen: list[bytes] = []

    async def serve(stream):
        request = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in request:
                request += await stream.receive_some(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")) or 0)
            while len(body) < length:
                body += await stream.receive_some(65536)
            seen.append(head + b"\r\n\r\n" + body)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for word in json.loads(body)["prompt"].split():
                await stream.send_all(f"data: {json.dumps({'id': 'cmpl-9', 'token': word})}\n\n".encode())
                await trio.sleep(0.02)
            await stream.send_all(b"data: [DONE]\n\n")
        await stream.aclose()

    class Args:
        url, method, seconds = "", None, 5.0
        data = '{"prompt": "one two three"}'
        header = ["Authorization: Bearer t"]

    async def main():
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
            Args.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1/complete"
            method, content, headers, body = _request(Args)
            first, again, resume, pause = await observe(Args.url, method=method, content=content, headers=headers,
                                                        seconds=5.0)
            nursery.cancel_scope.cancel()
        return analyse(first, again, resume, method=method, body=body, request_headers=headers, paused=pause)

    f = trio.run(main)
    assert len(seen) == 2 and all(s.startswith(b"POST /v1/complete") for s in seen)  # the stream and the reconnect
    assert b"content-type: application/json" in seen[0].lower() and seen[0].endswith(b'{"prompt": "one two three"}')
    assert f.events == 4 and f.end_data == "[DONE]" and f.job_id.where == "data:/id"
    assert f.reconnect.got == "from-start" and f.resume is None and not f.replay and not f.finished_204
    profile = _draft(tmp_path, f)
    assert profile.stream.method == "POST" and profile.stream.content == b'{"prompt": "one two three"}'
    assert profile.stream.headers == {"Authorization": "Bearer t", "Content-Type": "application/json"}
    assert profile.meaning.end_data == "[DONE]" and profile.claims.names == {"stream", "ends"}
