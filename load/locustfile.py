"""Load test on locust: users that create a job and follow its event stream as a typical Python
consumer does (httpx + httpx-sse), reporting stream metrics to locust.

    pip install -e '.[load]'
    locust -f load/locustfile.py --headless -u 50 -r 10 --run-time 60s --host http://127.0.0.1:8080

Every user is bounded: one job at a time, each stream limited to STREAM_SECONDS, and locust's
--run-time bounds the whole. Target only servers on this host. Reported per job:
"create" (POST), "time to first event", "stream" (whole job, with bytes), "lateness" (receive
time minus the event's ts, for the last event) and failures for gaps in ids or a stream that
ended without a terminal event.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import httpx
from httpx_sse import connect_sse
from locust import User, between, events, task

STREAM_SECONDS = 120.0
TERMINAL = {"job-completed", "job-failed", "job-cancelled"}
JOB = {"topic": "load test", "scenes": 1, "stageSeconds": {"script": 0.5, "tts": 0.5, "visuals": 0.5,
                                                         "compose": 0.5, "render": 0.5}}


@events.test_start.add_listener
def only_this_host(environment, **_):
    host = urlsplit(environment.host or "").hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"load tests run against this host only, not {host!r}")


class StreamUser(User):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.client = httpx.Client(base_url=self.host, timeout=httpx.Timeout(10.0, read=30.0))

    def on_stop(self) -> None:
        self.client.close()

    def _fire(self, name: str, started: float, length: int = 0, error: Exception | None = None,
              response_time: float | None = None) -> None:
        events.request.fire(request_type="SSE", name=name, response_length=length, exception=error, context={},
                            response_time=(time.perf_counter() - started) * 1000 if response_time is None else response_time)

    @task
    def follow_one_job(self) -> None:
        started = time.perf_counter()
        reply = self.client.post("/api/jobs", json=JOB)
        self._fire("create", started, len(reply.content),
                   None if reply.status_code == 202 else RuntimeError(f"HTTP {reply.status_code}"))
        if reply.status_code != 202:
            return
        job_id = reply.json()["jobId"]
        started = time.perf_counter()
        expected, first, size, last_type, lateness = 1, None, 0, None, None
        error: Exception | None = None
        try:
            with connect_sse(self.client, "GET", f"/api/jobs/{job_id}/events") as source:
                for sse in source.iter_sse():
                    if time.perf_counter() - started > STREAM_SECONDS:
                        raise TimeoutError(f"stream still open after {STREAM_SECONDS}s")
                    if not sse.data:
                        continue  # httpx-sse yields blocks without data (retry, keep-alives after an id)
                    if first is None:
                        first = time.perf_counter()
                        self._fire("time to first event", started)
                    size += len(sse.data)
                    if sse.id != str(expected):
                        raise ValueError(f"id {sse.id} where {expected} was due")
                    expected += 1
                    last_type = sse.event
                    ts = json.loads(sse.data).get("ts")
                    if isinstance(ts, (int, float)):
                        lateness = time.time() * 1000 - ts
                    if sse.event in TERMINAL:
                        break
            if last_type not in TERMINAL:
                raise ValueError("stream ended without a terminal event")
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            error = exc
        self._fire("stream", started, size, error)
        if lateness is not None:
            self._fire("lateness", started, 0, None, response_time=lateness)
