"""Family 10's recording parts without a browser: the tap between proxy and target (what was asked,
Last-Event-ID included, and what came back, de-chunked and decoded), and a page's observations
turned into events that the same checks judge."""

import httpx

from harness import Decoder
from harness.browser import Observation, PageTrace, Tap, canonical
from scenarios import checks


async def test_the_tap_records_requests_as_sent_and_responses_as_segments(reference_server):
    base = reference_server.base_url
    async with httpx.AsyncClient(timeout=15) as http:
        job = (await http.post(base + "/api/jobs", json={"topic": "tap", "stageSeconds": {"render": 0.1}})).json()
        path = f"/api/jobs/{job['jobId']}/events"
        whole = await http.get(base + path)  # the job to its end, straight from the target
        async with Tap(reference_server.port) as tap:
            tapped = f"http://127.0.0.1:{tap.port}"
            resumed = await http.get(tapped + path, headers={"Last-Event-ID": "5"})
            ended = await http.get(tapped + path, headers={"Last-Event-ID": "100000"})
            page = await http.get(tapped + "/__sse-harness__/probe.html")
    first, second, served = tap.exchanges
    assert first.header("last-event-id") == "5" and first.version == "HTTP/1.1"
    segment = first.segment()
    assert segment.status == 200 and segment.end == "server-closed" and segment.retry_ms is not None
    assert segment.raw == resumed.content  # de-chunked: the body as the client read it
    reference = [e for e in Decoder().feed(whole.content, 0.0) if hasattr(e, "data")]
    assert [e.id for e in segment.events] == [e.id for e in reference[5:]]
    assert second.status == 204 and second.segment().end == "http-status"
    assert page.status_code == 200 and b"EventSource" in page.content and served.target.endswith("probe.html")


def test_a_pages_deliveries_are_judged_like_a_recording():
    raw = b"retry: 200\n\nid: 1\nevent: job-status\ndata: {\"a\":1}\n\nid: 2\nevent: error\ndata: {\"b\":2}\n\n"
    reference = [canonical(e) for e in Decoder().feed(raw, 0.0) if hasattr(e, "data")]
    seen = (
        Observation("ev", 0, 1.0, "OPEN", "job-status", "1", '{"a":1}', True),
        Observation("error", 0, 1.1, "CONNECTING"),
        Observation("ev", 0, 1.1, "CONNECTING", "error", None, None, False),  # the browser's own error
        Observation("ev", 0, 1.5, "OPEN", "error", "2", '{"b":2}', True),
    )
    trace = PageTrace(seen, (), ("/s",), ())
    events = trace.events(0)
    assert [e.id for e in events] == ["1", "2"]  # the plain Event is not an event of the stream
    assert checks.check_replay(events, reference) == [] and checks.check_ids(events) == []
    other = PageTrace(seen[:1] + seen[1:3] + (Observation("ev", 0, 1.5, "OPEN", "error", "2", '{"b":3}', True),),
                      (), ("/s",), ())
    assert [f.message for f in checks.check_replay(other.events(0), reference)] == [
        "replayed event differs from the original"]
