"""problem+json bodies (RFC 9457) for every error the server answers."""

from __future__ import annotations

import json
from http import HTTPStatus

PROBLEM_TYPE = "application/problem+json"


def problem(status: int, detail: str, *, title: str | None = None, **extra: object) -> dict:
    body = {
        "type": f"https://sse-harness.invalid/problems/{status}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return body


def problem_bytes(status: int, detail: str, **extra: object) -> bytes:
    return json.dumps(problem(status, detail, **extra)).encode()
