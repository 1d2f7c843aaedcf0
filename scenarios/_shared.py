"""Recordings and checks that several families use: the lifecycle job, cleanup, the MP4."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable

import trio

from harness import Event, Segment, StreamRequest, checks

from ._core import Context, HarnessError, Judge, Severity, Skip, TargetFault, parse_data


@dataclasses.dataclass(frozen=True)
class Sample:
    sent_at: float
    received_at: float
    snapshot: Any
    progress: Any


@dataclasses.dataclass(frozen=True)
class Lifecycle:
    job_id: str
    segment: Segment
    samples: tuple[Sample, ...]


async def lifecycle(ctx: Context) -> Lifecycle:
    """One job with the profile's default body, watched on one connection from start to end,
    with snapshots and progress sampled while it runs. Recorded once, judged by many cases."""

    async def make() -> Lifecycle:
        job_id = await ctx.create_job()
        samples: list[Sample] = []
        done = trio.Event()

        async def sample() -> None:
            while not done.is_set() and len(samples) < 12:
                await trio.sleep(0.35)
                sent = time.monotonic()
                snap = await ctx.api.snapshot(job_id)
                prog = await ctx.api.progress(job_id)
                samples.append(Sample(sent, time.monotonic(), snap.json if snap.status == 200 else snap.status,
                                      prog.json if prog.status == 200 else prog.status))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            segment = await ctx.watch(job_id, keep_bytes=True)
            done.set()
        if segment.status != 200:
            raise TargetFault(f"the job's stream answered HTTP {segment.status}")
        late = ctx.overdue(segment, "the job's next event, up to its terminal event")
        if late and late[0].severity == Severity.CONFOUNDED:
            # Cut short while the machine starved the target: no case may judge this recording
            # (each is tried again, with a recording of its own).
            raise TargetFault(late[0].message, late[0].expected, late[0].observed, Severity.CONFOUNDED)
        return Lifecycle(job_id, segment, tuple(samples))

    return await ctx.shared("lifecycle", make)


def judge_lateness(ctx: Context, judge: Judge, segment: Segment, values: list[float], *,
                   timestamp_ms: Callable[[Event], float | None] | None = None, basis: str = "") -> None:
    """Delivery not buffered, by each event's own timestamp (``values``: its sorted lateness in
    ms, checks.lateness_ms; ``timestamp_ms``: where the timestamp is, default the contract's ts):
    the figures as evidence, judged against the profile's max lateness net of the machine's
    starvation, and only shown when the target is on another host (clocks differ).
    ``basis``: a step that says what it was judged by."""
    if values:
        judge.evidence["latenessMs"] = {"p50": round(statistics.median(values), 1),
                                        "p95": round(values[int(len(values) * 0.95)], 1),
                                        "max": round(values[-1], 1), "n": len(values)}
    if not ctx.same_host:
        judge.informational = True
        judge.step("target on another host: clocks differ, lateness is shown, not judged")
        return
    limit = ctx.profile.timing["max_lateness_ms"] * ctx.timing_slack
    starvation = ctx.starved()
    judge.evidence["starvation"] = starvation.explained(segment.started_at, segment.ended_at).figures()
    if basis:
        judge.step(basis)
    judge.add(checks.check_lateness(segment, p50_limit_ms=limit, p95_limit_ms=4 * limit, starvation=starvation,
                                    timestamp_ms=timestamp_ms))


# What a browser's EventSource sends (Chromium, Firefox, Safari): the encodings it accepts.
BROWSER_ACCEPT_ENCODING = "gzip, deflate, br"


async def as_a_browser_asks(ctx: Context, request: StreamRequest | None = None) -> Segment:
    """The stream's answer (its head, and what comes in 1.5 s) to a request with a browser's
    Accept-Encoding. The harness's recordings ask for identity, so that they can decode what they
    read; a server that compresses only when asked shows it here (checks.check_compressed_when_asked)."""
    request = request if request is not None else await ctx.open_stream()
    request = dataclasses.replace(request, headers={**request.headers, "Accept-Encoding": BROWSER_ACCEPT_ENCODING})
    return await ctx.record_stream(request, limits=ctx.stream_limits(total=1.5, read=1.5))


async def judge_compressed_when_asked(ctx: Context, judge: Judge, segment: Segment, *, asked: str = "") -> None:
    """The recording (``segment``) asked for identity; when it came so, the stream asked again as
    a browser asks (``as_a_browser_asks``), its answer's encoding judged (``asked``: how a step
    names that request)."""
    if segment.header("content-encoding") not in (None, "identity"):
        return
    reply = await as_a_browser_asks(ctx)
    judge.evidence["asBrowserAsks"] = {"status": reply.status, "contentEncoding": reply.header("content-encoding")}
    judge.step(f"{asked}with Accept-Encoding: {BROWSER_ACCEPT_ENCODING}: HTTP {reply.status}, "
               f"Content-Encoding {reply.header('content-encoding') or 'none'}")
    judge.add(checks.check_compressed_when_asked(reply))


class ResourceWatcher:
    """Polls a job's snapshot for ``resources`` (diagnostics) to learn its folder and pids."""

    def __init__(self, ctx: Context, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.workdirs: set[str] = set()
        self.pids: set[int] = set()
        self.exposed = False

    async def poll_once(self) -> None:
        reply = await self.ctx.api.snapshot(self.job_id)
        resources = reply.json.get("resources") if isinstance(reply.json, dict) else None
        if isinstance(resources, dict):
            self.exposed = True
            if isinstance(resources.get("workdir"), str):
                self.workdirs.add(resources["workdir"])
            self.pids.update(p for p in resources.get("pids") or [] if isinstance(p, int))

    async def run(self, interval: float = 0.1) -> None:
        while True:
            await self.poll_once()
            await trio.sleep(interval)


def _pid_state(pid: int) -> str:
    """'gone', 'zombie' (dead but not reaped) or 'alive'."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return "gone"
    except OSError:
        return "alive"
    return "zombie" if state == "Z" else "alive"


def verify_cleanup(ctx: Context, judge: Judge, watcher: ResourceWatcher | None, cleanup: Any, *,
                   after: str = "after the terminal event", zombie_is_gone: bool = False) -> None:
    """The harness's own check of what the terminal event's ``cleanup`` claims. After a
    restart (``zombie_is_gone``), a dead process left unreaped belongs to whoever inherited it."""
    if isinstance(cleanup, dict):
        judge.evidence["cleanupClaimed"] = cleanup
        judge.expect(cleanup.get("workdirRemoved") is True, "cleanup does not claim the folder removed", True,
                     cleanup.get("workdirRemoved"))
        judge.expect(cleanup.get("processesKilled") is True, "cleanup does not claim the processes killed", True,
                     cleanup.get("processesKilled"))
    elif cleanup is not None:
        judge.fail("cleanup is not an object", {"workdirRemoved": True, "processesKilled": True}, cleanup)
    if watcher is None or not ctx.same_host:
        judge.step("cleanup not checked first-hand: the target is not on this host")
        return
    if not watcher.exposed:
        judge.step("cleanup not checked first-hand: the target shows no resources (diagnostics off)")
        return
    judge.evidence["resourcesSeen"] = {"workdirs": sorted(watcher.workdirs), "pids": sorted(watcher.pids)}
    for workdir in watcher.workdirs:
        judge.expect(not os.path.exists(workdir), f"the job's folder still exists {after}", "removed", workdir)
    for pid in watcher.pids:
        state = _pid_state(pid)
        gone = state == "gone" or (zombie_is_gone and state == "zombie")
        judge.expect(gone, f"process {pid} is {state} {after}", "gone", state)
    judge.step(f"checked first-hand: {len(watcher.workdirs)} folder(s), {len(watcher.pids)} pid(s)")


def ffmpeg_exe() -> str:
    """The ffmpeg that reads artifacts: imageio-ffmpeg's (sse-harness[server]), else one on PATH.
    Skip when there is none: reading the file is the harness's tool, not the target's duty."""
    try:
        import imageio_ffmpeg
    except ImportError:
        found = shutil.which("ffmpeg")
        if found:
            return found
        raise Skip("no ffmpeg to decode the artifact with: needs sse-harness[server] (imageio-ffmpeg) "
                   "or ffmpeg on PATH") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()  # its own binary, else $IMAGEIO_FFMPEG_EXE, else PATH
    except RuntimeError as exc:
        raise Skip(f"no ffmpeg to decode the artifact with: {exc}") from None


async def probe_mp4(data: bytes, exe: str) -> dict[str, Any]:
    """Ask ffmpeg (``exe``, from ffmpeg_exe()) to decode the file: duration and stream kinds, or why it could not."""
    with tempfile.TemporaryDirectory(prefix="sse-harness-mp4-") as folder:
        path = os.path.join(folder, "artifact.mp4")
        await trio.Path(path).write_bytes(data)
        with trio.move_on_after(30) as scope:
            result = await trio.run_process([exe, "-hide_banner", "-nostdin", "-i", path, "-f", "null", "-"],
                                            capture_stdout=True, capture_stderr=True, check=False)
        if scope.cancelled_caught:
            raise HarnessError("ffmpeg took over 30 s to read the artifact")
    text = result.stderr.decode(errors="replace")
    # Only the input's description counts; ffmpeg then describes its (null) output too.
    text_in = text.split("Stream mapping:")[0].split("Output #0")[0]
    duration = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", text)
    seconds = (int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3])) if duration else 0.0
    return {
        "decoded": result.returncode == 0,
        "durationSeconds": seconds,
        "videoStreams": len(re.findall(r"Stream #0:\d+.*?: Video:", text_in)),
        "audioStreams": len(re.findall(r"Stream #0:\d+.*?: Audio:", text_in)),
        "ffmpegTail": text.strip().splitlines()[-3:],
    }


def data_of(events, type_name: str) -> list[dict]:
    return [parse_data(e) or {} for e in events if e.type == type_name]
