"""Whose loss: the proxy's tap of each connection (pure), and missing events placed on it:
the target's `fail` when it never sent them, the harness's `error` when it lost them."""

from __future__ import annotations

import dataclasses

import pytest
from tracebuild import ev, segment

from harness._wiretap import ConnectionWire, IdBudget, StreamTap
from scenarios._core import HarnessError, Judge
from scenarios._wire import judge_replay_via_proxy, place_missing

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(*bodies: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(b), b) for b in bodies)


def tap(wire_bytes: bytes, at: float = 1.0, step: int | None = None, budget: IdBudget | None = None):
    tapped = StreamTap(budget)
    step = step or len(wire_bytes) or 1
    for start in range(0, len(wire_bytes), step):
        tapped.feed(wire_bytes[start:start + step], at)
    return tapped.record()


def events(*ids: int) -> list[bytes]:
    return [ev(n, "job-completed" if n == 6 else "step-progress", stage="render") for n in ids]


# -- the tap ---------------------------------------------------------------------------------

@pytest.mark.parametrize("step", [None, 1, 7, 64])
def test_tap_reads_event_ids_through_chunked_framing_in_any_split(step):
    body = [b"retry: 200\n\n", *events(1, 2, 3)]
    record = tap(HEAD + chunked(*body) + b"0\r\n\r\n", step=step)
    assert (record.status, record.events, record.ids, record.last_id) == (200, 3, ("1", "2", "3"), "3")
    assert record.body == sum(len(b) for b in body)
    assert not record.problem


def test_tap_reads_a_length_delimited_and_a_close_delimited_body():
    body = b"".join(events(1, 2))
    with_length = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    assert tap(with_length).ids == ("1", "2")
    assert tap(b"HTTP/1.0 200 OK\r\n\r\n" + body).ids == ("1", "2")


def test_tap_does_not_decode_a_refusal_and_names_what_it_cannot_read():
    refused = tap(b"HTTP/1.1 503 Busy\r\ncontent-length: 14\r\n\r\nid: 1\ndata: x\n\n")
    assert (refused.status, refused.events) == (503, 0)
    assert "not an HTTP/1.x response" in tap(b"garbage\r\n\r\n").problem
    assert "over" in tap(b"HTTP/1.1 200 OK\r\n" + b"x" * (70 << 10)).problem  # the head buffer is bounded


def test_tap_ids_are_bounded_by_a_shared_budget_but_counts_go_on():
    budget = IdBudget(2)
    first = tap(HEAD + chunked(*events(1, 2, 3)), budget=budget)
    second = tap(HEAD + chunked(*events(4)), budget=budget)
    assert (first.ids, first.ids_complete, first.events, first.last_id) == (("1", "2"), False, 3, "3")
    assert (second.ids, second.events) == ((), 1)


# -- placing missing events ------------------------------------------------------------------

def reader(ids: list[int], *, start: float, port: int, lei: str | None, end: str = "reset") -> object:
    chunks = [(start + 0.01 * (i + 1), data) for i, data in enumerate(events(*ids))]
    seg = segment(chunks, end=end, ended_at=start + 0.5)
    return dataclasses.replace(seg, started_at=start, last_event_id_sent=lei, local_port=port)


def proxied(number: int, *, start: float, port: int, received: list[int], forwarded: list[int],
            ended_by: str = "cut") -> ConnectionWire:
    return ConnectionWire(number, port, start + 0.001, start + 0.5, ended_by,
                          tap(HEAD + chunked(*events(*received)), at=start + 0.1),
                          tap(HEAD + chunked(*events(*forwarded)), at=start + 0.1))


REFERENCE = [e for e in segment([(0.0, b"".join(events(1, 2, 3, 4, 5, 6)))]).events]


def judged(segments, wire) -> Judge:
    judge = Judge()
    judge_replay_via_proxy(judge, segments, REFERENCE, wire)
    return judge


def test_an_event_the_target_never_sent_is_the_targets_fail():
    segments = [reader([1, 2, 3], start=0, port=5001, lei=None), reader([5, 6], start=1, port=5002, lei="3",
                                                                          end="server-closed")]
    wire = [proxied(1, start=0, port=5001, received=[1, 2, 3], forwarded=[1, 2, 3]),
            proxied(2, start=1, port=5002, received=[5, 6], forwarded=[5, 6], ended_by="target")]
    judge = judged(segments, wire)
    missing = [f for f in judge.findings if f.message == "event missing across reconnects"]
    assert [f.event_id for f in missing] == ["4"]
    assert "sent it on none of the 2 connection(s)" in missing[0].observed
    assert judge.evidence["missingPlaced"]["notSentByTarget"] == {"count": 1, "first": ["4"]}
    rows = judge.evidence["wire"]
    assert rows[1]["reader"]["lastEventIdSent"] == "3"
    assert rows[1]["proxy"][0]["fromTarget"]["firstId"] == "5"


