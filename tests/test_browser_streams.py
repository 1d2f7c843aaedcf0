"""The reference server's one stream for several jobs (GET /api/streams), as its web page uses it,
read with the harness's own client (no browser): each job's events as its own stream has them,
resumable by the id vector, 204 at the end, problems for bad asks. And family 10 without a browser."""

import json

import httpx

from harness import load_profile, record
from harness._runner import run_suite

QUICK = {s: 0.1 for s in ("script", "tts", "visuals", "compose", "render")}


def by_job(events):
    out = {}
    for e in events:
        out.setdefault(json.loads(e.data)["jobId"], []).append((e.type, e.data))
    return out


async def test_one_stream_carries_several_jobs_and_resumes_by_vector(reference_server):
    base = reference_server.base_url
    async with httpx.AsyncClient(timeout=15) as http:
        ids = []
        for stages in (QUICK, {**QUICK, "render": 1.0}):
            reply = await http.post(base + "/api/jobs", json={"topic": "multiplexed", "stageSeconds": stages})
            ids.append(reply.json()["jobId"])
        url = f"{base}/api/streams?jobs={','.join(ids)}"
        first = await record(url, client=http, stop=lambda e: len(e.id.split(",")) == 2 and sum(
            int(p) for p in e.id.split(",")) >= 25)
        second = await record(url, client=http, last_event_id=first.last_event_id)
        own = {i: (await record(f"{base}/api/jobs/{i}/events", client=http)).events for i in ids}
        done = await record(url, client=http, last_event_id=second.last_event_id)
        bad = [(await http.get(base + path)).status_code for path in
               ("/api/streams", f"/api/streams?jobs={ids[0]},{ids[0]}", "/api/streams?jobs=nope")]
    assert first.retry_ms is not None and second.status == 200 and second.end == "server-closed"
    got = by_job(first.events + second.events)
    for job_id in ids:  # every job's events once, in order, as its own stream has them
        assert got[job_id] == [(e.type, e.data) for e in own[job_id]]
    vectors = [tuple(int(p) for p in e.id.split(",")) for e in first.events + second.events]
    assert all(sum(b) == sum(a) + 1 and all(y >= x for x, y in zip(a, b)) for a, b in zip(vectors, vectors[1:]))
    assert vectors[-1] == tuple(len(own[i]) for i in ids)
    assert done.status == 204 and bad == [400, 400, 404]


async def test_without_a_browser_family_10_skips_saying_why(reference_server, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SSE_HARNESS_BROWSER", raising=False)
    report = await run_suite(load_profile(base_url=reference_server.base_url), only=["10"])
    assert len(report.results) == 7
    assert {r.outcome for r in report.results} == {"skip"}
    assert all("no browser" in r.reason and "apt-get install chromium" in r.reason for r in report.results)


async def test_a_named_browser_that_is_not_there_is_an_error(reference_server):
    report = await run_suite(load_profile(base_url=reference_server.base_url), only=["10.1"],
                             browser="/nonexistent/chromium")
    assert [(r.outcome, "/nonexistent/chromium" in r.reason) for r in report.results] == [("error", True)]
