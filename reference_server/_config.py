"""Settings of one reference-server process."""

from __future__ import annotations

import dataclasses
from pathlib import Path

STAGES: tuple[str, ...] = ("script", "tts", "visuals", "compose", "render")
STAGE_RANGES: dict[str, tuple[int, int]] = {
    "script": (0, 15),
    "tts": (15, 35),
    "visuals": (35, 65),
    "compose": (65, 85),
    "render": (85, 100),
}
# Least seconds per stage when the request names none; multiplied by --time-scale.
DEFAULT_STAGE_SECONDS: dict[str, float] = {
    "script": 1.0,
    "tts": 2.0,
    "visuals": 2.0,
    "compose": 2.0,
    "render": 2.0,
}


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./server-data")
    keepalive_seconds: float = 10.0
    retry_ms: int = 1000
    time_scale: float = 1.0
    max_concurrent_jobs: int = 4
    diagnostics: bool = False
    cancel_deadline_ms: int = 1000
    # Seconds between step-progress events while a stage works (contract: at most 0.5).
    progress_interval: float = 0.04
    # Event history is kept at least this long after a job ends.
    retention_seconds: float = 7200.0
    # "sqlite": jobs and events in data_dir/events.db, kept across restarts; "memory": not kept.
    event_log: str = "sqlite"
    # Finished jobs' histories beyond this many bytes in all are removed, oldest first (None: no bound).
    max_log_bytes: int | None = 512 * 1024 * 1024
    # Folders in data_dir/work older than this are a crash's leftovers.
    sweep_age_seconds: float = 24 * 3600.0
    sweep_interval_seconds: float = 3600.0
    # A subscriber is written at most this many bytes in one send (bounds its memory).
    max_write_bytes: int = 64 * 1024
    # A write that waits on its client this long without progress closes the connection.
    stalled_client_seconds: float = 30.0
    # A connection that has not completed a request this long after it opened (or after its
    # last response) is closed: idle sockets and slowloris senders alike.
    idle_connection_seconds: float = 30.0
    # Video geometry: tiny, so that the real ffmpeg work stays cheap.
    video_size: str = "320x180"
    video_fps: int = 10
    scene_seconds: float = 1.0
