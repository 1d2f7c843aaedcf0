"""The reference server's durable event log: what a kill -9 and a restart keep, how interrupted and
queued jobs end, survivors killed, retention by age and size, a corrupt file moved aside."""

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import trio

from conftest import RunningServer, reference_args
from harness import record
from reference_server._eventlog import EventLog

TERMINAL = {"job-completed", "job-failed", "job-cancelled"}
QUICK = {s: 0.05 for s in ("script", "tts", "visuals", "compose", "render")}


def _args(data_dir: str, *extra: str) -> list[str]:
    return [a if a != "{data_dir}" else data_dir for a in reference_args(*extra)]


def _kill(server: RunningServer) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(5)


async def _finished(http: httpx.AsyncClient, base_url: str, **body) -> tuple[str, list]:
    job = (await http.post("/api/jobs", json={"topic": "t", "scenes": 1, "stageSeconds": QUICK, **body})).json()
    seg = await record(f"{base_url}/api/jobs/{job['jobId']}/events", terminal_types=TERMINAL)
    assert seg.events[-1].type == "job-completed", seg.end_detail
    return job["jobId"], seg.events


async def test_an_event_is_published_only_once_the_store_has_it():
    """The sink (the store's write) runs before anyone can see the event."""
    seen_at_write: list[tuple[int, int, int]] = []  # (event id, published ids, events heard)
    heard: list[bytes] = []
    log = EventLog(sink=lambda log, event_id, _type, _bytes: seen_at_write.append((event_id, log.last_id, len(heard))))
    log.listen(heard.append)
    log.append("a", {})
    log.append("b", {}, terminal=True)
    assert seen_at_write == [(1, 0, 0), (2, 1, 1)]
    assert log.last_id == 2 and log.closed and heard[1].startswith(b"id: 2\nevent: b\n")


