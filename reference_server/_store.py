"""The durable event log: jobs and their events in SQLite (WAL), written as they are appended.

The in-memory ``EventLog`` stays the fast path for live subscribers; this is the truth after a
restart. ``append`` writes the event (and, but for progress ticks, the job's row) in one
transaction before it publishes the event, so a client only ever sees events that are on disk,
and ids after a restart go on from the last one anyone saw.

Where and when: on the loop, at once. In WAL mode with synchronous=NORMAL a commit is a write()
into the WAL, no fsync: 40-70 us on average, measured here. The checkpoint (WAL into the
database, with fsync) is off on this connection and done by a second connection in a worker
thread every second. Two other designs were measured and dropped (docs/reference-server.md):
a writer task that wrote each batch and then published it added a pass of the scheduler to every
event, and with thousands of streams a pass is long (delivery p50 at 4,000 streams 40-50 ms
against 5); writing in a worker thread added two GIL hand-overs and two thread wake-ups per
batch, worse on a busy machine. The price of writing on the loop: when the kernel throttles
writers (a disk under pressure) a commit can take 20-30 ms, and the loop waits.

Deletes (retention) go to the store's task.
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
        self._row_written: dict[str, float] = {}  # job id -> when its row was last written (monotonic)
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
        # Written on the loop; closed perhaps from elsewhere at shutdown: not thread-bound.
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

    # -- on the loop: write now ----------------------------------------------------------------
    def sink(self, job_id: str, row: Callable[[], tuple]):
        """The EventLog sink for one job (``row()`` gives the job's row): writes the event, and
        the job's row with it, before the log publishes the event."""

        def on_append(event_log: EventLog, event_id: int, event_type: str, encoded: bytes) -> None:
            rows = []
            # The row goes with every event but progress ticks (25 a second per job; each row is a
            # page rewritten in the WAL): with those, at most once a second.
            now = time.monotonic()
            if event_type != "step-progress" or now - self._row_written.get(job_id, 0.0) >= 1.0:
                rows.append(row())
                self._row_written[job_id] = now
            self._write_now([(job_id, event_id, event_type, encoded)], rows, ())

        return on_append

    def touch(self, job_id: str, row: Callable[[], tuple]) -> None:
        """The job's state changed without an event (a process started): write its row."""
        self._row_written[job_id] = time.monotonic()
        self._write_now([], [row()], ())

    def delete(self, job_id: str) -> None:
        self._deletes.append(job_id)
        self._row_written.pop(job_id, None)
        self._wake.set()

    def _write_now(self, events, rows, deletes) -> None:
        if self._db is None:
            return
        try:
            self._write(events, rows, deletes)
        except Exception:  # disk full, I/O error: the live service goes on, in memory only
            self.failed_writes += 1
            log.exception("writing to the event log failed; %d event(s) kept in memory only", len(events))

    async def flushed(self) -> None:
        """Return once queued deletes are done."""
        while self._deletes or not self._idle.is_set():
            if self._idle.is_set():
                self._wake.set()
            await self._idle.wait()
            await trio.lowlevel.checkpoint()

    # -- the store's task -----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._checkpoints)
            task_status.started()
            await self._worker()

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

    async def _worker(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                self._idle = trio.Event()
                try:
                    deletes, self._deletes = self._deletes, []
                    if deletes:
                        self._write_now([], [], deletes)
                finally:
                    self._idle.set()
        finally:
            self._close()

    def _write(self, events, rows, deletes) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            if events:
                db.executemany("INSERT OR REPLACE INTO events (job_id, id, type, body) VALUES (?, ?, ?, ?)", events)
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
