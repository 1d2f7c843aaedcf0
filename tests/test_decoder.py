"""The decoder against the WHATWG event-stream rules, byte by byte."""

import random

import pytest

from harness import Comment, Decoder, Event, Notice, Retry, Violation


def decode(data: bytes, chunks=None, **kwargs):
    decoder = Decoder(**kwargs)
    out = []
    if chunks is None:
        chunks = [data]
    for i, chunk in enumerate(chunks):
        out += decoder.feed(chunk, float(i))
    out += decoder.close(99.0)
    return out, decoder


def events(data: bytes, **kwargs):
    return [(e.id, e.type, e.data) for e in decode(data, **kwargs)[0] if isinstance(e, Event)]


# (name, bytes, expected [(id, type, data)])
CASES = [
    ("simple", b"data: a\n\n", [("", "message", "a")]),
    ("typed", b"event: x\ndata: a\n\n", [("", "x", "a")]),
    ("with id", b"id: 7\ndata: a\n\n", [("7", "message", "a")]),
    ("no space after colon", b"data:a\n\n", [("", "message", "a")]),
    ("only one space removed", b"data:  a\n\n", [("", "message", " a")]),
    ("tab is not removed", b"data:\ta\n\n", [("", "message", "\ta")]),
    ("multi data joined by LF", b"data: a\ndata: b\n\n", [("", "message", "a\nb")]),
    ("empty data line counts", b"data\n\n", [("", "message", "")]),
    ("empty data then value", b"data\ndata: x\n\n", [("", "message", "\nx")]),
    ("no data no event", b"event: x\n\n", []),
    ("id only no event", b"id: 3\n\n", []),
    ("id persists", b"id: 3\ndata: a\n\ndata: b\n\n", [("3", "message", "a"), ("3", "message", "b")]),
    ("id reset by empty id", b"id: 3\ndata: a\n\nid\ndata: b\n\n", [("3", "message", "a"), ("", "message", "b")]),
    ("id with NUL ignored", b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", [("1", "message", "a"), ("1", "message", "b")]),
    ("type resets after dispatch", b"event: x\ndata: a\n\ndata: b\n\n", [("", "x", "a"), ("", "message", "b")]),
    ("empty event type is message", b"event:\ndata: a\n\n", [("", "message", "a")]),
    ("CRLF endings", b"data: a\r\n\r\n", [("", "message", "a")]),
    ("CR endings", b"data: a\r\rdata: b\r\r", [("", "message", "a"), ("", "message", "b")]),
    ("mixed endings", b"data: a\r\ndata: b\rdata: c\n\n", [("", "message", "a\nb\nc")]),
    ("comment ignored", b": hi\ndata: a\n\n", [("", "message", "a")]),
    ("comment inside block", b"data: a\n: hi\ndata: b\n\n", [("", "message", "a\nb")]),
    ("unknown field ignored", b"foo: bar\ndata: a\n\n", [("", "message", "a")]),
    ("field name is case sensitive", b"Data: a\n\n", []),
    ("trailing event discarded", b"data: a\n\ndata: b\n", [("", "message", "a")]),
    ("trailing event without newline discarded", b"data: a\n\ndata: b", [("", "message", "a")]),
    ("BOM stripped", b"\xef\xbb\xbfdata: a\n\n", [("", "message", "a")]),
    ("second BOM not stripped", b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n", []),
    ("invalid UTF-8 replaced", b"data: \xff\n\n", [("", "message", "\ufffd")]),
    ("UTF-8 multibyte", "data: é✓\n\n".encode(), [("", "message", "é✓")]),
    ("colon in value kept", b"data: a:b\n\n", [("", "message", "a:b")]),
    ("line with only colon is comment", b":\ndata: a\n\n", [("", "message", "a")]),
    ("retry valid", b"retry: 500\ndata: a\n\n", [("", "message", "a")]),
    ("retry alone makes no event", b"retry: 500\n\n", []),
    ("blank lines alone", b"\n\n\n", []),
    ("data with trailing spaces kept", b"data: a  \n\n", [("", "message", "a  ")]),
    ("event field without colon", b"event\ndata: a\n\n", [("", "message", "a")]),
    ("id with spaces kept", b"id:  5\ndata: a\n\n", [(" 5", "message", "a")]),
    ("two events", b"id: 1\nevent: a\ndata: 1\n\nid: 2\nevent: b\ndata: 2\n\n", [("1", "a", "1"), ("2", "b", "2")]),
    ("JSON data", b'data: {"a": 1}\n\n', [("", "message", '{"a": 1}')]),
    ("space-only field name", b" data: a\n\n", []),
    ("NUL in data kept", b"data: a\x00b\n\n", [("", "message", "a\x00b")]),
    ("CR then LF across no chunk", b"data: a\r\n\r\ndata: b\r\n\r\n", [("", "message", "a"), ("", "message", "b")]),
]


@pytest.mark.parametrize("name,data,expected", CASES, ids=[c[0] for c in CASES])
def test_rules(name, data, expected):
    assert events(data) == expected


@pytest.mark.parametrize("name,data,expected", CASES, ids=[c[0] for c in CASES])
def test_every_chunking_gives_the_same_events(name, data, expected):
    one_by_one = [data[i:i + 1] for i in range(len(data))]
    assert events(data, chunks=one_by_one) == expected
    rng = random.Random(name)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 5)))) if len(data) > 1 else []
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        assert events(data, chunks=chunks) == expected


