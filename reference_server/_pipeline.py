"""The five stages' real work: text files, narration, images, segments and the final MP4, by ffmpeg."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import wave
from functools import partial
from pathlib import Path
from typing import Awaitable, Callable

import ffmpeg
import trio


class StageFailure(Exception):
    """A stage could not do its work; the job fails with this code and remediation."""

    def __init__(self, code: str, message: str, remediation: list[str]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.remediation = remediation


@contextlib.contextmanager
def single_errors():
    """Re-raise a nursery's lone error as itself, so that callers can catch it by type."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1 and not isinstance(leaves[0], trio.Cancelled):
            raise leaves[0] from None
        raise


def _leaves(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # the wheel's binary is missing or unusable: fall back to PATH
        found = shutil.which("ffmpeg")
        if found is None:
            raise StageFailure(
                "FFMPEG_MISSING",
                "no ffmpeg binary was found",
                ["pip install imageio-ffmpeg", "or install ffmpeg and put it on PATH"],
            ) from None
        return found


@dataclasses.dataclass
class Workspace:
    """What the stages share: the job's folder, its scenes, and its live processes."""

    workdir: Path
    topic: str
    scenes: int
    video_size: str
    video_fps: int
    scene_seconds: float
    pids: set[int]
    spawned: list[int]
    warn: Callable[[str, str], None]
    on_spawn: Callable[[], None] | None = None  # a process started (its pid is recorded durably)
    texts: list[str] = dataclasses.field(default_factory=list)
    durations: list[float] = dataclasses.field(default_factory=list)
    work_done: float = 0.0  # fraction of the current stage's work done, 0..1; never goes back

    def path(self, name: str) -> Path:
        return self.workdir / name

    def progress(self, fraction: float) -> None:
        self.work_done = max(self.work_done, fraction)


# Tools run niced: the event loop that writes every stream's events and keep-alives must not
# wait behind its own ffmpeg children for a core. `nice` execs the tool, so the pid is the tool's.
_NICE = ["nice", "-n", "10"] if shutil.which("nice") else []


async def _kill_now(process: trio.Process) -> None:
    # The contract gives a cancel 1 s in all: no polite SIGTERM grace period.
    process.kill()


async def run_tool(ws: Workspace, args: list[str], *, on_line: Callable[[str], None] | None = None) -> None:
    """Run one tool process inside the caller's cancel scope; cancelling kills and reaps it."""
    with single_errors():
        await _run_tool(ws, args, on_line)


async def _run_tool(ws: Workspace, args: list[str], on_line: Callable[[str], None] | None) -> None:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                _NICE + args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if on_line else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                check=False,
                deliver_cancel=_kill_now,
            )
        )
        ws.pids.add(process.pid)
        ws.spawned.append(process.pid)
        if ws.on_spawn is not None:
            ws.on_spawn()
        stderr_tail = bytearray()

        async def drain_stderr() -> None:
            async for chunk in process.stderr:
                stderr_tail.extend(chunk)
                del stderr_tail[:-4000]  # bounded: only the tail is kept for the message

        nursery.start_soon(drain_stderr)
        try:
            if on_line is not None:
                pending = b""
                async for chunk in process.stdout:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        on_line(line.decode(errors="replace").strip())
            await process.wait()
        finally:
            ws.pids.discard(process.pid)
    if process.returncode != 0:
        last_lines = stderr_tail.decode(errors="replace").strip().splitlines()
        raise StageFailure(
            "TOOL_FAILED",
            f"{Path(args[0]).name} exited with {process.returncode}: {last_lines[-1] if last_lines else ''}",
            ["check the server log for the tool's output", "retry the job"],
        )


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / float(w.getframerate())


async def stage_script(ws: Workspace) -> None:
    ws.texts = [f"Scene {i + 1} of {ws.scenes}: {ws.topic}" for i in range(ws.scenes)]
    await trio.Path(ws.path("script.json")).write_text(json.dumps({"topic": ws.topic, "scenes": ws.texts}))
    ws.progress(1.0)


