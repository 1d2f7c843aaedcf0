"""The peer of benchmarks/load_users.py: a plain locust user that follows job streams as a typical
Python consumer does (httpx + httpx-sse under gevent), measuring lag the same way as
harness.load.SSEUser (every live event: receive time minus ts) and judging nothing.

The same fan-out as the SSE user: a user takes a place on a job another user created, or creates
one with room for --peer-subscribers - 1 more. Bounded: each stream by --peer-job-timeout, the
run by locust's --run-time.
"""

from __future__ import annotations

import collections
import json
import logging
import time

import gevent
import httpx
from gevent.event import AsyncResult
from httpx_sse import connect_sse
from locust import User, between, events, task

logging.getLogger("httpx").setLevel(logging.WARNING)
TERMINAL = {"job-completed", "job-failed", "job-cancelled"}
_board: collections.deque[list] = collections.deque()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--peer-subscribers", type=int, default=1)
    parser.add_argument("--peer-stage-seconds", type=float, default=1.0)
    parser.add_argument("--peer-job-timeout", type=float, default=300.0)


def _take() -> str | None:
    while _board:
        entry = _board[0]
        if entry[1] > 0:
            entry[1] -= 1
            if entry[1] == 0:
                _board.popleft()
            return entry[0]
        _board.popleft()
    return None


class HttpxSseUser(User):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        # verify=False: no CA bundle loaded per user (20-50 ms each, which stalls the spawn); the
        # benchmark target is plain http on loopback anyway.
        self.client = httpx.Client(base_url=self.host, timeout=httpx.Timeout(10.0, read=60.0), verify=False)
        self.fire = self.environment.events.request.fire

    def on_stop(self) -> None:
        self.client.close()

    def _sample(self, name: str, ms: float, length: int = 0, error: Exception | None = None) -> None:
        self.fire(request_type="SSE", name=name, response_time=max(0.0, ms), response_length=length, exception=error,
                  context={})

    @task
    def follow(self) -> None:
        options = self.environment.parsed_options
        started = time.perf_counter()
        place = _take()
        if place is not None:
            try:
                job_id = place.get(timeout=options.peer_job_timeout)
            except gevent.Timeout:
                job_id = None
            if job_id is None:
                return
        else:
            place = AsyncResult()  # offered before the create, as the SSE user does
            if options.peer_subscribers > 1:
                _board.append([place, options.peer_subscribers - 1])
            job_id = None
            try:
                job_id = self._create(options, started)
            finally:
                place.set(job_id)
            if job_id is None:
                return
        self._stream(options, job_id, started)

    def _create(self, options, started: float) -> str | None:
        stages = ("script", "tts", "visuals", "compose", "render")
        body = {"topic": "load peer", "scenes": 1, "stageSeconds": {s: options.peer_stage_seconds for s in stages}}
        reply = self.client.post("/api/jobs", json=body)
        self._sample("create", (time.perf_counter() - started) * 1000, len(reply.content),
                     None if reply.status_code == 202 else RuntimeError(f"HTTP {reply.status_code}"))
        if reply.status_code != 202:
            return None
        return reply.json()["jobId"]

    def _stream(self, options, job_id: str, started: float) -> None:
        requested_ms = time.time() * 1000
        size, error, ended = 0, None, False
        try:
            with connect_sse(self.client, "GET", f"/api/jobs/{job_id}/events") as source:
                for sse in source.iter_sse():
                    if time.perf_counter() - started > options.peer_job_timeout:
                        raise TimeoutError("job timeout")
                    if not sse.data:
                        continue
                    size += len(sse.data)
                    ts = json.loads(sse.data).get("ts")
                    if isinstance(ts, (int, float)) and ts >= requested_ms - 1:
                        # Logged as harness.load.SSEUser logs it (straight into the entry), so that
                        # the comparison is of the stream stacks, not of two ways to count.
                        self.environment.stats.get("lag", "SSE").log(max(0.0, time.time() * 1000 - ts), 0)
                    if sse.event in TERMINAL:
                        ended = True
                        break
            if not ended:
                raise ValueError("stream ended without a terminal event")
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            error = exc
        self._sample("job", (time.perf_counter() - started) * 1000, size, error)
