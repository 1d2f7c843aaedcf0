"""Jobs and the job manager: one nursery for the server's life, one cancel scope per job."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import trio

from ._config import DEFAULT_STAGE_SECONDS, STAGE_RANGES, STAGES, ServerConfig
from ._eventlog import EventLog, Fanout
from ._pipeline import STAGE_WORK, StageFailure, Workspace, single_errors
from ._store import Store, StoredJob
from ._validation import JobRequest

log = logging.getLogger("reference_server")
TERMINAL = frozenset({"completed", "failed", "canceled"})
STATUSES = ("queued", "running", "canceling", "completed", "failed", "canceled")


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, started: int | None = None) -> bool:
    """Alive and not a zombie; with ``started`` (its start time in clock ticks), also the same process."""
    fields = _proc_stat(pid)
    if fields is None:
        try:
            os.kill(pid, 0)  # no /proc here: ask the kernel
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


def pid_start(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


class Job:
    def __init__(self, request: JobRequest, config: ServerConfig, store: Store | None = None,
                 job_id: str | None = None, history=(), closed: bool = False, fanout: Fanout | None = None) -> None:
        self.id = job_id or secrets.token_urlsafe(16)  # 128 random bits
        self.correlation_id = secrets.token_hex(8)
        self.request = request
        self.config = config
        self.store = store
        sink = store.sink(self.id, self.row) if store is not None else None
        self.log = EventLog(sink, history, closed, fanout)
        self.cancel_scope = trio.CancelScope()
        self.status = "queued"
        self.stage: str | None = None
        self.percent = 0.0
        self.stage_percent = 0.0
        self.message = "waiting for a free worker"
        self.created_at = time.time()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.steps = {s: {"name": s, "status": "pending", "percent": 0.0, "startedAt": None, "endedAt": None} for s in STAGES}
        self.artifacts: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None
        self.workdir: Path | None = None
        self.pids: set[int] = set()
        self.spawned: list[int] = []
        self.pid_starts: dict[int, int] = {}  # pid -> start time: a survivor of a crash is known by both
        self.done = trio.Event()
        self.restored = False  # read back from the durable log at start

    # -- events ---------------------------------------------------------------------------
    def emit(self, event_type: str, terminal: bool = False, **fields: Any) -> None:
        data = {"jobId": self.id, "correlationId": self.correlation_id, **fields}
        self.log.append(event_type, data, terminal=terminal)

    def set_status(self, status: str, message: str) -> None:
        self.status, self.message = status, message
        self.emit("job-status", status=status, stage=self.stage, percent=self.percent, message=message)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    # -- durable state --------------------------------------------------------------------
    def _known_pid_starts(self) -> dict[int, int]:
        for pid in list(self.pids):
            if pid not in self.pid_starts and (start := pid_start(pid)) is not None:
                self.pid_starts[pid] = start
        return self.pid_starts

    def row(self) -> tuple:
        """The job's row in the store: what a restart needs to show it and to clean up after it."""
        state = {
            "correlationId": self.correlation_id, "request": dataclasses.asdict(self.request),
            "status": self.status, "stage": self.stage, "percent": self.percent, "stagePercent": self.stage_percent,
            "message": self.message, "createdAt": self.created_at, "startedAt": self.started_at,
            "endedAt": self.ended_at, "steps": self.steps, "artifacts": self.artifacts, "error": self.error,
            "workdir": str(self.workdir) if self.workdir else None,
            "pids": [[pid, start] for pid, start in self._known_pid_starts().items()],
        }
        return self.id, self.created_at, self.status, self.ended_at, json.dumps(state)

    def changed(self) -> None:
        if self.store is not None:
            self.store.touch(self.id, self.row)

    @classmethod
    def restore(cls, stored: StoredJob, config: ServerConfig, store: Store, fanout: Fanout | None = None) -> "Job":
        state = stored.state
        request = JobRequest(**state["request"])
        job = cls(request, config, store, job_id=stored.id, history=stored.events,
                  closed=state["status"] in TERMINAL, fanout=fanout)
        job.correlation_id = state["correlationId"]
        job.status, job.stage, job.percent = state["status"], state["stage"], state["percent"]
        job.stage_percent, job.message = state["stagePercent"], state["message"]
        job.created_at, job.started_at, job.ended_at = state["createdAt"], state["startedAt"], state["endedAt"]
        job.steps, job.artifacts, job.error = state["steps"], state["artifacts"], state["error"]
        job.workdir = Path(state["workdir"]) if state["workdir"] else None
        job.pid_starts = {int(pid): int(start) for pid, start in state["pids"]}
        job.spawned = list(job.pid_starts)
        job.restored = True
        if job.terminal:
            job.done.set()
        return job

    # -- views ----------------------------------------------------------------------------
    def _elapsed_ms(self) -> int:
        if self.started_at is None:
            return 0
        return int(((self.ended_at or time.time()) - self.started_at) * 1000)

    def eta_ms(self) -> int | None:
        if self.terminal:
            return 0
        left = 0.0
        seen_current = self.stage is None
        for stage in STAGES:
            least = self.request.stage_seconds.get(stage, DEFAULT_STAGE_SECONDS[stage] * self.config.time_scale)
            if stage == self.stage:
                seen_current = True
                left += least * (1 - self.stage_percent / 100)
            elif seen_current:
                left += least
        return int(left * 1000)

    def _steps(self) -> list[dict[str, Any]]:
        out = []
        for step in self.steps.values():
            started, ended = step["startedAt"], step["endedAt"]
            duration = int(((ended or time.time()) - started) * 1000) if started else None
            out.append({**step, "startedAt": iso(started), "endedAt": iso(ended), "durationMs": duration})
        return out

    def snapshot(self) -> dict[str, Any]:
        snap = {
            "jobId": self.id,
            "status": self.status,
            "stage": self.stage,
            "percent": self.percent,
            "message": self.message,
            "correlationId": self.correlation_id,
            "createdAt": iso(self.created_at),
            "startedAt": iso(self.started_at),
            "completedAt": iso(self.ended_at) if self.status == "completed" else None,
            "canceledAt": iso(self.ended_at) if self.status == "canceled" else None,
            "failedAt": iso(self.ended_at) if self.status == "failed" else None,
            "elapsedMs": self._elapsed_ms(),
            "etaMs": self.eta_ms(),
            "lastEventId": self.log.last_id,
            "steps": self._steps(),
            "artifacts": self.artifacts,
            "error": self.error,
        }
        if self.config.diagnostics:
            snap["resources"] = {"workdir": str(self.workdir) if self.workdir else None, "pids": sorted(self.pids)}
        return snap

    def summary(self) -> dict[str, Any]:
        return {"jobId": self.id, "status": self.status, "stage": self.stage, "percent": self.percent,
                "createdAt": iso(self.created_at), "lastEventId": self.log.last_id}

    def progress(self) -> dict[str, Any]:
        return {"jobId": self.id, "status": self.status, "stage": self.stage, "percent": self.percent,
                "stagePercent": self.stage_percent, "elapsedMs": self._elapsed_ms(), "etaMs": self.eta_ms(),
                "steps": self._steps()}