def test_cr_at_chunk_end_then_lf_is_one_line_end():
    records, decoder = decode(b"", chunks=[b"data: a\r", b"\ndata: b\r", b"\n\r\n"])
    assert [(e.data) for e in records if isinstance(e, Event)] == ["a\nb"]
    assert decoder.line_endings == {"LF": 0, "CRLF": 3, "CR": 0}


def test_bom_split_across_chunks_is_stripped():
    records, _ = decode(b"", chunks=[b"\xef", b"\xbb", b"\xbfdata: a\n\n"])
    assert [e.data for e in records if isinstance(e, Event)] == ["a"]
    assert any(isinstance(r, Notice) and r.kind == "bom" for r in records)


def test_retry_must_be_all_ascii_digits():
    for bad in (b"retry: +5\n", b"retry: 5s\n", b"retry: -1\n", b"retry:\n", "retry: ٣\n".encode(), b"retry: 1.5\n"):
        records, decoder = decode(bad + b"data: a\n\n")
        assert decoder.retry_ms is None, bad
        assert not [r for r in records if isinstance(r, Retry)]
        assert any(isinstance(r, Notice) and r.kind == "retry-invalid" for r in records)
    records, decoder = decode(b"retry: 0250\n\n")
    assert decoder.retry_ms == 250 and [r.ms for r in records if isinstance(r, Retry)] == [250]


def test_comments_are_recorded_with_arrival_times():
    records, _ = decode(b"", chunks=[b": keepalive 1\n\n", b":x\n", b": \n"])
    comments = [(c.text, c.arrived_at) for c in records if isinstance(c, Comment)]
    assert comments == [("keepalive 1", 0.0), ("x", 1.0), ("", 2.0)]


def test_event_times_are_first_line_and_dispatch():
    records, _ = decode(b"", chunks=[b"id: 1\n", b"data: a\n", b"\n"])
    (event,) = [r for r in records if isinstance(r, Event)]
    assert (event.first_arrived_at, event.arrived_at) == (0.0, 2.0)
    assert event.has_id and event.raw == b"id: 1\ndata: a"


def test_notices_for_legal_oddities():
    records, _ = decode(b"\xef\xbb\xbfdata: a\r\nfoo: 1\r\n\r\n")
    kinds = {r.kind for r in records if isinstance(r, Notice)}
    assert {"bom", "crlf", "unknown-field"} <= kinds


