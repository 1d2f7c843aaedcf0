"""Decode throughput on a 50 MB synthetic stream: our decoder against httpx-sse's, same run.

    python benchmarks/decoder_throughput.py [MEGABYTES]
"""

from __future__ import annotations

import json
import sys
import time

from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from harness import Decoder


def synthetic(megabytes: int) -> list[bytes]:
    event = {"jobId": "abc", "ts": 1, "stage": "render", "stagePercent": 42.5, "percent": 91.2,
             "message": "render: 42%", "elapsedMs": 1234, "etaMs": 999, "correlationId": "ff00"}
    blocks, n = [], 0
    while sum(map(len, blocks)) < megabytes * 1_000_000 // 100:
        n += 1
        blocks.append(f"id: {n}\nevent: step-progress\ndata: {json.dumps(event)}\n\n".encode())
        if n % 50 == 0:
            blocks.append(b": keepalive 2026-01-01T00:00:00Z\n\n")
    chunk = b"".join(blocks)
    whole = chunk * 100
    return [whole[i:i + 16384] for i in range(0, len(whole), 16384)]  # reads of 16 KiB, as from a socket


def ours(chunks: list[bytes]) -> int:
    decoder, count = Decoder(), 0
    for chunk in chunks:
        count += sum(1 for r in decoder.feed(chunk, 0.0) if r.__class__.__name__ == "Event")
    return count


def httpx_sse(chunks: list[bytes]) -> int:
    lines, decoder, count = SSELineDecoder(), SSEDecoder(), 0
    for chunk in chunks:
        for line in lines.decode(chunk.decode("utf-8")):  # httpx's text decoding is part of its cost too
            if decoder.decode(line) is not None:
                count += 1
    return count


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    chunks = synthetic(megabytes)
    size = sum(map(len, chunks)) / 1e6
    results: dict[str, list[float]] = {}
    rounds = [("ours", ours), ("httpx-sse", httpx_sse)] * 3  # alternated: a noisy machine hits both alike
    for name, func in rounds:
        started = time.perf_counter()
        events = func(chunks)
        elapsed = time.perf_counter() - started
        results.setdefault(name, []).append(size / elapsed)
        print(f"{name:<10} {size:.1f} MB in {elapsed:.2f} s = {size / elapsed:6.1f} MB/s ({events} events)")
    best_ours, best_theirs = max(results["ours"]), max(results["httpx-sse"])
    print(f"ratio ours / httpx-sse (best of 3 each): {best_ours / best_theirs:.2f}")


if __name__ == "__main__":
    main()
