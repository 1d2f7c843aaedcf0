"""4.3 on a correct server slower than the reference's 25 events a second: it cuts between
the events there are and passes (it skipped below 20 a second before). Its cut pacing is pure."""

from __future__ import annotations

from conftest import RunningServer, reference_args
from harness import load_profile
from harness._runner import run_suite
from scenarios.replay import MAX_CUTS, MAX_EVENTS_PER_CUT, MIN_CUTS, delivery_gap, events_per_cut, required_cuts


def test_the_cuts_follow_the_targets_pace():
    assert delivery_gap([0.0]) is None
    assert delivery_gap([0.0, 0.04, 0.05, 0.12]) == 0.04  # the mean: bunched arrivals do not shrink it
    assert events_per_cut(None) == 1
    assert events_per_cut(0.45) == 1  # a slow target: cut between every pair of events
    assert events_per_cut(0.04) == MAX_EVENTS_PER_CUT  # the reference's pace: a quarter second apart on average
    assert events_per_cut(0.0001) == MAX_EVENTS_PER_CUT
    assert required_cuts(300) == MAX_CUTS  # the reference server: as demanding as ever
    assert required_cuts(25) == 12
    assert required_cuts(MIN_CUTS + 1) == MIN_CUTS


async def test_4_3_runs_and_passes_against_a_correct_server_with_slow_progress():
    # Progress every 0.45 s (the contract asks for 0.5 s): about 4 deliveries a second.
    server = RunningServer(reference_args("--progress-interval", "0.45"))
    try:
        report = await run_suite(load_profile(base_url=server.base_url), only=["4.3"])
    finally:
        server.stop()
    (result,) = report.results
    evidence = result.evidence
    assert result.outcome == "pass", (result.outcome, result.reason, [f.message for f in result.findings][:3],
                                      {k: v for k, v in evidence.items() if k not in ("idTimeline", "wire")})
    assert evidence["deliveriesPerSecond"] < 20  # where it used to skip
    # Every planned cut, or (a busy machine paces the cutter late) at least MIN_CUTS, said in a step.
    assert evidence["cuts"] >= evidence["cutsRequired"] >= MIN_CUTS or (
        evidence["cuts"] >= MIN_CUTS and any("planned cuts landed" in step for step in result.steps)), evidence["cuts"]
    assert all(carried >= 1 for carried in evidence["eventsBeforeEachCut"])  # no connection cut before it delivered
    assert len(evidence["wire"]) == evidence["connections"]


async def test_a_connection_is_not_cut_before_it_delivered_an_event():
    """The harness's cause of a lost run on an independent server: cut as soon as a reconnect
    carried bytes (its head), five reconnects in a row got no event before their cut and the
    reader gave up. Now only a connection that forwarded an event is a candidate for a cut."""
    import time
    from types import SimpleNamespace

    import trio

    from scenarios.replay import PATIENCE_SECONDS, _carrying

    def conn(events: int, opened_ago: float):
        return SimpleNamespace(scope=SimpleNamespace(cancel_called=False), opened_at=time.monotonic() - opened_ago,
                               forwarded=SimpleNamespace(events=events), down_bytes=400)

    done = trio.Event()
    head_only = SimpleNamespace(connections=[conn(0, 5.0)])  # bytes went by, no event
    with trio.move_on_after(0.2) as waited:
        await _carrying(head_only, 1, done)
    assert waited.cancelled_caught  # still waiting: a response head is not a delivery
    done.set()
    assert await _carrying(head_only, 1, done) is None
    delivered = conn(2, PATIENCE_SECONDS + 0.1)
    assert await _carrying(SimpleNamespace(connections=[delivered]), 5, trio.Event()) is delivered
    assert await _carrying(SimpleNamespace(connections=[conn(2, 0.0)]), 2, trio.Event()) is not None