def test_partial_event_at_close_is_noticed():
    records, _ = decode(b"id: 1\ndata: a\n")
    assert not [r for r in records if isinstance(r, Event)]
    assert any(isinstance(r, Notice) and r.kind == "partial-event-discarded" for r in records)


def test_long_line_is_a_violation_and_memory_stays_bounded():
    decoder = Decoder(max_line=100)
    out = []
    for _ in range(1000):
        out += decoder.feed(b"x" * 1000, 0.0)
        assert len(decoder._buffer) <= 1100
    out += decoder.feed(b"\ndata: ok\n\n", 1.0)
    violations = [r for r in out if isinstance(r, Violation)]
    assert len(violations) == 1 and violations[0].kind == "line-too-long"
    assert [e.data for e in out if isinstance(e, Event)] == ["ok"]


def test_complete_long_line_in_one_chunk_is_a_violation():
    records, _ = decode(b"data: " + b"y" * 200 + b"\n\ndata: ok\n\n", max_line=100)
    assert [r.kind for r in records if isinstance(r, Violation)] == ["line-too-long"]
    assert [e.data for e in records if isinstance(e, Event)] == ["ok"]


def test_offsets_point_at_the_block():
    data = b"retry: 5\n\nid: 1\ndata: a\n\n"
    records, _ = decode(data)
    (event,) = [r for r in records if isinstance(r, Event)]
    assert data[event.offset:].startswith(b"id: 1")
    records, _ = decode(data, chunks=[data[i:i + 1] for i in range(len(data))])
    (event,) = [r for r in records if isinstance(r, Event)]
    assert data[event.offset:].startswith(b"id: 1")


def test_random_stream_any_chunking_identical_records():
    rng = random.Random(7)
    parts = []
    for i in range(200):
        ending = rng.choice([b"\n", b"\r\n", b"\r"])
        if rng.random() < 0.2:
            parts.append(b": keepalive" + ending)
        parts.append(b"id: %d" % i + ending + b"event: e" + ending + b"data: " + "ü".encode() * rng.randint(0, 5) + ending + ending)
    data = b"\xef\xbb\xbfretry: 100\n" + b"".join(parts)

    def strip(records):
        return [(type(r).__name__, getattr(r, "id", None), getattr(r, "data", getattr(r, "text", None)),
                 getattr(r, "offset", None)) for r in records]

    whole, _ = decode(data)
    for seed in range(10):
        r = random.Random(seed)
        cuts = sorted(r.sample(range(1, len(data)), 300))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        assert strip(decode(data, chunks=chunks)[0]) == strip(whole)
    assert len([r for r in whole if isinstance(r, Event)]) == 200


def test_last_event_id_commits_only_at_the_blank_line():
    # A cut after "id: 2" but before its blank line: a reconnect must still say 1.
    decoder = Decoder()
    decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n", 0.0)
    assert decoder.last_event_id == "1"
    decoder.feed(b"\n", 1.0)
    assert decoder.last_event_id == "2"
    decoder.feed(b"id: 3\n\n", 2.0)  # a block with no data still commits its id (EventSource does)
    assert decoder.last_event_id == "3"


