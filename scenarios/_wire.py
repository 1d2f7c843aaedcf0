"""Whose loss: events missing across reconnects, placed on the wire the fault proxy tapped.

A case that follows a stream through the FaultProxy and finds events missing compares, per
connection, what the proxy received from the target, what it forwarded, and what the reader
decoded. An event the proxy forwarded and the reader did not decode, or one the proxy
received and dropped without a cut, is the harness's loss (outcome ``error``, a bug to fix);
one the target never sent, or sent on a connection the harness cut before it went on and
then did not replay, is the target's (``fail``). ``place_missing`` is pure.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from harness import ConnectionWire, Event, Segment, checks

from ._core import Finding, HarnessError, Judge

__all__ = ["Placement", "judge_replay_via_proxy", "pair_connections", "place_missing"]

MISSING = "event missing across reconnects"  # check_replay's wording for a lost event
_EVIDENCE_CONNECTIONS = 50  # the comparison kept in a report: the first and last 25 connections
_IDS_NAMED = 5  # ids named per kind of placement in a reason or evidence
_ENDED_BY = {"cut": "cut by the harness", "client": "closed by the reader", "target": "closed by the target",
             "unreachable": "never connected to the target"}


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where each missing event went."""

    harness_lost: dict[str, str]  # id -> how the harness lost it
    held_at_cut: dict[str, str]  # id -> the cut connection that held it, and the resume that did not bring it
    not_sent: tuple[str, ...]  # on no connection from the target at all
    unknown: dict[str, str]  # id -> why the record cannot place it
    harness_faults: tuple[str, ...]  # the harness's own trouble found while placing (a wrong resume id)

    @property
    def harness_to_blame(self) -> bool:
        return bool(self.harness_lost or self.harness_faults)

    def summary(self) -> dict:
        return {"notSentByTarget": _ids(self.not_sent), "heldAtCutNotReplayed": _ids(list(self.held_at_cut)),
                "lostByHarness": _ids(list(self.harness_lost)), "unplaced": _ids(list(self.unknown))}


def _ids(ids: Sequence[str]) -> dict:
    return {"count": len(ids), "first": list(ids[:_IDS_NAMED])}


def pair_connections(segments: Sequence[Segment], wire: Sequence[ConnectionWire]
                     ) -> list[tuple[Segment, tuple[ConnectionWire, ...]]]:
    """Each of the reader's connections with the proxy connection it went through: the one
    whose client port is the reader's, open during the segment (a kept-alive connection may
    serve several segments). Without ports, the one the proxy accepted during the segment
    (the reader connects one at a time)."""
    pairs = []
    for segment in segments:
        during = [w for w in wire if w.opened_at <= segment.ended_at and
                  (w.closed_at is None or w.closed_at >= segment.started_at)]
        if segment.local_port is not None and any(w.peer_port is not None for w in during):
            conns = tuple(w for w in during if w.peer_port == segment.local_port)
        else:
            conns = tuple(w for w in during if segment.started_at <= w.opened_at)
        pairs.append((segment, conns))
    return pairs


def place_missing(missing: Sequence[str], segments: Sequence[Segment], wire: Sequence[ConnectionWire]) -> Placement:
    """Place each missing id (an id the uninterrupted stream has and the reader's union lacks)."""
    pairs = pair_connections(segments, wire)
    # Per proxy connection: the last of the reader's segments over it (segments are in order).
    over = {conn.number: (conn, segment) for segment, conns in pairs for conn in conns}
    lost: dict[str, str] = {}
    held: dict[str, str] = {}
    unknown: dict[str, str] = {}
    not_sent: list[str] = []
    for wanted in missing:
        how = _harness_loss(wanted, over.values())
        if how:
            lost[wanted] = how
            continue
        carrier = next(((index, conn) for index, (_, conns) in enumerate(pairs) for conn in conns
                        if wanted in conn.received.ids), None)
        if carrier is not None:
            index, conn = carrier
            after = (f"the next connection resumed with Last-Event-ID {segments[index + 1].last_event_id_sent!r} "
                     f"and did not bring it" if index + 1 < len(segments) else "no connection followed")
            ended = _ENDED_BY.get(conn.ended_by, conn.ended_by or "still open")
            held[wanted] = f"sent on connection {conn.number}, which was {ended} before it went on; {after}"
            continue
        blind = _blind_spot(pairs)
        if blind:
            unknown[wanted] = blind
        else:
            not_sent.append(wanted)
    return Placement(lost, held, tuple(not_sent), unknown, tuple(_resume_faults(segments)))