def test_an_event_held_at_a_cut_and_not_replayed_is_the_targets_fail():
    segments = [reader([1, 2, 3], start=0, port=5001, lei=None), reader([5, 6], start=1, port=5002, lei="3",
                                                                          end="server-closed")]
    wire = [proxied(1, start=0, port=5001, received=[1, 2, 3, 4], forwarded=[1, 2, 3]),
            proxied(2, start=1, port=5002, received=[5, 6], forwarded=[5, 6], ended_by="target")]
    missing = [f for f in judged(segments, wire).findings if f.message == "event missing across reconnects"]
    assert "sent on connection 1, which was cut by the harness" in missing[0].observed
    assert "resumed with Last-Event-ID '3'" in missing[0].observed


def test_an_event_forwarded_and_not_decoded_is_a_harness_error():
    segments = [reader([1, 2, 3], start=0, port=5001, lei=None), reader([5, 6], start=1, port=5002, lei="3",
                                                                          end="server-closed")]
    wire = [proxied(1, start=0, port=5001, received=[1, 2, 3], forwarded=[1, 2, 3]),
            proxied(2, start=1, port=5002, received=[4, 5, 6], forwarded=[4, 5, 6], ended_by="target")]
    with pytest.raises(HarnessError, match="harness bug.*4: connection 2: the proxy forwarded it to the reader"):
        judged(segments, wire)


def test_an_event_the_proxy_dropped_without_a_cut_is_a_harness_error():
    segments = [reader([1, 2, 3], start=0, port=5001, lei=None, end="server-closed"),
                reader([5, 6], start=1, port=5002, lei="3", end="server-closed")]
    wire = [proxied(1, start=0, port=5001, received=[1, 2, 3, 4], forwarded=[1, 2, 3], ended_by="target"),
            proxied(2, start=1, port=5002, received=[5, 6], forwarded=[5, 6], ended_by="target")]
    placement = place_missing(["4"], segments, wire)
    assert "did not forward it, though nothing cut that connection" in placement.harness_lost["4"]


def test_a_reconnect_that_resumes_past_what_the_reader_had_is_a_harness_error():
    segments = [reader([1, 2, 3], start=0, port=5001, lei=None), reader([5, 6], start=1, port=5002, lei="4",
                                                                          end="server-closed")]
    wire = [proxied(1, start=0, port=5001, received=[1, 2, 3], forwarded=[1, 2, 3]),
            proxied(2, start=1, port=5002, received=[5, 6], forwarded=[5, 6], ended_by="target")]
    with pytest.raises(HarnessError, match="resumed with Last-Event-ID '4', though the last id the reader had was '3'"):
        judged(segments, wire)


def test_a_connection_the_proxy_has_no_record_of_leaves_the_loss_unplaced():
    segments = [reader([1, 2, 3], start=0, port=5001, lei=None), reader([5, 6], start=1, port=5002, lei="3",
                                                                          end="server-closed")]
    wire = [proxied(1, start=0, port=5001, received=[1, 2, 3], forwarded=[1, 2, 3])]
    with pytest.raises(HarnessError, match="cannot say whose loss.*connection 2 has no proxy connection"):
        judged(segments, wire)


def test_nothing_missing_leaves_the_replay_findings_as_they_are():
    segments = [reader([1, 2, 3], start=0, port=5001, lei=None),
                reader([3, 4, 5, 6], start=1, port=5002, lei="3", end="server-closed")]
    wire = [proxied(1, start=0, port=5001, received=[1, 2, 3], forwarded=[1, 2, 3]),
            proxied(2, start=1, port=5002, received=[3, 4, 5, 6], forwarded=[3, 4, 5, 6], ended_by="target")]
    judge = judged(segments, wire)
    assert [f.message for f in judge.findings] == ["duplicate event across reconnects"]
    assert "missingPlaced" not in judge.evidence


def test_segments_pair_by_port_and_a_kept_alive_connection_serves_two():
    first = reader([1, 2, 3], start=0, port=5001, lei=None, end="server-closed")
    second = reader([4, 5, 6], start=1, port=5001, lei="3", end="server-closed")
    kept_alive = dataclasses.replace(proxied(1, start=0, port=5001, received=[1, 2, 3, 4, 5, 6],
                                             forwarded=[1, 2, 3, 4, 5, 6]), closed_at=2.0)
    other = proxied(2, start=1, port=5009, received=[], forwarded=[])  # another client's, meanwhile
    from scenarios._wire import pair_connections
    assert [[w.number for w in conns] for _, conns in pair_connections([first, second], [kept_alive, other])] == [[1], [1]]