def test_canonical_fast_path_agrees_with_the_line_by_line_path():
    # LF-only streams take a regex fast path for canonical events; record_lines forces the
    # general path. Both must give the same records for any mix and any chunking.
    rng = random.Random(11)
    parts = []
    for i in range(300):
        kind = rng.random()
        if kind < 0.6:
            parts.append(b"id: %d\nevent: e\ndata: {\"n\": %d, \"s\": \"\xc3\xa9\"}\n\n" % (i, i))
        elif kind < 0.7:
            parts.append(b": keepalive\n\n")
        elif kind < 0.8:
            parts.append(b"data: first\nid: %d\nevent: e\ndata: x\n\n" % i)  # id inside an open block
        elif kind < 0.85:
            parts.append(b"id: %d\nevent:\ndata:\n\n" % i)
        elif kind < 0.9:
            parts.append(b"id: 1\x002\nevent: e\ndata: nul id\n\n")
        elif kind < 0.95:
            parts.append(b"id: %d\nevent: e\ndata: \xff bad utf8\n\n" % i)
        else:
            parts.append(b"\n")
    data = b"retry: 5\n\n" + b"".join(parts)

    def strip(records):
        return [(type(r).__name__, getattr(r, "id", None), getattr(r, "type", None),
                 getattr(r, "data", getattr(r, "text", None)), getattr(r, "raw", None), getattr(r, "offset", None),
                 getattr(r, "has_id", None)) for r in records if type(r).__name__ != "Line"]

    general, _ = decode(data, record_lines=True)
    for seed in range(8):
        r = random.Random(seed)
        cuts = sorted(r.sample(range(1, len(data)), 200))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        fast, decoder = decode(data, chunks=chunks)
        assert strip(fast) == strip(general)
    whole, decoder = decode(data)
    assert strip(whole) == strip(general)
    assert decoder.line_endings["LF"] == data.count(b"\n")


def _full(records):
    """Every record's every field but arrival times (and Line, which only one path makes)."""
    return [tuple((f, getattr(r, f)) for f in r.__slots__ if "arrived" not in f)
            for r in records if type(r).__name__ != "Line"]


def test_max_event_is_the_same_on_every_path_and_chunking():
    # The example: whole (the regex fast path), split at byte 10, and with lines recorded.
    data = b"id: 1\nevent: x\ndata: " + b"a" * 200 + b"\n\n" + b"id: 2\nevent: x\ndata: small\n\n"
    whole, decoder = decode(data, max_event=50)
    assert [type(r).__name__ for r in whole] == ["Violation", "Event"]
    assert whole[0].kind == "event-too-large" and whole[1].id == "2"
    assert decoder.last_event_id == "2"
    assert _full(decode(data, chunks=[data[:10], data[10:]], max_event=50)[0]) == _full(whole)
    assert _full(decode(data, record_lines=True, max_event=50)[0]) == _full(whole)


def test_limits_and_violations_agree_on_every_path_and_chunking():
    rng = random.Random(5)
    parts = []
    for i in range(250):
        kind = rng.random()
        if kind < 0.5:
            parts.append(b"id: %d\nevent: e\ndata: " % i + b"x" * rng.choice([1, 10, 60, 90, 140]) + b"\n\n")
        elif kind < 0.6:
            parts.append(b"data: " + b"y" * 40 + b"\ndata: " + b"z" * 40 + b"\nid: %d\n\n" % i)  # too big in two lines
        elif kind < 0.7:
            parts.append(b": " + b"c" * rng.choice([5, 150]) + b"\n")  # a comment, sometimes over max_line
        elif kind < 0.8:
            parts.append(b"event: " + b"t" * 130 + b"\ndata: after a long line\n\n")
        elif kind < 0.9:
            parts.append(b"id: %d\nevent: e\ndata: ok\r\n\r\n" % i)
        else:
            parts.append(b"id: %d\nevent: e\ndata: \xff\n\n" % i)
    data = b"".join(parts)
    limits = {"max_line": 120, "max_event": 100}
    whole, _ = decode(data, **limits)
    lines, _ = decode(data, record_lines=True, **limits)
    assert _full(whole) == _full(lines)
    kinds = {r.kind for r in whole if isinstance(r, Violation)}
    assert kinds == {"event-too-large", "line-too-long"}
    for seed in range(8):
        r = random.Random(seed)
        cuts = sorted(r.sample(range(1, len(data)), 400))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        assert _full(decode(data, chunks=chunks, **limits)[0]) == _full(whole), seed
        assert _full(decode(data, chunks=chunks, record_lines=True, **limits)[0]) == _full(whole), seed
