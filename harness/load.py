"""Load on locust: a user that creates (or attaches to) jobs, reads their event streams with the
harness's sans-IO Decoder and judges every event with the same invariant rules as the suite.

    from harness.load import SSEUser

    class Followers(SSEUser):          # in your own locustfile
        wait_time = between(0.5, 2)

Run it with ``sse-harness load`` or plain ``locust -f yourfile.py --host URL``. Importing this
module imports locust (and so gevent's monkey patching): never import it from trio code;
``harness`` itself does not.

Request types in locust's statistics (request type ``SSE`` unless said):

- ``create`` (POST) the job; ``connect`` (GET) time to the stream's response headers;
- ``first event`` request sent to the first event; ``lag`` every live event: receive time
  minus its ``ts`` (events replayed from before the request are not lag and are left out);
- ``gap`` time between consecutive events while a stage works; ``job`` create (or attach) to
  the terminal event, with the job's stream bytes as its length, a failure when anything in
  the job failed; ``reconnect`` cut to the resumed stream's headers (its count is the number
  of resumes); ``cancel request`` (POST) and ``cancel`` POST to ``job-cancelled``;
- ``own delay`` (type ``worker``): how late this process's gevent loop woke from a 50 ms sleep,
  i.e. the share of every figure above that is the load generator's own;
- ``target wait`` (type ``worker``, when the target runs on this host and its pid is known):
  its threads' run-queue wait (time ready to run but waiting for a core) in each ~100 ms;
  ``CPU pressure`` (type ``worker``): the machine's, in each ~100 ms (``/proc/pressure/cpu``);
- type ``confounded``: a timing over its limit (``keep-alive silence``, ``not closed after
  terminal``, ``cancel``) by no more than the machine's measured starvation in its window
  explains (the worker's own delay plus the same-host target's wait for a core): not a failure
  of the target; logged with the measured time, and beside it ``<kind> / own delay`` and
  ``<kind> / target wait`` (or ``/ CPU pressure``, the target's pid unknown) with what explained it;
- broken invariants, type ``invariant``, named by ``harness._invariants.KINDS`` (``id gap``,
  ``id repeat``, ``percent regress``, ``stage backwards``, ``other job's event``,
  ``event after terminal``, ``not closed after terminal``, ``keep-alive silence``,
  ``no terminal event`` ...) plus ``bad data`` (data not a JSON object) and decoder
  violations.

On a stream profile (a ``[stream]`` section) the same user reads that stream instead: set-up
requests (``setup <path>``), ``connect`` with the profile's method and body, every event counted
(``event``) and judged by ``harness._invariants.AnyStreamJudge`` (ids when claimed, the end per
the profile's meaning), keep-alive against the claimed interval, ``lag`` by the mapped timestamp,
one cut resumed with Last-Event-ID where replay is claimed (docs/load.md, "Any SSE stream").

The mix comes from the command line (``--sse-*`` options, forwarded by locust to workers).
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any, Callable

import gevent
from locust import FastHttpUser, between, task
from locust.exception import StopUser

from ._client import StreamError
from ._decoder import Decoder, Event, Violation
from ._errors import TargetFault
from ._invariants import (NO_TERMINAL, NOT_CLOSED, AnyStreamJudge, Breach, Excused, StreamJudge, judge_timing,
                          silence_breach)
from ._load_options import option_values
from ._load_plan import PROC_PERIOD, LoadPlan, shared
from ._starvation import Explained
from ._stream_profile import SetupAnswer, SetupFailed, StreamRequest
from ._target import resolve_profile

__all__ = ["InvariantBroken", "LoadPlan", "SSEUser"]

log = logging.getLogger("sse-harness.load")
logging.getLogger("httpx").setLevel(logging.WARNING)

_MAX_BREACHES_PER_JOB = 20
_MAX_LOGGED = 30
_READ_SIZE = 65536
CONFOUNDED_TYPE = "confounded"


class InvariantBroken(TargetFault):
    """What a failure row of type ``invariant`` carries: the rule's message (stable, so that
    locust groups occurrences); the details of the first ones go to the log."""


# -- reading a stream as it arrives -------------------------------------------------------------

def _read_some(stream, timeout: float) -> bytes:
    """The body's bytes as they arrive: at least one byte, b"" at its end; TimeoutError after
    ``timeout`` seconds without any.

    geventhttpclient's own readers either wait for a whole line (readline: unbounded, and blind
    to CR-only line ends, which the event-stream format allows) or for a whole block
    (read(n): buffers); this takes what one recv brings through its C HTTP parser instead.
    """
    buffer = stream._body_buffer
    while not buffer:
        sock = stream._sock
        if sock is None or stream.message_complete:
            return b""
        sock.settimeout(max(0.001, timeout))
        data = sock.recv(_READ_SIZE)
        if not data:
            stream.release()
            return b""
        stream.feed(data)
    data = bytes(buffer)
    del buffer[:]
    return data


class _Job:
    """One subscriber's view of one job, across its connections."""

    __slots__ = ("job_id", "judge", "bytes", "breaches", "failure", "started", "last_id", "cut_at", "cut_done",
                 "cancel_stage", "cancel_sent", "first_event_done", "terminal_type", "connections")

    def __init__(self, plan: LoadPlan, job_id: str | None, started: float) -> None:
        self.job_id = job_id
        self.judge = StreamJudge(plan.profile, job_id)
        self.bytes = 0
        self.breaches = 0
        self.failure: str | None = None  # the first thing that failed in this job
        self.started = started
        self.last_id = ""
        self.cut_at: float | None = None
        self.cut_done = False
        self.cancel_stage: str | None = None
        self.cancel_sent: float | None = None
        self.first_event_done = False
        self.terminal_type: str | None = None
        self.connections = 0