async def test_kill_9_keeps_history_fails_interrupted_and_queued_jobs_and_kills_survivors(fresh_server, tmp_path):
    data = str(tmp_path)
    server = fresh_server(_args(data, "--max-concurrent-jobs", "1"))
    sleeper = subprocess.Popen(["sleep", "60"])  # stands for a tool process the crash left behind
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            done_id, done_events = await _finished(http, server.base_url)
            running = (await http.post("/api/jobs", json={"topic": "t", "stallSeconds": {"tts": 60}})).json()["jobId"]
            queued = (await http.post("/api/jobs", json={"topic": "t"})).json()["jobId"]
            seen = await record(f"{server.base_url}/api/jobs/{running}/events", terminal_types=TERMINAL,
                                stop=lambda e: e.type == "step-status" and '"tts"' in e.data)
            workdir = (await http.get(f"/api/jobs/{running}")).json()["resources"]["workdir"]
            assert (await http.get(f"/api/jobs/{queued}")).json()["status"] == "queued"
        _kill(server)
        assert os.path.isdir(workdir)
        start = int(Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        with sqlite3.connect(tmp_path / "events.db") as db:
            state = json.loads(db.execute("SELECT state FROM jobs WHERE id = ?", (running,)).fetchone()[0])
            state["pids"].append([sleeper.pid, start])
            db.execute("UPDATE jobs SET state = ? WHERE id = ?", (json.dumps(state), running))
        again = fresh_server(_args(data, "--max-concurrent-jobs", "1"))
        assert again.port != 0
        assert sleeper.wait(5) == -signal.SIGKILL, "the survivor was not killed at start"
        assert not os.path.exists(workdir), "the interrupted job's folder was not removed at start"
        async with httpx.AsyncClient(base_url=again.base_url) as http:
            rest = await record(f"{again.base_url}/api/jobs/{running}/events", last_event_id=seen.last_event_id,
                                terminal_types=TERMINAL)
            assert [int(e.id) for e in rest.events] == list(range(int(seen.last_event_id) + 1,
                                                                  int(seen.last_event_id) + 1 + len(rest.events)))
            assert [e.type for e in rest.events][-2:] == ["error", "job-failed"]
            failed = json.loads(rest.events[-1].data)
            assert failed["error"]["code"] == "SERVER_RESTARTED" and failed["error"]["remediation"]
            assert failed["cleanup"] == {"workdirRemoved": True, "processesKilled": True}
            snap = (await http.get(f"/api/jobs/{running}")).json()
            assert snap["status"] == "failed" and snap["lastEventId"] == int(rest.events[-1].id)
            assert (await http.get(f"/api/jobs/{queued}")).json()["error"]["code"] == "SERVER_RESTARTED"
            replay = await record(f"{again.base_url}/api/jobs/{done_id}/events", terminal_types=TERMINAL)
            assert [e.raw for e in replay.events] == [e.raw for e in done_events]
            end = await http.get(f"/api/jobs/{done_id}/events", headers={"Last-Event-ID": done_events[-1].id})
            assert end.status_code == 204
            assert (await http.get(f"/api/jobs/{done_id}/artifacts/video.mp4")).status_code == 200
            new = (await http.post("/api/jobs", json={"topic": "after"})).json()  # and it takes new work
            assert new["status"] in ("queued", "running")
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


async def test_retention_by_age_removes_rows_and_artifacts_together(fresh_server, tmp_path):
    data = str(tmp_path)
    server = fresh_server(_args(data))
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        old_id, _ = await _finished(http, server.base_url)
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(5)
    assert (tmp_path / "artifacts" / old_id).is_dir()
    await trio.sleep(1.2)
    again = fresh_server(_args(data, "--retention-hours", str(1 / 3600)))  # one second
    async with httpx.AsyncClient(base_url=again.base_url) as http:
        assert (await http.get(f"/api/jobs/{old_id}")).status_code == 404
    assert not (tmp_path / "artifacts" / old_id).exists()
    with sqlite3.connect(tmp_path / "events.db") as db:
        assert db.execute("SELECT count(*) FROM events WHERE job_id = ?", (old_id,)).fetchone()[0] == 0


async def test_size_bound_removes_oldest_finished_jobs_never_a_running_one(fresh_server, tmp_path):
    server = fresh_server(_args(str(tmp_path), "--max-log-mb", "0.01"))  # 10 KiB: about one short job's history
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        running = (await http.post("/api/jobs", json={"topic": "t", "stallSeconds": {"script": 60}})).json()["jobId"]
        finished = [await _finished(http, server.base_url) for _ in range(3)]
        assert all(sum(len(e.raw) for e in events) > 4_000 for _, events in finished)
        await trio.sleep(0.2)
        kept = [(await http.get(f"/api/jobs/{job_id}")).status_code == 200 for job_id, _ in finished]
        assert not kept[0] and kept == sorted(kept), f"not the oldest first: {kept}"
        for (job_id, _), here in zip(finished, kept):
            assert (tmp_path / "artifacts" / job_id).exists() == here
        assert (await http.get(f"/api/jobs/{running}")).json()["status"] == "running"


async def test_a_corrupt_log_is_moved_aside_and_the_server_starts_empty(fresh_server, tmp_path):
    (tmp_path / "events.db").write_bytes(b"this is not a database" * 100)
    server = fresh_server(_args(str(tmp_path)))
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/api/queue")).json()["stats"]["total"] == 0
        await _finished(http, server.base_url)
    aside = list(tmp_path.glob("events.db.corrupt-*"))
    assert aside and aside[0].read_bytes().startswith(b"this is not a database")
    assert "cannot be read" in server.output_so_far()


async def test_memory_event_log_keeps_nothing_across_a_restart(fresh_server, tmp_path):
    server = fresh_server(_args(str(tmp_path), "--event-log", "memory"))
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        job_id, _ = await _finished(http, server.base_url)
    _kill(server)
    assert not (tmp_path / "events.db").exists()
    again = fresh_server(_args(str(tmp_path), "--event-log", "memory"))
    async with httpx.AsyncClient(base_url=again.base_url) as http:
        assert (await http.get(f"/api/jobs/{job_id}")).status_code == 404


async def test_a_large_fan_out_yields_between_slices_and_skips_listeners_that_left():
    from reference_server._eventlog import INLINE_LISTENERS, Fanout

    fanout = Fanout(budget=0.0)  # a checkpoint after every 16 listeners
    log = EventLog(fanout=fanout)
    got: dict[int, list[bytes]] = {i: [] for i in range(4 * INLINE_LISTENERS)}
    listeners = {i: (lambda encoded, i=i: got[i].append(encoded)) for i in got}
    for listener in listeners.values():
        log.listen(listener)
    progress: list[int] = []  # how many listeners had the event each time another task ran

    async def other_task() -> None:
        for _ in range(4):
            progress.append(sum(1 for v in got.values() if v))
            if len(progress) == 1:
                log.unlisten(listeners[len(got) - 1])  # leaves before its slice comes
            await trio.lowlevel.checkpoint()

    log.append("e", {})
    assert not any(got.values())  # too many listeners for append itself: the fan-out's task does it
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fanout.run)
            nursery.start_soon(other_task)
            await fanout.flushed()
            nursery.cancel_scope.cancel()
    # Another task ran while the fan-out was part way (at a slice boundary), not only after it.
    # Slices of 16 listeners: another task ran after 15, 31, ... had the event (a checkpoint comes
    # before every 16th listener).
    assert any(0 < p < len(got) - 1 for p in progress) and all(p % 16 in (0, 15) for p in progress[:-1]), progress
    assert not got[len(got) - 1] and all(len(v) == 1 for i, v in got.items() if i != len(got) - 1)


