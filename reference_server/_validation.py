"""Validation of the create-job body: every rejected field is named in the 422."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ._config import STAGES

_TEXT_FIELDS = ("audience", "goal", "tone")
_KNOWN = {"topic", "scenes", "stageSeconds", "stallSeconds", "failAt", "warnAt", *_TEXT_FIELDS}


class InvalidField(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class JobRequest:
    topic: str
    audience: str | None = None
    goal: str | None = None
    tone: str | None = None
    scenes: int = 3
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    stall_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    fail_at: str | None = None
    warn_at: str | None = None


def _text(body: dict, field: str, *, required: bool) -> str | None:
    if field not in body:
        if required:
            raise InvalidField(field, "is required")
        return None
    value = body[field]
    if not isinstance(value, str):
        raise InvalidField(field, "must be a string")
    if not 1 <= len(value) <= 200:
        raise InvalidField(field, "must be 1 to 200 characters")
    return value


def _stage_seconds(body: dict, field: str) -> dict[str, float]:
    value = body.get(field, {})
    if not isinstance(value, dict):
        raise InvalidField(field, "must be an object of stage: seconds")
    out: dict[str, float] = {}
    for stage, seconds in value.items():
        if stage not in STAGES:
            raise InvalidField(f"{field}.{stage}", f"unknown stage; expected one of {', '.join(STAGES)}")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise InvalidField(f"{field}.{stage}", "must be a number")
        if not 0 <= seconds <= 600:
            raise InvalidField(f"{field}.{stage}", "must be between 0 and 600")
        out[stage] = float(seconds)
    return out


def _stage(body: dict, field: str) -> str | None:
    if field not in body or body[field] is None:
        return None
    if body[field] not in STAGES:
        raise InvalidField(field, f"must be one of {', '.join(STAGES)}")
    return body[field]


def parse_job_request(body: dict[str, Any]) -> JobRequest:
    """Validate a decoded JSON object; raise InvalidField naming the first bad field."""
    for key in body:
        if key not in _KNOWN:
            raise InvalidField(key, "unknown field")
    scenes = body.get("scenes", 3)
    if isinstance(scenes, bool) or not isinstance(scenes, int) or not 1 <= scenes <= 20:
        raise InvalidField("scenes", "must be an integer from 1 to 20")
    return JobRequest(
        topic=_text(body, "topic", required=True),
        audience=_text(body, "audience", required=False),
        goal=_text(body, "goal", required=False),
        tone=_text(body, "tone", required=False),
        scenes=scenes,
        stage_seconds=_stage_seconds(body, "stageSeconds"),
        stall_seconds=_stage_seconds(body, "stallSeconds"),
        fail_at=_stage(body, "failAt"),
        warn_at=_stage(body, "warnAt"),
    )