class _Session:
    """One reader's view of a stream profile's stream, across its connections (the fields
    ``SSEUser``'s reporting reads are named as in ``_Job``)."""

    __slots__ = ("job_id", "judge", "bytes", "breaches", "failure", "last_id", "cut_at", "cut_done",
                 "first_event_done", "connections")

    def __init__(self, plan: LoadPlan) -> None:
        self.job_id: str | None = None  # the stream's URL once opened, for the log
        self.judge = AnyStreamJudge(plan.profile)
        self.bytes = 0
        self.breaches = 0
        self.failure: str | None = None
        self.last_id = ""
        self.cut_at: float | None = None
        self.cut_done = False
        self.first_event_done = False
        self.connections = 0


class SSEUser(FastHttpUser):
    """Follows job streams: create a job (or take a place on one another user created, or
    attach to ``--sse-job-id`` / ``--sse-stream-url``), read the stream, judge every event,
    cancel or cut-and-resume as the mix says. Bounded: each job by the job timeout, each
    user by ``--sse-jobs-per-user``, the run by locust's ``--run-time``."""

    abstract = True
    wait_time = between(0.2, 1.0)
    connection_timeout = 10.0
    network_timeout = 30.0

    def __init__(self, environment) -> None:
        if not self.host:
            self.host = resolve_profile(option_values(environment.parsed_options)["profile"]).base_url
        super().__init__(environment)
        self._jobs_done = 0
        self._fire = environment.events.request.fire

    # -- reporting -----------------------------------------------------------------------------
    def _sample(self, name: str, ms: float, length: int = 0, error: Exception | None = None) -> None:
        self._fire(request_type="SSE", name=name, response_time=max(0.0, ms), response_length=length,
                   exception=error, context={})

    def _measure(self, name: str, ms: float) -> None:
        """A per-event measurement (lag, gap): logged straight into its statistics entry, which
        is what workers report to the master too. Not through the request event: that costs
        twice as much per event, and these samples are not requests, so they stay out of the
        Aggregated row."""
        self.environment.stats.get(name, "SSE").log(ms if ms > 0 else 0.0, 0)

    def _breach(self, job: _Job, breach: Breach) -> None:
        job.breaches += 1
        if job.failure is None:
            job.failure = breach.kind
        if job.breaches > _MAX_BREACHES_PER_JOB:
            return
        self._fire(request_type="invariant", name=breach.kind, response_time=0, response_length=0,
                   exception=InvariantBroken(breach.message), context={})
        if shared.logged < _MAX_LOGGED:
            shared.logged += 1
            log.warning("%s in job %s: %s (expected %r, observed %r%s)", breach.kind, job.job_id, breach.message,
                        breach.expected, breach.observed, f", event {breach.event_id}" if breach.event_id else "")

    def _other_failure(self, job: _Job, name: str, message: str) -> None:
        job.breaches += 1
        if job.failure is None:
            job.failure = name
        if job.breaches > _MAX_BREACHES_PER_JOB:
            return
        self._fire(request_type="invariant", name=name, response_time=0, response_length=0,
                   exception=InvariantBroken(message), context={})

    # -- the task ----------------------------------------------------------------------------------
    @task
    def follow_job(self) -> None:
        if self._jobs_done >= self._plan().jobs_per_user:
            raise StopUser()
        self._jobs_done += 1
        plan = self._plan()
        if plan.profile.kind == "stream":
            self._follow_stream(plan)
            return
        profile = plan.profile
        started = time.perf_counter()
        if plan.stream_url:
            job, url, created = _Job(plan, None, started), plan.stream_url, False
        else:
            job_id: str | None = plan.job_id
            created = False
            if not job_id:
                place = shared.take_place()
                if place is not None:
                    try:
                        job_id = place.get(timeout=plan.job_timeout)  # None: its creation failed
                    except gevent.Timeout:
                        job_id = None
                    if job_id is None:
                        return
                    started = time.perf_counter()
                else:
                    created = True
                    places = shared.open_places(plan.subscribers - 1)
                    try:
                        job_id = self._create(plan)
                    finally:
                        places.set(job_id)
                    if job_id is None:
                        return
            job, url = _Job(plan, job_id, started), profile.paths["events"].format(id=job_id)
        if created and random.random() < plan.cancel_share:
            job.cancel_stage = random.choice(profile.stages)
        if random.random() < plan.cut_share:
            job.cut_at = 0.0  # set when the first connection is up
        deadline = started + plan.job_timeout
        self._followed(job, started, lambda: self._follow(plan, job, url, deadline))

    def _followed(self, reader: _Job | _Session, started: float, follow: Callable[[], None]) -> None:
        """``follow()`` the reader's stream, then its ``job`` sample: failed by the stream's loss
        (StreamError) or by the first breach it saw."""
        error: Exception | None = None
        try:
            follow()
        except StreamError as exc:
            error = exc
            if reader.failure is None:
                reader.failure = str(exc)
        if error is None and reader.failure is not None:
            error = InvariantBroken(reader.failure)
        self._sample("job", (time.perf_counter() - started) * 1000, reader.bytes, error)

    def _plan(self) -> LoadPlan:
        return shared.plan_for(self)

    def _create(self, plan: LoadPlan) -> str | None:
        profile = plan.profile
        with self.client.post(profile.paths["create"], json=plan.job_body, name="create", headers=profile.headers(),
                              catch_response=True) as reply:
            if reply.status_code // 100 != 2:
                reply.failure(f"HTTP {reply.status_code}: {(reply.text or '')[:200]}")
                return None
            try:
                value = reply.json()
            except ValueError:
                value = None
            job_id = value.get("jobId") if isinstance(value, dict) else None
            if not isinstance(job_id, str) or not job_id:
                reply.failure("the reply names no jobId")
                return None
            return job_id

    def _cancel(self, plan: LoadPlan, job: _Job) -> None:
        profile = plan.profile
        job.cancel_sent = time.perf_counter()
        with self.client.post(profile.paths["cancel"].format(id=job.job_id), name="cancel request",
                              headers=profile.headers(), catch_response=True) as reply:
            if reply.status_code == 409:
                reply.success()  # the job ended first: nothing to time
                job.cancel_sent = None
            elif reply.status_code // 100 != 2:
                reply.failure(f"HTTP {reply.status_code}")
                job.cancel_sent = None

    def _follow(self, plan: LoadPlan, job: _Job, url: str, deadline: float) -> None:
        """Connections until the job's end: the first, and one resume after a cut."""
        self._resuming(plan, lambda resume_from: self._connect(
            plan, job, lambda headers: self.client.get(url, stream=True, name="connect", headers=headers),
            plan.profile.headers(), resume_from,
            lambda stream, requested, requested_wall_ms: self._read(plan, job, stream, requested, requested_wall_ms,
                                                                    deadline)))

    def _resuming(self, plan: LoadPlan, connection: Callable[[float | None], str]) -> None:
        """``connection(resume_from)`` again after each cut ("cut": when the cut was), until "done"."""
        resume_from: float | None = None
        while connection(resume_from) == "cut":
            resume_from = time.perf_counter()
            gevent.sleep(plan.retry_seconds)  # as an EventSource waits its retry before resuming

    def _connect(self, plan: LoadPlan, reader: _Job | _Session, send: Callable[[dict[str, str]], Any],
                 headers: dict[str, str], resume_from: float | None,
                 read: Callable[[Any, float, float], str]) -> str:
        """One connection, a job's or any stream's: ``send(headers)`` asks for the stream (with
        the reader's Last-Event-ID), ``read(stream, requested, requested_wall_ms)`` reads it;
        returns "cut" when this user cut it to resume, else "done"."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "Accept-Encoding": "identity",
                   **headers}
        if reader.last_id:
            headers["Last-Event-ID"] = reader.last_id
        requested = time.perf_counter()
        requested_wall_ms = time.time() * 1000
        reply = send(headers)
        reader.connections += 1
        if resume_from is not None and reply.status_code in (200, 204):
            self._sample("reconnect", (time.perf_counter() - resume_from) * 1000)
        if reply.status_code == 204:  # "finished": judged as the end of the stream it resumes (we hold its last event)
            if reply.stream is not None:
                reply.stream.release()
            if reader.judge.terminal is None:
                raise StreamError("HTTP 204 on a stream the profile says never ends")
            self._judge_end(plan, reader, server_closed=True, ended_at=time.perf_counter(), how="204")
            return "done"
        if reply.status_code != 200:
            raise StreamError(f"connect: HTTP {reply.status_code}")  # locust counted it under "connect"
        stream = reply.stream
        try:
            return read(stream, requested, requested_wall_ms)
        finally:
            stream.release()  # closes the socket unless the response ended cleanly

    def _read(self, plan: LoadPlan, job: _Job, stream, requested: float, requested_wall_ms: float,
              deadline: float) -> str:
        """A job's stream (``_read_events``): every event a JSON object judged by the contract,
        its lag by its ts while live, the gap between live events while the job works, the
        cancel sent at its stage and judged by its terminal event."""
        profile = plan.profile
        judge = job.judge
        cancelled_type = profile.events["cancelled"]
        step_status = profile.events["step_status"]
        progress_type = profile.events["progress"]
        terminal_types = profile.terminal_events
        working = False
        previous_live: float | None = None
        loads = json.loads
        sample, measure = self._sample, self._measure

        def on_event(event: Event, now: float, wall_ms: float, ended: bool) -> bool:
            nonlocal working, previous_live
            try:
                value = loads(event.data)
            except ValueError:
                value = None
            job.last_id = event.id
            if type(value) is not dict:
                self._other_failure(job, "bad data", "data is not a JSON object")
                judge.ids.see(event)
                judge.terminal.see(event)
                return False
            found = judge.see(event, value)
            if found:
                for breach in found:
                    self._breach(job, breach)
            ts = value.get("ts")
            live = type(ts) in (int, float) and ts >= requested_wall_ms - 1
            if live:
                measure("lag", wall_ms - ts)
            if not job.first_event_done:
                job.first_event_done = True
                sample("first event", (now - requested) * 1000)
            kind = event.type
            if working and live and previous_live is not None:
                measure("gap", (now - previous_live) * 1000)
            previous_live = now if live else None
            if kind == step_status:
                working = value.get("status") == "running"
            elif kind == progress_type:
                working = True
            if kind in terminal_types:
                working = False
                if not ended:
                    job.terminal_type = kind
                    if kind == cancelled_type and job.cancel_sent is not None:
                        self._judge_cancel(plan, job, now)
                    return True
            elif job.cancel_stage is not None and value.get("stage") == job.cancel_stage:
                job.cancel_stage = None
                self._cancel(plan, job)
            return False

        return self._read_events(plan, job, stream, deadline, time.perf_counter(), on_event, lambda: Breach(
            NO_TERMINAL, "no terminal event", f"within {plan.job_timeout:.0f}s", job.terminal_type))

    def _read_events(self, plan: LoadPlan, reader: _Job | _Session, stream, deadline: float, connected: float,
                     on_event: Callable[[Event, float, float, bool], bool],
                     no_end: Callable[[], Breach] | None) -> str:
        """One connection's reading, the same for a job's stream and any stream: the bytes as
        they arrive, decoded, each event given to ``on_event(event, now, wall_ms, ended)``
        (``ended``: the stream's end already seen; it returns True when this event is that end);
        keep-alive silence against the plan's limit; the response held open after the end; this
        reader's cut; the deadline, with ``no_end()``'s breach when the end has not come by then
        (None: a stream that never ends, followed until the deadline). Returns "cut" when this
        user cut it to resume, else "done"."""
        ends = no_end is not None
        limit = plan.keepalive_limit
        last_arrival = connected
        if reader.cut_at == 0.0:
            reader.cut_at = connected + random.uniform(0.05, plan.cut_within)
        cut_at = reader.cut_at if not reader.cut_done else None
        silence_told = False
        silence_due = last_arrival + limit + 0.05  # when the silence so far is judged next
        terminal_at: float | None = None
        close_due = 0.0  # after the end: when an open response is judged next
        decoder = Decoder()
        try:
            while True:
                now = time.perf_counter()
                wait = deadline - now
                if terminal_at is not None:
                    wait = min(wait, close_due - now)
                elif cut_at is not None:
                    wait = min(wait, cut_at - now)
                if limit and not silence_told:
                    wait = min(wait, silence_due - now)
                try:
                    data = _read_some(stream, wait)
                except TimeoutError:
                    now = time.perf_counter()
                    if terminal_at is not None and now >= close_due:
                        again = self._still_open(plan, reader, terminal_at, now, deadline)
                        if again is None:
                            return "done"
                        close_due = again
                        continue
                    if cut_at is not None and terminal_at is None and now >= cut_at:
                        reader.cut_done = True
                        return "cut"
                    if now >= deadline:
                        if no_end is not None:
                            self._breach(reader, no_end())
                        return "done"  # a stream that never ends: followed for its session
                    if limit and not silence_told and now >= silence_due:
                        silence_told, silence_due = self._silence(reader, plan, last_arrival, now, connected,
                                                                  ongoing=True)
                    continue
                except OSError as exc:
                    if terminal_at is not None:
                        self._judge_end(plan, reader, server_closed=True, ended_at=time.perf_counter())
                        return "done"
                    raise StreamError(f"stream lost: {exc!r}") from None
                now = time.perf_counter()
                if not data:
                    if not ends:
                        raise StreamError("the server ended a stream the profile says never ends")
                    self._judge_end(plan, reader, server_closed=True, ended_at=now)
                    return "done"
                reader.bytes += len(data)
                if limit and not silence_told and now - last_arrival > limit:
                    silence_told, _ = self._silence(reader, plan, last_arrival, now, connected, ongoing=False)
                last_arrival = now
                silence_due = now + limit + 0.05
                wall_ms = time.time() * 1000
                for record in decoder.feed(data, now):
                    if type(record) is not Event:
                        if type(record) is Violation:
                            self._other_failure(reader, record.kind, record.detail)
                        continue
                    if on_event(record, now, wall_ms, terminal_at is not None) and terminal_at is None:
                        terminal_at = now
                        close_due = now + plan.close_within
                if cut_at is not None and terminal_at is None and time.perf_counter() >= cut_at:
                    reader.cut_done = True
                    return "cut"
        finally:
            for record in decoder.close(time.perf_counter()):
                if type(record) is Violation:
                    self._other_failure(reader, record.kind, record.detail)

    def _still_open(self, plan: LoadPlan, job: _Job | _Session, terminal_at: float, now: float,
                    deadline: float) -> float | None:
        """The response still open after the terminal event: the target's, unless the machine's
        starvation since that event explains the wait so far; then returns when to judge again
        (None: judged, the connection is done)."""
        open_for = now - terminal_at
        explained = shared.starvation(terminal_at, now)
        verdict = judge_timing(NOT_CLOSED, "", measured=open_for, limit=plan.close_within, explained=explained.total)
        if isinstance(verdict, Excused) and now < deadline:
            return max(now + PROC_PERIOD, terminal_at + plan.close_within + explained.total)
        self._judge_end(plan, job, server_closed=False, ended_at=now,
                        how=f"still open {open_for:.2f}s after the terminal event; "
                            f"{explained.describe()}: not enough to explain it")
        return None

    def _timed(self, job: _Job, verdict: Breach | Excused | None, explained: Explained) -> None:
        """A timing's verdict: the target's breach, or one the machine's starvation explains,
        counted apart (type ``confounded``) with what explained it, never a failure of the target."""
        if isinstance(verdict, Breach):
            self._breach(job, verdict)
        elif isinstance(verdict, Excused):
            stats = self.environment.stats
            stats.get(verdict.kind, CONFOUNDED_TYPE).log(verdict.measured * 1000, 0)
            stats.get(f"{verdict.kind} / own delay", CONFOUNDED_TYPE).log(explained.own * 1000, 0)
            other = explained.process if explained.process_known else explained.machine
            if other is not None:
                source = "target wait" if explained.process_known else "CPU pressure"
                stats.get(f"{verdict.kind} / {source}", CONFOUNDED_TYPE).log(other * 1000, 0)
            if shared.logged < _MAX_LOGGED:
                shared.logged += 1
                log.info("%s of %.2fs (limit %.2fs) not the target's: %s", verdict.kind, verdict.measured,
                         verdict.limit, explained.describe())

    def _silence(self, job: _Job, plan: LoadPlan, began: float, now: float, connected: float, *,
                 ongoing: bool) -> tuple[bool, float]:
        """Judges a silence since ``began``: still going on (``ongoing``) or ended by bytes at
        ``now``. Returns whether a breach was told, and when to judge an ongoing one again (once
        the starvation measured so far can no longer explain it)."""
        limit = plan.keepalive_limit
        explained = shared.starvation(began, now)
        verdict = silence_breach(now - began, began, interval=limit, tolerance=0.0, own=explained.total,
                                 since_start=began - connected, starvation=explained.describe())
        if ongoing and isinstance(verdict, Excused):
            return False, max(now + PROC_PERIOD, began + limit + explained.total + 0.05)
        self._timed(job, verdict, explained)
        return isinstance(verdict, Breach), max(now + PROC_PERIOD, began + limit + 0.05)

    def _judge_cancel(self, plan: LoadPlan, job: _Job, now: float) -> None:
        """POST to ``job-cancelled`` against the cancel deadline, net of the machine's starvation."""
        took = now - job.cancel_sent
        job.cancel_sent = None
        late = None
        if took > plan.cancel_limit:
            explained = shared.starvation(now - took, now)
            verdict = judge_timing("cancel", "", measured=took, limit=plan.cancel_limit, explained=explained.total)
            if isinstance(verdict, Excused):
                self._timed(job, verdict, explained)
            else:
                late = InvariantBroken(f"job-cancelled later than the cancel deadline "
                                       f"({plan.cancel_deadline * 1000:.0f} ms)")
        self._sample("cancel", took * 1000, 0, late)

    def _judge_end(self, plan: LoadPlan, job: _Job, *, server_closed: bool, ended_at: float, how: str = "") -> None:
        terminal = job.judge.terminal.terminal
        for breach in job.judge.terminal.end(server_closed=server_closed, ended_at=ended_at,
                                             close_within=plan.close_within, how=how):
            if breach.kind == NOT_CLOSED and server_closed and terminal is not None:
                # Closed late, as we read it: the machine may have added to that.
                waited = ended_at - terminal.arrived_at
                explained = shared.starvation(terminal.arrived_at, ended_at)
                self._timed(job, judge_timing(NOT_CLOSED, breach.message, measured=waited, limit=plan.close_within,
                                              explained=explained.total, starvation=explained.describe(),
                                              expected=breach.expected, observed=breach.observed,
                                              event_id=breach.event_id), explained)
                continue
            self._breach(job, breach)


    # -- a stream profile's stream ------------------------------------------------------------------
    def _follow_stream(self, plan: LoadPlan) -> None:
        """One reader of a stream profile's stream: set-up requests, the stream, and (where the
        profile claims replay) one cut resumed with Last-Event-ID; to its end, or for
        ``--sse-session-seconds`` when it never ends by itself."""
        started = time.perf_counter()
        request = self._open_stream(plan)
        if request is None:
            return  # the set-up request's failure is counted in its own row
        session = _Session(plan)
        session.job_id = request.url
        if random.random() < plan.cut_share:
            session.cut_at = 0.0  # set when the first connection is up
        ends = session.judge.terminal is not None
        deadline = started + (plan.job_timeout if ends else plan.session_seconds)
        self._followed(session, started, lambda: self._resuming(plan, lambda resume_from: self._connect(
            plan, session, lambda headers: self.client.request(request.method, request.url, name="connect",
                                                               data=request.content, headers=headers, stream=True),
            request.headers, resume_from,
            lambda stream, requested, requested_wall_ms: self._read_stream(plan, session, stream, requested,
                                                                           requested_wall_ms, deadline))))

    def _open_stream(self, plan: LoadPlan) -> StreamRequest | None:
        """The profile's set-up requests (the same sans-IO steps ``run`` takes, sent with
        locust's client, each counted as ``setup <path>``), then the stream's request; None when
        a set-up request failed (the target's: its row says why)."""
        profile = plan.profile
        spec = profile.stream
        steps = spec.opening(profile.base_url, profile.headers())
        captured: dict[str, str] = {}
        try:
            call = next(steps)
        except StopIteration as done:
            call, captured = None, done.value
        while call is not None:
            with self.client.request(call.method, call.url, name=f"setup {call.path}", data=call.content,
                                     headers=call.headers, catch_response=True) as reply:
                status = reply.status_code or 0
                answer = SetupAnswer(status, dict(reply.headers or {}) if status else {},
                                     (reply.content or b"") if status else b"")
                try:
                    call = steps.send(answer)
                except StopIteration as done:
                    call, captured = None, done.value
                except SetupFailed as exc:
                    reply.failure(str(exc))
                    return None
        return spec.request(profile.base_url, profile.headers(), captured)

    def _read_stream(self, plan: LoadPlan, session: _Session, stream, requested: float, requested_wall_ms: float,
                     deadline: float) -> str:
        """Any stream (``_read_events``): every event judged by the profile's claims and meaning
        (ids, the end), lag by the mapped timestamp, every event counted (``event``: time since
        the one before)."""
        meaning = plan.profile.meaning
        judge = session.judge
        ends = judge.terminal is not None
        connected = previous_event = time.perf_counter()

        def on_event(event: Event, now: float, wall_ms: float, ended: bool) -> bool:
            nonlocal previous_event
            if event.id:
                session.last_id = event.id
            for breach in judge.see(event):
                self._breach(session, breach)
            self._measure("event", (now - previous_event) * 1000)
            previous_event = now
            if not session.first_event_done:
                session.first_event_done = True
                self._sample("first event", (now - requested) * 1000)
            stamp = meaning.timestamp_ms(event)
            if stamp is not None and stamp >= requested_wall_ms - 1:  # live, not replayed history
                self._measure("lag", wall_ms - stamp)
            return ends and not ended and judge.terminal.terminal is not None

        no_end = (lambda: Breach(NO_TERMINAL, "no end of the stream", f"within {plan.job_timeout:.0f}s",
                                 list(meaning.end_names))) if ends else None
        return self._read_events(plan, session, stream, deadline, connected, on_event, no_end)
