"""Restart-family faults (family 11), loaded by server.py: each breaks one promise of restart recovery.

    restart-loses-history   finished jobs come back without their events (snapshot and artifact kept)
    restart-ids-from-1      an interrupted job's events after the restart are numbered from 1 again
    restart-left-running    interrupted jobs are cleaned up but never ended: left "running" forever
    restart-leaves-folder   an interrupted job's folder is left behind, its removal claimed
"""

from __future__ import annotations

import sys

import reference_server._eventlog as eventlog
import reference_server._jobs as jobs
import reference_server._store as store

FAULT = sys.argv[1] if len(sys.argv) > 1 else ""
KNOWN = {"restart-loses-history", "restart-ids-from-1", "restart-left-running", "restart-leaves-folder"}

_original_open = store.Store.open


def _open(self):
    stored = _original_open(self)
    if FAULT == "restart-loses-history":
        stored = [store.StoredJob(s.id, s.state, []) if s.state.get("status") in jobs.TERMINAL else s for s in stored]
    return stored


store.Store.open = _open

_original_restore = jobs.Job.restore.__func__


def _restore(cls, stored, config, job_store, fanout=None):
    job = _original_restore(cls, stored, config, job_store, fanout)
    if FAULT == "restart-ids-from-1" and not job.terminal:
        job.log = eventlog.EventLog(job_store.sink(job.id, job.row), fanout=fanout)  # numbering starts over
    return job


jobs.Job.restore = classmethod(_restore)

_original_finish_failed = jobs.JobManager._finish_failed


def _finish_failed(self, job, failure):
    if FAULT == "restart-left-running" and failure.code == "SERVER_RESTARTED":
        self._cleanup(job)  # cleaned up, but no terminal event and the status stays
        return None
    return _original_finish_failed(self, job, failure)


jobs.JobManager._finish_failed = _finish_failed

_original_cleanup = jobs.JobManager._cleanup


def _cleanup(self, job):
    if FAULT == "restart-leaves-folder" and job.restored:
        return {"workdirRemoved": True, "processesKilled": True}  # and removes nothing
    return _original_cleanup(self, job)


jobs.JobManager._cleanup = _cleanup