async def test_few_listeners_get_an_event_in_append_itself():
    from reference_server._eventlog import INLINE_LISTENERS, Fanout

    log = EventLog(fanout=Fanout())  # its task never runs here
    heard: list[bytes] = []
    log.listen(heard.append)
    for _ in range(INLINE_LISTENERS - 1):
        log.listen(lambda encoded: None)
    log.append("e", {})
    assert heard == [log.encoded[0]] and log.offered == 1


class _Writer:
    def __init__(self) -> None:
        self.taken: list[bytes] = []

    def ready(self) -> bool:
        return True

    def write_now(self, data: bytes) -> bytes:
        self.taken.append(data)
        return b""


async def test_events_that_wait_for_their_turn_reach_each_subscriber_in_one_write():
    """Behind (several events since a log's last turn), each subscriber gets the run in one write,
    in order; a subscriber whose task already wrote some or all of them gets only the rest."""
    import trio.testing

    from reference_server._eventlog import INLINE_LISTENERS, Fanout
    from reference_server._stream import _LiveDelivery

    fanout = Fanout()
    log = EventLog(fanout=fanout)
    log.append("e", {})
    writers = [_Writer() for _ in range(INLINE_LISTENERS + 6)]
    lives = [_LiveDelivery(log, w, 1, trio.current_time()) for w in writers]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for live in lives:
                nursery.start_soon(live.run, 100.0)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(4):
                log.append("e", {})
            assert not any(w.taken for w in writers)  # the fan-out's task has not run yet
            lives[0].cursor = 5  # as if its own task had written them meanwhile
            lives[1].cursor = 3  # as if its own task had written two of them meanwhile
            nursery.start_soon(fanout.run)
            await fanout.flushed()
            assert not writers[0].taken and lives[0].cursor == 5
            assert writers[1].taken == [b"".join(log.encoded[3:5])]
            assert all(len(w.taken) == 1 and w.taken[0] == b"".join(log.encoded[1:5]) for w in writers[2:])
            assert all(live.cursor == 5 and not live._wake.is_set() for live in lives)
            log.append("end", {}, terminal=True)
            await fanout.flushed()
            assert all(live.cursor == 6 and w.taken[-1] == log.encoded[5] for live, w in zip(lives, writers))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()


async def test_logs_take_turns_in_the_fan_out():
    """A log with a long run of events does not hold back another log's subscribers: the second
    log's events are offered after one turn of the first, not after all of its later events."""
    from reference_server._eventlog import INLINE_LISTENERS, Fanout

    fanout = Fanout(budget=0.0)
    busy, other = EventLog(fanout=fanout), EventLog(fanout=fanout)
    order: list[str] = []

    def busy_listener(encoded: bytes) -> None:
        order.append("busy")
        if len(order) == 1:
            busy.append("e", {})  # arrives during busy's first turn: offered at its next one

    busy.listen(busy_listener)
    for _ in range(INLINE_LISTENERS):
        busy.listen(lambda encoded: order.append("busy"))
    for _ in range(INLINE_LISTENERS + 1):
        other.listen(lambda encoded: order.append("other"))
    busy.append("e", {})
    other.append("e", {})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fanout.run)
            await fanout.flushed()
            nursery.cancel_scope.cancel()
    turns = [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k]
    assert turns == ["busy", "other", "busy"], turns


async def test_an_unreadable_job_row_loses_that_job_only(fresh_server, tmp_path):
    server = fresh_server(_args(str(tmp_path)))
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        bad, _ = await _finished(http, server.base_url)
        good, _ = await _finished(http, server.base_url)
    _kill(server)
    with sqlite3.connect(tmp_path / "events.db") as db:
        db.execute("UPDATE jobs SET state = 'not json' WHERE id = ?", (bad,))
    again = fresh_server(_args(str(tmp_path)))
    async with httpx.AsyncClient(base_url=again.base_url) as http:
        assert (await http.get(f"/api/jobs/{bad}")).status_code == 404
        assert (await http.get(f"/api/jobs/{good}")).json()["status"] == "completed"
    assert "cannot be read back" in again.output_so_far()