async def stage_tts(ws: Workspace) -> None:
    exe = ffmpeg_exe()
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        ws.warn("TTS_FALLBACK", "espeak-ng is not installed: narration is a synthesised tone")
    for i, text in enumerate(ws.texts):
        out = ws.path(f"scene{i}.wav")
        if espeak is not None:
            await run_tool(ws, [espeak, "-w", str(out), text])
        else:
            tone = ffmpeg.input(f"sine=frequency={220 + 40 * i}:duration={ws.scene_seconds}", f="lavfi")
            args = tone.output(str(out), ac=1, ar=22050).global_args("-hide_banner", "-nostdin").overwrite_output()
            await run_tool(ws, args.compile(cmd=exe))
        ws.durations.append(await trio.to_thread.run_sync(_wav_seconds, out))
        ws.progress((i + 1) / len(ws.texts))


async def stage_visuals(ws: Workspace) -> None:
    exe = ffmpeg_exe()
    for i, text in enumerate(ws.texts):
        srt = ws.path(f"scene{i}.srt")
        await trio.Path(srt).write_text(f"1\n00:00:00,000 --> 01:00:00,000\n{text}\n")
        colour = ("navy", "darkgreen", "maroon", "indigo")[i % 4]
        image = ffmpeg.input(f"color=c={colour}:s={ws.video_size}", f="lavfi").filter("subtitles", str(srt))
        args = image.output(str(ws.path(f"scene{i}.png")), vframes=1).global_args("-hide_banner", "-nostdin")
        await run_tool(ws, args.overwrite_output().compile(cmd=exe))
        ws.progress((i + 1) / len(ws.texts))


async def stage_compose(ws: Workspace) -> None:
    exe = ffmpeg_exe()
    for i in range(len(ws.texts)):
        picture = ffmpeg.input(str(ws.path(f"scene{i}.png")), loop=1, framerate=ws.video_fps)
        sound = ffmpeg.input(str(ws.path(f"scene{i}.wav")))
        out = ffmpeg.output(
            picture, sound, str(ws.path(f"segment{i}.mp4")),
            t=ws.durations[i], vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p",
            acodec="aac", ar=44100, ac=1, r=ws.video_fps,
        )
        await run_tool(ws, out.global_args("-hide_banner", "-nostdin").overwrite_output().compile(cmd=exe))
        ws.progress((i + 1) / len(ws.texts))


async def stage_render(ws: Workspace) -> None:
    exe = ffmpeg_exe()
    listing = ws.path("segments.txt")
    await trio.Path(listing).write_text("".join(f"file 'segment{i}.mp4'\n" for i in range(len(ws.texts))))
    total_us = max(1.0, sum(ws.durations) * 1_000_000)

    def on_line(line: str) -> None:
        # -progress lines are key=value; out_time_us may read N/A before the first frame.
        key, _, value = line.partition("=")
        if key in ("out_time_us", "out_time_ms") and value.isdigit():
            ws.progress(min(1.0, int(value) / total_us))

    joined = ffmpeg.input(str(listing), f="concat", safe=0)
    out = joined.output(
        str(ws.path("video.mp4")), vcodec="libx264", preset="veryfast", pix_fmt="yuv420p",
        acodec="aac", movflags="+faststart",
    )
    args = out.global_args("-hide_banner", "-nostdin", "-nostats", "-progress", "pipe:1").overwrite_output()
    await run_tool(ws, args.compile(cmd=exe), on_line=on_line)
    ws.progress(1.0)


STAGE_WORK: dict[str, Callable[[Workspace], Awaitable[None]]] = {
    "script": stage_script,
    "tts": stage_tts,
    "visuals": stage_visuals,
    "compose": stage_compose,
    "render": stage_render,
}
