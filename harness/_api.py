"""A small async client for a target's REST endpoints, built on its profile."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import trio

from ._profile import Profile

__all__ = ["ApiClient", "Reply"]


@dataclasses.dataclass(frozen=True)
class Reply:
    """An HTTP answer as observed: status, headers, body and the body as JSON when it is."""

    status: int
    headers: dict[str, str]
    body: bytes
    json: Any  # None when the body is not JSON
    elapsed_ms: float

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def describe(self) -> str:
        text = self.body[:300].decode("utf-8", errors="replace")
        return f"HTTP {self.status} {self.content_type or '(no content type)'}: {text}"

    def evidence(self) -> dict[str, Any]:
        """The answer as a case's evidence: status, content type and the body's first 500 bytes."""
        return {"status": self.status, "contentType": self.content_type,
                "body": self.body[:500].decode("utf-8", errors="replace")}


class ApiClient:
    """Every call returns a Reply, whatever the status; transport failures raise httpx errors.

    A whole answer is owed within ``answer_seconds`` and at most ``max_body`` bytes are
    kept: an endpoint that streams forever (say, a stream where a 404 was due) ends in
    httpx.ReadTimeout at that bound instead of holding the caller.
    """

    def __init__(self, profile: Profile, client: httpx.AsyncClient, *, answer_seconds: float = 20.0,
                 max_body: int = 256 << 20) -> None:
        self.profile = profile
        self.http = client
        self.answer_seconds = answer_seconds
        self.max_body = max_body

    async def request(self, method: str, url: str, **kwargs) -> Reply:
        headers = {**self.profile.headers(), **kwargs.pop("headers", {})}
        request = self.http.build_request(method, url, headers=headers, **kwargs)
        with trio.move_on_after(self.answer_seconds) as scope:
            response = await self.http.send(request, stream=True)
            try:
                parts, size = [], 0
                async for part in response.aiter_bytes():
                    parts.append(part)
                    size += len(part)
                    if size > self.max_body:
                        break
            finally:
                await response.aclose()
        if scope.cancelled_caught:
            raise httpx.ReadTimeout(f"no complete answer within {self.answer_seconds:g}s", request=request)
        body = b"".join(parts)[:self.max_body]
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, body, parsed,
                     response.elapsed.total_seconds() * 1000)

    def job_body(self, **knobs: Any) -> dict[str, Any]:
        return {**self.profile.job_body, **knobs}

    async def healthz(self) -> Reply:
        """The health endpoint: the contract's healthz, or the one a stream profile claims."""
        if self.profile.kind == "stream":
            return await self.request("GET", self.profile.base_url.rstrip("/") + self.profile.claims.health)
        return await self.request("GET", self.profile.url("healthz"))

    async def create(self, body: dict[str, Any] | None = None, **knobs: Any) -> Reply:
        return await self.request("POST", self.profile.url("create"), json=body if body is not None else self.job_body(**knobs))

    async def demo(self) -> Reply:
        return await self.request("POST", self.profile.url("demo"))

    async def snapshot(self, job_id: str) -> Reply:
        return await self.request("GET", self.profile.url("job", id=job_id))

    async def cancel(self, job_id: str) -> Reply:
        return await self.request("POST", self.profile.url("cancel", id=job_id))

    async def queue(self, status: str | None = None) -> Reply:
        params = {"status": status} if status is not None else None
        return await self.request("GET", self.profile.url("queue"), params=params)

    async def progress(self, job_id: str) -> Reply:
        return await self.request("GET", self.profile.url("progress", id=job_id))

    async def artifact(self, job_id: str, name: str) -> Reply:
        return await self.request("GET", self.profile.url("artifact", id=job_id, name=name))

    def events_url(self, job_id: str) -> str:
        return self.profile.url("events", id=job_id)