def _harness_loss(wanted: str, over) -> str:
    """How the harness lost an event ("" when it did not): forwarded and not decoded, or
    received from the target and dropped by the proxy though nothing cut the connection."""
    for conn, segment in over:
        forwarded_at = _first_at(conn.forwarded, wanted)
        # Forwarded before the reader left that connection: it was there to read. (The id is
        # missing from every connection the reader had, this one included.)
        if forwarded_at is not None and forwarded_at <= segment.ended_at:
            return (f"connection {conn.number}: the proxy forwarded it to the reader, which did not decode it "
                    f"(the reader's connection ended {segment.end}: {segment.end_detail})")
        if wanted in conn.received.ids and forwarded_at is None and conn.ended_by == "target":
            return (f"connection {conn.number}: the proxy received it from the target and did not forward it, "
                    f"though nothing cut that connection")
        received_at = _first_at(conn.received, wanted)
        if received_at is not None and forwarded_at is None and conn.ended_by == "client" \
                and received_at <= segment.ended_at:
            # The proxy had it while the reader was still on that connection, and no cut came:
            # the harness held it (the reader then left at its own deadline).
            return (f"connection {conn.number}: the proxy received it from the target while the reader was still "
                    f"connected and did not forward it ({conn.forwarded.nbytes} byte(s) forwarded on that connection; "
                    f"the reader's connection ended {segment.end}: {segment.end_detail})")
    return ""


def _first_at(tap, wanted: str) -> float | None:
    for id_, at in zip(tap.ids, tap.at):
        if id_ == wanted:
            return at
    return None


def _resume_faults(segments: Sequence[Segment]) -> list[str]:
    """A reconnect must resume from the last id the reader had committed (EventSource's rule)."""
    faults = []
    carried: str | None = None
    for index, segment in enumerate(segments):
        if index and segment.last_event_id_sent != (carried or None):
            faults.append(f"connection {index + 1} resumed with Last-Event-ID {segment.last_event_id_sent!r}, "
                          f"though the last id the reader had was {carried!r}")
        carried = segment.last_event_id or carried
    return faults


def _blind_spot(pairs) -> str:
    """Why the proxy's record could hide an event the reader decoded there ("" when it cannot)."""
    for number, (segment, conns) in enumerate(pairs, 1):
        if segment.events and not conns:
            return f"the reader's connection {number} has no proxy connection to compare with"
        for conn in conns:
            for tap, side in ((conn.received, "from the target"), (conn.forwarded, "to the reader")):
                if segment.events and (tap.problem or not tap.ids_complete):
                    return (f"the proxy's record of connection {conn.number} ({side}) is incomplete: "
                            f"{tap.problem or 'its id budget ran out'}")
    return ""


def compare_connections(segments: Sequence[Segment], wire: Sequence[ConnectionWire]) -> list[dict]:
    """Per connection, compact: what the target sent, what the proxy forwarded, what the reader decoded."""
    rows = []
    for number, (segment, conns) in enumerate(pair_connections(segments, wire), 1):
        events = segment.events
        reader = {"connection": number, "end": str(segment.end), "lastEventIdSent": segment.last_event_id_sent,
                  "bodyBytes": sum(size for _, size in segment.chunks), "events": len(events),
                  "firstId": events[0].id if events else None, "lastId": events[-1].id if events else None}
        rows.append({"reader": reader, "proxy": [c.summary() for c in conns]})
    if len(rows) > _EVIDENCE_CONNECTIONS:
        half = _EVIDENCE_CONNECTIONS // 2
        rows = rows[:half] + [{"omitted": len(rows) - 2 * half}] + rows[-half:]
    return rows


def judge_replay_via_proxy(judge: Judge, segments: Sequence[Segment], reference: Sequence[Event],
                           wire: Sequence[ConnectionWire]) -> None:
    """check_replay over the reader's connections; events it finds missing are placed on the
    proxy's wire: the harness's loss raises HarnessError, the target's stays a finding that
    says where they went. The per-connection comparison goes into the evidence."""
    received = [e for s in segments for e in s.events]
    findings = checks.check_replay(received, reference)
    judge.evidence["wire"] = compare_connections(segments, wire)
    have = {e.id for e in received}
    missing = [e.id for e in reference if e.id not in have]
    if not missing:
        judge.add(findings)
        return
    placement = place_missing(missing, segments, wire)
    judge.evidence["missingPlaced"] = placement.summary()
    if placement.harness_to_blame:
        why = [f"{id_}: {how}" for id_, how in list(placement.harness_lost.items())[:_IDS_NAMED]]
        raise HarnessError(
            f"harness bug: {len(missing)} event(s) missing across reconnects, and the harness lost "
            f"{len(placement.harness_lost) or 'some of'} them: " + "; ".join([*placement.harness_faults[:2], *why]))
    if placement.unknown:
        first = next(iter(placement.unknown.values()))
        raise HarnessError(f"{len(missing)} event(s) missing across reconnects, and the harness cannot say whose "
                           f"loss {len(placement.unknown)} of them are: {first}")
    connections = len(segments)
    judge.add([_placed(f, placement, connections) for f in findings])


def _placed(finding: Finding, placement: Placement, connections: int) -> Finding:
    if finding.message != MISSING:
        return finding
    where = placement.held_at_cut.get(finding.event_id) or \
        f"the target sent it on none of the {connections} connection(s) (the proxy's record of each)"
    return dataclasses.replace(finding, observed=f"missing: {where}")
