"""The durable event log: jobs and their events in SQLite (WAL), written in batches.

The in-memory ``EventLog`` stays the fast path for live subscribers; this is the truth after a
restart. Appends are queued on the loop (a list append); one writer task writes each batch (all
that was appended since its last turn) as one transaction, then publishes the batch's events to
their logs. A client therefore only ever sees events that are on disk.

Where the batch is written: in a worker thread (``trio.to_thread``), so that a write that waits
for the disk stalls only publication, never the loop. Measured on this (shared) machine, a
commit in WAL mode with synchronous=NORMAL (no fsync) takes 40-70 us on average but now and
then 20-30 ms when the kernel throttles writers; written on the loop, those stalls stopped
every stream and request of the server. The price of the thread is the GIL: the worker waits
for the busy loop's thread to let it go, twice per batch, so the server's command sets Python's
switch interval to 0.5 ms (the default 5 ms added up to 10 ms to every event's delivery). The
checkpoint (WAL into the database, with fsync) is off on the writing connection and done by a
second connection in another worker thread every second, so no batch waits for an fsync.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

import trio

from ._eventlog import EventLog

__all__ = ["StoredJob", "Store"]

log = logging.getLogger("reference_server")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    ended_at REAL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (job_id, id)
) WITHOUT ROWID;
"""
_VERSION = 1


@dataclasses.dataclass(frozen=True)
class StoredJob:
    """A job as read back at start: its saved state and its events, in id order."""

    id: str
    state: dict[str, Any]
    events: list[tuple[str, bytes]]


class Store:
    """One SQLite file in the data folder; every method but ``open``/``load`` runs in the writer task."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._events: list[tuple[EventLog, str, int, str, bytes]] = []
        self._dirty: dict[str, Callable[[], tuple]] = {}  # job id -> its row, made at flush time
        self._row_written: dict[str, float] = {}  # job id -> when its row was last queued (monotonic)
        self._deletes: list[str] = []
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self.failed_writes = 0

    # -- start-up (before serving; blocking is fine here) ----------------------------------
    def open(self) -> list[StoredJob]:
        """Open (or create) the database and read every job back. A file that cannot be read
        is moved aside, with an error logged, and the server starts with an empty log."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._open_and_load()
        except sqlite3.DatabaseError as exc:
            self._close()
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            log.error("the event log %s cannot be read (%s); moved aside to %s, starting with an empty log",
                      self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(self.path) + suffix)
                if source.exists():
                    os.replace(source, Path(str(aside) + suffix))
            return self._open_and_load()

    def _open_and_load(self) -> list[StoredJob]:
        # One writer at a time (the writer task) but from worker threads: not thread-bound.
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash of the process loses nothing committed
        db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints are the worker thread's (see above)
        if db.execute("PRAGMA user_version").fetchone()[0] == 0:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={_VERSION}")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        jobs: dict[str, StoredJob] = {}
        for job_id, state in db.execute("SELECT id, state FROM jobs ORDER BY created_at"):
            try:
                jobs[job_id] = StoredJob(job_id, json.loads(state), [])
            except (TypeError, ValueError) as exc:  # one unreadable row loses one job, not the log
                log.error("job %s in the event log cannot be read back (%s); dropped", job_id, exc)
                self.delete(job_id)
        for job_id, _, event_type, body in db.execute("SELECT job_id, id, type, body FROM events ORDER BY job_id, id"):
            job = jobs.get(job_id)
            if job is not None:
                job.events.append((event_type, bytes(body)))
        return list(jobs.values())

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- on the loop: queue writes (cheap) --------------------------------------------------
    def sink(self, job_id: str, row: Callable[[], tuple]):
        """The EventLog sink for one job; ``row()`` gives the job's row when it is written."""

        def on_append(event_log: EventLog, event_id: int, event_type: str, encoded: bytes) -> None:
            self._events.append((event_log, job_id, event_id, event_type, encoded))
            # The row goes with every event but progress ticks (25 a second per job; each row is a
            # page rewritten in the WAL): with those, at most once a second.
            if event_type != "step-progress" or time.monotonic() - self._row_written.get(job_id, 0.0) >= 1.0:
                self._dirty[job_id] = row
            self._wake.set()

        return on_append

    def touch(self, job_id: str, row: Callable[[], tuple]) -> None:
        """The job's state changed without an event (a process started): write its row."""
        self._dirty[job_id] = row
        self._wake.set()

    def delete(self, job_id: str) -> None:
        self._deletes.append(job_id)
        self._dirty.pop(job_id, None)
        self._row_written.pop(job_id, None)
        self._wake.set()

    async def flushed(self) -> None:
        """Return once everything queued so far is written (or its write failed)."""
        while self._events or self._dirty or self._deletes or not self._idle.is_set():
            if self._idle.is_set():
                self._wake.set()
            await self._idle.wait()
            await trio.lowlevel.checkpoint()

    # -- the writer task --------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._checkpoints)
            task_status.started()
            await self._writer()

    async def _checkpoints(self) -> None:
        checkpointer = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            while True:
                await trio.sleep(1.0)
                try:
                    await trio.to_thread.run_sync(checkpointer.execute, "PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("event log checkpoint failed: %s", exc)
        finally:
            checkpointer.close()

    async def _writer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                events, self._events = self._events, []
                now = time.monotonic()
                rows = [make() for make in self._dirty.values()]
                self._row_written.update((job_id, now) for job_id in self._dirty)
                self._dirty = {}
                deletes, self._deletes = self._deletes, []
                self._idle = trio.Event()
                try:
                    await trio.to_thread.run_sync(self._write, events, rows, deletes)
                except Exception:  # disk full, I/O error: the live service goes on, in memory only
                    self.failed_writes += 1
                    log.exception("writing %d events to the event log failed; they are kept in memory only",
                                  len(events))
                finally:
                    self._idle.set()
                for event_log, _, event_id, _, _ in events:
                    await event_log.publish_sliced(event_id)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close)

    def _write(self, events, rows, deletes) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            if events:
                db.executemany("INSERT OR REPLACE INTO events (job_id, id, type, body) VALUES (?, ?, ?, ?)",
                               [(job_id, event_id, event_type, encoded)
                                for _, job_id, event_id, event_type, encoded in events])
            if rows:
                db.executemany("INSERT OR REPLACE INTO jobs (id, created_at, status, ended_at, state) "
                               "VALUES (?, ?, ?, ?, ?)", rows)
            for job_id in deletes:
                db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if deletes:
            db.execute("PRAGMA incremental_vacuum")