class JobManager:
    """Owns every job's task in one nursery that lives as long as the server."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.jobs: dict[str, Job] = {}
        self._limiter = trio.CapacityLimiter(config.max_concurrent_jobs)
        self._nursery: trio.Nursery | None = None
        self.closing = trio.Event()
        self.work_root = Path(config.data_dir) / "work"
        self.artifact_root = Path(config.data_dir) / "artifacts"
        self.store = Store(Path(config.data_dir) / "events.db") if config.event_log == "sqlite" else None
        self.fanout = Fanout()  # large fan-outs, every job's, under one time budget (see Fanout)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.fanout.run)
            if self.store is not None:
                stored = self.store.open()
                await nursery.start(self.store.run)
                await self._recover(stored)
            nursery.start_soon(self._housekeeping)
            task_status.started()
            await trio.sleep_forever()

    # -- restart recovery -------------------------------------------------------------------
    async def _recover(self, stored: list[StoredJob]) -> None:
        """Jobs from before a restart: finished ones come back as they were; every other one was
        interrupted (or still queued) and fails now, with its survivors killed and its folder
        removed before its terminal event. Its event ids go on from the last one on disk."""
        interrupted = []
        for record in stored:
            try:
                job = Job.restore(record, self.config, self.store, self.fanout)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("job %s in the event log cannot be read back (%s); dropped", record.id, exc)
                self.store.delete(record.id)
                continue
            self.jobs[job.id] = job
            if not job.terminal:
                interrupted.append(job)
        for job in interrupted:
            for pid, started in job.pid_starts.items():
                if pid_alive(pid, started):
                    log.warning("job %s: killing process %d left from before the restart", job.id, pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        with trio.move_on_after(1.0):  # the kernel takes a moment to end a killed process
            while any(pid_alive(p, s) for job in interrupted for p, s in job.pid_starts.items()):
                await trio.sleep(0.01)
        for job in interrupted:
            was = job.status
            if was == "canceling":  # the cancel was asked for before the restart: it is honoured
                self._finish_canceled(job)
                job.done.set()
                continue
            self._finish_failed(job, StageFailure(
                "SERVER_RESTARTED",
                f"the server restarted while the job was {was}; its work was lost",
                ["start the job again"]))
            job.done.set()
        if interrupted:
            log.warning("%d job(s) interrupted by a restart were failed with SERVER_RESTARTED", len(interrupted))
        self._forget_old_jobs()
        await self.store.flushed()

    # -- public operations ----------------------------------------------------------------
    def create(self, request: JobRequest) -> Job:
        if self._nursery is None or self.closing.is_set():
            raise RuntimeError("the job manager is not running")
        job = Job(request, self.config, self.store, fanout=self.fanout)
        self.jobs[job.id] = job
        job.emit("job-status", status="queued", stage=None, percent=0.0, message=job.message)
        self._nursery.start_soon(self._run_job, job)
        return job

    def cancel(self, job: Job) -> None:
        """Ask a job to stop; idempotent while it is not terminal."""
        if job.terminal:
            raise ValueError("terminal")
        if job.status != "canceling":
            job.set_status("canceling", "cancel requested")
        job.cancel_scope.cancel()

    async def shutdown(self, grace: float = 1.2) -> None:
        """Cancel every live job and wait (bounded) for them to clean up and their ends to be on disk."""
        self.closing.set()
        live = [job for job in self.jobs.values() if not job.terminal]
        for job in live:
            if job.status != "canceling":
                job.set_status("canceling", "the server is shutting down")
            self.cancel(job)
        with trio.move_on_after(grace):
            for job in live:
                await job.done.wait()
            await self.fanout.flushed()
            if self.store is not None:
                await self.store.flushed()

    # -- the job's life -------------------------------------------------------------------
    async def _run_job(self, job: Job) -> None:
        failure: StageFailure | None = None
        finished = False
        with job.cancel_scope:
            try:
                with single_errors():
                    async with self._limiter:
                        job.started_at = time.time()
                        job.workdir = self.work_root / job.id
                        job.workdir.mkdir(parents=True)
                        job.set_status("running", "started")
                        await self._pipeline(job)
                        finished = True
            except StageFailure as exc:
                failure = exc
            except Exception as exc:  # a real tool or disk failure, or a bug: this job fails, the server goes on
                log.exception("job %s failed unexpectedly", job.id)
                failure = StageFailure("INTERNAL", f"{type(exc).__name__}: {exc}", ["retry the job", "check the server log"])
        # No await from here to the terminal event: a cancel request either came before
        # (and wins) or comes after the job is terminal (and gets 409).
        try:
            if job.status == "canceling" or (not finished and failure is None):
                self._finish_canceled(job)
            elif failure is not None:
                self._finish_failed(job, failure)
            else:
                try:
                    self._finish_completed(job)
                except OSError as exc:  # publishing the artifact failed
                    self._finish_failed(job, StageFailure("PUBLISH_FAILED", str(exc), ["retry the job"]))
        finally:
            job.done.set()
        if self.config.max_log_bytes is not None:
            self._forget_old_jobs()  # the size bound holds as jobs end, not only hourly

    async def _pipeline(self, job: Job) -> None:
        config = self.config

        def warn(code: str, message: str) -> None:
            job.emit("warning", stage=job.stage, code=code, message=message)

        ws = Workspace(
            workdir=job.workdir, topic=job.request.topic, scenes=job.request.scenes,
            video_size=config.video_size, video_fps=config.video_fps, scene_seconds=config.scene_seconds,
            pids=job.pids, spawned=job.spawned, warn=warn, on_spawn=job.changed,
        )
        for stage in STAGES:
            ws.work_done = 0.0
            await self._stage(job, stage, ws)

    async def _stage(self, job: Job, stage: str, ws: Workspace) -> None:
        low, high = STAGE_RANGES[stage]
        request = job.request
        step = job.steps[stage]
        job.stage, job.stage_percent, job.percent = stage, 0.0, float(low)
        step.update(status="running", startedAt=time.time(), percent=0.0)
        job.emit("step-status", stage=stage, status="running", percent=job.percent)
        least = request.stage_seconds.get(stage, DEFAULT_STAGE_SECONDS[stage] * self.config.time_scale)
        started = trio.current_time()

        def tick() -> None:
            elapsed = trio.current_time() - started
            by_time = 1.0 if least <= 0 else min(1.0, elapsed / least)
            stage_percent = round(100 * min(by_time, ws.work_done), 1)
            job.stage_percent = max(job.stage_percent, stage_percent)
            job.percent = round(low + (high - low) * job.stage_percent / 100, 2)
            step["percent"] = job.stage_percent
            job.message = f"{stage}: {job.stage_percent:.0f}%"
            job.emit("step-progress", stage=stage, stagePercent=job.stage_percent, percent=job.percent,
                     message=job.message, elapsedMs=int(elapsed * 1000), etaMs=job.eta_ms())

        stall = request.stall_seconds.get(stage, 0.0)
        if stall:
            tick()
            await trio.sleep(stall)  # silent on purpose: the stream must carry keep-alives now
            started = trio.current_time()
        if request.warn_at == stage:
            job.emit("warning", stage=stage, code="REQUESTED_WARNING", message=f"warning requested at {stage}")
        if request.fail_at == stage:
            step.update(status="failed", endedAt=time.time())
            raise StageFailure("STAGE_FAILED", f"{stage} failed as requested by failAt",
                               [f"remove failAt={stage} from the request", "retry the job"])

        async def ticker() -> None:
            # A fixed cadence, not "interval after the last tick": a busy loop must not stretch it.
            due = trio.current_time()
            while True:
                tick()
                due = max(due + self.config.progress_interval, trio.current_time())
                await trio.sleep_until(due)

        with single_errors():
            await self._work_while_ticking(stage, ws, ticker, started + least)
        tick()
        step.update(status="succeeded", endedAt=time.time(), percent=100.0)
        job.stage_percent, job.percent = 100.0, float(high)
        job.emit("step-status", stage=stage, status="succeeded", percent=job.percent)

    @staticmethod
    async def _work_while_ticking(stage, ws, ticker, not_before) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await STAGE_WORK[stage](ws)
            ws.progress(1.0)
            await trio.sleep_until(not_before)
            nursery.cancel_scope.cancel()

    # -- endings: each removes the folder and reaps processes before its terminal event -----
    def _cleanup(self, job: Job) -> dict[str, bool]:
        if job.workdir is not None:
            shutil.rmtree(job.workdir, ignore_errors=True)
        return {
            "workdirRemoved": job.workdir is None or not job.workdir.exists(),
            "processesKilled": not any(pid_alive(pid, job.pid_starts.get(pid)) for pid in job.spawned),
        }

    def _close_steps(self, job: Job, status: str) -> None:
        now = time.time()
        for step in job.steps.values():
            if step["status"] == "running":
                step.update(status=status, endedAt=now)
            elif step["status"] == "pending":
                step["status"] = "skipped" if status != "canceled" else "canceled"

    def _finish_canceled(self, job: Job) -> None:
        cleanup = self._cleanup(job)
        self._close_steps(job, "canceled")
        job.ended_at = time.time()
        job.status, job.message = "canceled", "canceled by request"
        job.emit("job-cancelled", terminal=True, status="canceled", stage=job.stage, cleanup=cleanup)

    def _finish_failed(self, job: Job, failure: StageFailure) -> None:
        job.error = {"code": failure.code, "message": failure.message, "stage": job.stage,
                     "remediation": failure.remediation}
        job.emit("error", stage=job.stage, code=failure.code, message=failure.message)
        cleanup = self._cleanup(job)
        self._close_steps(job, "failed")
        job.ended_at = time.time()
        job.status, job.message = "failed", failure.message
        job.emit("job-failed", terminal=True, status="failed", stage=job.stage, error=job.error, cleanup=cleanup)

    def _finish_completed(self, job: Job) -> None:
        target = self.artifact_root / job.id
        target.mkdir(parents=True, exist_ok=True)
        video = target / "video.mp4"
        os.replace(job.workdir / "video.mp4", video)
        self._cleanup(job)
        job.artifacts = [{"name": "video.mp4", "url": f"/api/jobs/{job.id}/artifacts/video.mp4",
                          "sizeBytes": video.stat().st_size, "mimeType": "video/mp4"}]
        job.ended_at = time.time()
        job.status, job.percent, job.stage_percent, job.message = "completed", 100.0, 100.0, "done"
        job.emit("job-completed", terminal=True, status="completed", percent=100.0, artifacts=job.artifacts,
                 durationMs=int((job.ended_at - (job.started_at or job.created_at)) * 1000))

    def artifact_path(self, job: Job, name: str) -> Path | None:
        if not any(a["name"] == name for a in job.artifacts):
            return None
        path = self.artifact_root / job.id / name
        return path if path.is_file() else None

    # -- housekeeping ---------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        last_sweep = -float("inf")
        while True:
            now = trio.current_time()
            if now - last_sweep >= self.config.sweep_interval_seconds:
                await trio.to_thread.run_sync(self.sweep_crash_leftovers)
                last_sweep = now
            self._forget_old_jobs()
            await trio.sleep(min(60.0, self.config.sweep_interval_seconds))

    def sweep_crash_leftovers(self) -> list[str]:
        """Remove work folders older than the sweep age that no live job owns."""
        removed = []
        cutoff = time.time() - self.config.sweep_age_seconds
        live = {job.id for job in self.jobs.values() if not job.terminal}
        for entry in self.work_root.iterdir():
            if entry.name not in live and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed

    def _forget_old_jobs(self) -> list[str]:
        """Retention: finished jobs older than the retention period go, and then the oldest
        finished ones while the log is over its size bound; rows and artifacts together.
        A job still running is never removed."""
        cutoff = time.time() - self.config.retention_seconds
        finished = sorted((job for job in self.jobs.values() if job.terminal and job.ended_at is not None),
                          key=lambda job: job.ended_at)
        doomed = [job for job in finished if job.ended_at < cutoff]
        budget = self.config.max_log_bytes
        if budget is not None:
            total = sum(job.log.size for job in self.jobs.values()) - sum(job.log.size for job in doomed)
            for job in finished[len(doomed):]:
                if total <= budget:
                    break
                doomed.append(job)
                total -= job.log.size
        for job in doomed:
            shutil.rmtree(self.artifact_root / job.id, ignore_errors=True)
            del self.jobs[job.id]
            if self.store is not None:
                self.store.delete(job.id)
        if doomed:
            log.info("retention: removed %d finished job(s) with their history and artifacts", len(doomed))
        return [job.id for job in doomed]
