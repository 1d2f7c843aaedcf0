"""What a profile says of a stream API that is not the contract's: how to open the stream, what its
events mean, and what the server claims. A profile with a ``[stream]`` section is such a profile;
nothing is inherited from the contract, and a claim that is absent is a capability that is absent.

The contract's own profile is described in the same terms (``contract_stream``): its stream is a
job's events, opened after creating the job, so the cases that need only a stream run against the
reference server and every contract server too.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import re
from typing import Any, Awaitable, Callable, Generator

import httpx

from ._decoder import Event
from ._errors import ProfileError, TargetFault

__all__ = ["CLAIMS", "CONTRACT_CLAIMS", "CONTRACT_MEANING", "Capture", "Claims", "Meaning", "SetupAnswer", "SetupCall",
           "SetupFailed", "SetupStep", "StreamRequest", "StreamSpec", "contract_stream", "parse_data",
           "parse_stream_profile", "pointer_get"]


# Every claim a case may need, and what a profile says to claim it. "contract" is the contract's
# whole job API (create, cancel, snapshot, queue, artifacts, stages, healthz with its settings).
CLAIMS = {
    "contract": "the contract's job API (a contract profile: [paths], [events], [stages]...)",
    "stream": "a stream to open ([stream])",
    "ids": "events carry ids ([claims].ids = true)",
    "replay": "Last-Event-ID resumes the stream ([claims].replay = true)",
    "ends": "the stream ends by itself ([meaning] end_types, end_data or end_field)",
    "finished-204": "a reconnect after the end gets 204 ([claims].finished = \"204\")",
    "keepalive": "keep-alive comments at an interval ([claims].keepalive_seconds)",
    "retry": "the stream sends a retry field ([claims].retry_ms)",
    "timestamps": "events carry a timestamp ([meaning].timestamp)",
    "progress": "events carry progress ([meaning].progress)",
    "health": "a health endpoint ([claims].health)",
    "browser": "an EventSource can open it: GET, no custom headers and no set-up requests (a contract profile's "
               "job streams are family 10's)",
}

_POINTER = re.compile(r"^(data:(/.*)?|id|type)$")


def parse_data(event: Event) -> dict[str, Any] | None:
    """An event's data as a JSON object; None when it is not one."""
    try:
        value = json.loads(event.data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def pointer_get(event: Event, where: str) -> Any:
    """The value ``where`` names in an event: ``id``, ``type``, or ``data:/json/pointer``
    (``data:`` alone: the data text). None when it is not there."""
    if where == "id":
        return event.id if event.has_id else None
    if where == "type":
        return event.type
    pointer = where[len("data:"):]
    if not pointer:
        return event.data
    try:
        value: Any = json.loads(event.data)
    except ValueError:
        return None
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


@dataclasses.dataclass(frozen=True)
class Capture:
    """A value taken from a set-up request's answer: a header, or a JSON pointer into its body."""

    name: str
    source: str  # "header:Name" or "json:/pointer"

    def take(self, answer: "SetupAnswer") -> str | None:
        kind, _, where = self.source.partition(":")
        if kind == "header":
            return answer.header(where)
        try:
            value: Any = json.loads(answer.body)
        except ValueError:
            return None
        for part in where.split("/")[1:]:
            value = value.get(part) if isinstance(value, dict) else None
        return None if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class SetupStep:
    """A request made before each stream is opened (a session, a run, a token)."""

    method: str
    path: str
    headers: dict[str, str]
    content: bytes | None
    captures: tuple[Capture, ...]


@dataclasses.dataclass(frozen=True)
class StreamRequest:
    """One stream, ready to open: what the recorder needs."""

    url: str
    method: str
    headers: dict[str, str]
    content: bytes | None
    captured: dict[str, str]


@dataclasses.dataclass(frozen=True)
class SetupCall:
    """One set-up request, ready to send; ``path`` is its template as the profile gives it (a
    name that groups its requests)."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None
    path: str


@dataclasses.dataclass(frozen=True)
class SetupAnswer:
    """What a set-up request got back: status, headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """How to open the stream: method, path template, body, headers, set-up requests, or a hook
    (``module:function``, an async function (client, base_url, captured) -> StreamRequest)."""

    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    content: bytes | None = None
    setup: tuple[SetupStep, ...] = ()
    hook: str = ""
    shared: bool = False  # a channel: every reader sees the same events (else each request its own stream)

    def opening(self, base_url: str,
                extra_headers: dict[str, str]) -> Generator[SetupCall, SetupAnswer, dict[str, str]]:
        """The set-up requests, sans I/O: yields each request ready to send (captured values
        filled in), is sent its answer, and returns what was captured. A status that is not 2xx
        or a capture missing from the answer raises SetupFailed (the target's doing). One copy
        of the logic for every driver: ``open`` (httpx, trio) and the load user (gevent)."""
        captured: dict[str, str] = {}
        base = base_url.rstrip("/")
        for step in self.setup:
            answer = yield SetupCall(step.method, base + _fill_text(step.path, captured),
                                     {**extra_headers, **_fill(step.headers, captured)},
                                     step.content and _fill_text(step.content.decode(), captured).encode(), step.path)
            if not 200 <= answer.status < 300:
                raise SetupFailed(f"set-up request {step.method} {step.path} answered HTTP {answer.status}: "
                                  f"{answer.body.decode(errors='replace')[:200]}")
            for capture in step.captures:
                value = capture.take(answer)
                if value is None:
                    raise SetupFailed(f"set-up request {step.method} {step.path}: {capture.source} "
                                      f"(capture {capture.name}) is not in its answer")
                captured[capture.name] = value
        return captured

    def request(self, base_url: str, extra_headers: dict[str, str], captured: dict[str, str]) -> StreamRequest:
        """The stream's request with the captured values filled in (not for a hook's profile)."""
        content = self.content and _fill_text(self.content.decode(), captured).encode()
        return StreamRequest(base_url.rstrip("/") + _fill_text(self.path, captured), self.method,
                             {**extra_headers, **_fill(self.headers, captured)}, content, captured)

    async def open(self, client: httpx.AsyncClient, base_url: str, extra_headers: dict[str, str]) -> StreamRequest:
        """Run the set-up requests (their failures are the target's: httpx errors and a status
        that is not 2xx raise SetupFailed) and fill in the stream's request."""
        steps = self.opening(base_url, extra_headers)
        try:
            call = next(steps)
            while True:
                response = await client.request(call.method, call.url, headers=call.headers, content=call.content)
                call = steps.send(SetupAnswer(response.status_code, dict(response.headers), response.content))
        except StopIteration as done:
            captured = done.value
        if self.hook:
            return await _hook(self.hook)(client, base_url, captured)
        return self.request(base_url, extra_headers, captured)

    @property
    def browser_can_open(self) -> bool:
        return self.method == "GET" and not self.headers and not self.setup and not self.hook and self.content is None


class SetupFailed(TargetFault):
    """A set-up request failed: the target's doing (its answer is in the message)."""


def _fill_text(text: str, captured: dict[str, str]) -> str:
    for name, value in captured.items():
        text = text.replace("{" + name + "}", value)
    return text


def _fill(headers: dict[str, str], captured: dict[str, str]) -> dict[str, str]:
    return {k: _fill_text(v, captured) for k, v in headers.items()}


def _hook(name: str) -> Callable[..., Awaitable[StreamRequest]]:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


@dataclasses.dataclass(frozen=True)
class Meaning:
    """What the events mean, as places in an event (``pointer_get``); empty: not known."""

    job_id: str = ""
    progress: str = ""
    progress_scale: float = 100.0  # 1 for a fraction
    stage: str = ""
    timestamp: str = ""
    timestamp_format: str = "epoch_ms"  # epoch_s, epoch_ms, rfc3339
    end_types: tuple[str, ...] = ()
    end_data: str = ""  # a data sentinel that ends the stream, e.g. [DONE]
    end_field: str = ""
    end_values: tuple[str, ...] = ()

    @property
    def ends(self) -> bool:
        return bool(self.end_types or self.end_data or (self.end_field and self.end_values))

    @property
    def end_names(self) -> tuple[str, ...]:
        """What ends the stream, in words a finding can show."""
        names = [f"event: {t}" for t in self.end_types]
        if self.end_data:
            names.append(f"data: {self.end_data}")
        if self.end_field and self.end_values:
            names.append(f"{self.end_field} in {list(self.end_values)}")
        return tuple(names)

    def is_end(self, event: Event) -> bool:
        if event.type in self.end_types:
            return True
        if self.end_data and event.data.strip() == self.end_data:
            return True
        if self.end_field and self.end_values:
            value = pointer_get(event, self.end_field)
            return value is not None and str(value) in self.end_values
        return False

    def timestamp_ms(self, event: Event) -> float | None:
        """The event's own timestamp in epoch milliseconds, or None."""
        if not self.timestamp:
            return None
        value = pointer_get(event, self.timestamp)
        if self.timestamp_format == "rfc3339":
            seconds = rfc3339_seconds(value) if isinstance(value, str) else None
            return None if seconds is None else seconds * 1000
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) * (1000.0 if self.timestamp_format == "epoch_s" else 1.0)


def rfc3339_seconds(text: str) -> float | None:
    """An RFC 3339 timestamp's epoch seconds (one without an offset taken as UTC), None when
    Python cannot read it as one (the probe picks a field only when this reads it)."""
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


@dataclasses.dataclass(frozen=True)
class Claims:
    """What the server claims, each a capability that cases may need."""

    names: frozenset[str]
    keepalive_seconds: float = 0.0
    retry_ms: int = 0
    health: str = ""

    def has(self, need: str) -> bool:
        return need in self.names

    def missing(self, needs: tuple[str, ...]) -> list[str]:
        return [n for n in needs if n not in self.names]


_STREAM_KEYS = {"method", "path", "body", "json", "headers", "hook", "shared"}
_SETUP_KEYS = {"method", "path", "body", "json", "headers", "capture"}
_MEANING_KEYS = {f.name for f in dataclasses.fields(Meaning)}
_CLAIM_KEYS = {"ids", "replay", "keepalive_seconds", "retry_ms", "finished", "health"}
_TOP = {"target", "stream", "setup", "meaning", "claims", "timing"}


def _check(section: str, table: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ProfileError(f"[{section}] must be a table")
    for key in table:
        if key not in allowed:
            raise ProfileError(f"unknown key [{section}].{key}; known: {', '.join(sorted(allowed))}")
    return table


def _method(section: str, value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        raise ProfileError(f"[{section}].method must be GET or POST (or PUT, PATCH, DELETE), not {value!r}")
    return value.upper()


def _path(section: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ProfileError(f"[{section}].path must be a path starting with '/', not {value!r}")
    return value


def _headers(section: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ProfileError(f"[{section}].headers must be a table of strings")
    return dict(value)


def _body(section: str, table: dict[str, Any], headers: dict[str, str]) -> bytes | None:
    if "body" in table and "json" in table:
        raise ProfileError(f"[{section}] has both body and json: give one")
    if "json" in table:
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(table["json"]).encode()
    if "body" in table:
        if not isinstance(table["body"], str):
            raise ProfileError(f"[{section}].body must be a string (or give json = {{...}})")
        return table["body"].encode()
    return None


def _where(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _POINTER.match(value):
        raise ProfileError(f"[{section}].{key} must be 'id', 'type', 'data:' or 'data:/json/pointer', not {value!r}")
    return value


def parse_stream_profile(raw: dict[str, Any]) -> tuple[StreamSpec, Meaning, Claims, dict[str, Any]]:
    """The [stream], [[setup]], [meaning] and [claims] of a stream profile, validated; returns them
    and the rest ([target], [timing]) for the profile module."""
    for section in raw:
        if section not in _TOP:
            raise ProfileError(f"unknown section [{section}] in a stream profile; known: {', '.join(sorted(_TOP))} "
                         f"(a contract profile has no [stream])")
    stream = _check("stream", raw["stream"], _STREAM_KEYS)
    headers = _headers("stream", stream.get("headers", {}))
    content = _body("stream", stream, headers)
    method = _method("stream", stream.get("method", "GET"))
    hook = stream.get("hook", "")
    if not isinstance(hook, str) or (hook and ":" not in hook):
        raise ProfileError(f"[stream].hook must be 'module:function', not {hook!r}")
    if "path" not in stream and not hook:
        raise ProfileError("[stream].path is required (the stream's path, e.g. \"/events\"), or a [stream].hook")
    shared = stream.get("shared", False)
    if not isinstance(shared, bool):
        raise ProfileError("[stream].shared must be true (a channel every reader sees alike) or false")
    steps = []
    setup = raw.get("setup", [])
    if not isinstance(setup, list):
        raise ProfileError("[[setup]] must be an array of tables ([[setup]] ... )")
    for i, table in enumerate(setup):
        name = f"setup.{i}"
        _check(name, table, _SETUP_KEYS)
        step_headers = _headers(name, table.get("headers", {}))
        step_content = _body(name, table, step_headers)
        captures = []
        capture = table.get("capture", {})
        if not isinstance(capture, dict):
            raise ProfileError(f"[{name}].capture must be a table: name = \"header:Name\" or \"json:/pointer\"")
        for key, source in capture.items():
            if not isinstance(source, str) or not re.match(r"^(header:.+|json:/.*)$", source):
                raise ProfileError(f"[{name}].capture.{key} must be \"header:Name\" or \"json:/pointer\", not {source!r}")
            captures.append(Capture(key, source))
        steps.append(SetupStep(_method(name, table.get("method", "POST")), _path(name, table.get("path")),
                               step_headers, step_content, tuple(captures)))
    spec = StreamSpec(method, _path("stream", stream["path"]) if "path" in stream else "/", headers, content,
                      tuple(steps), hook, shared)

    meaning_raw = _check("meaning", raw.get("meaning", {}), _MEANING_KEYS)
    values: dict[str, Any] = {}
    for key in ("job_id", "progress", "stage", "timestamp", "end_field"):
        if key in meaning_raw:
            values[key] = _where("meaning", key, meaning_raw[key])
    if "progress_scale" in meaning_raw:
        scale = meaning_raw["progress_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
            raise ProfileError(f"[meaning].progress_scale must be a number > 0 (100 for percent, 1 for a fraction), "
                         f"not {scale!r}")
        values["progress_scale"] = float(scale)
    if "timestamp_format" in meaning_raw:
        if meaning_raw["timestamp_format"] not in ("epoch_s", "epoch_ms", "rfc3339"):
            raise ProfileError(f"[meaning].timestamp_format must be epoch_s, epoch_ms or rfc3339, "
                         f"not {meaning_raw['timestamp_format']!r}")
        values["timestamp_format"] = meaning_raw["timestamp_format"]
    for key in ("end_types", "end_values"):
        if key in meaning_raw:
            items = meaning_raw[key]
            if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
                raise ProfileError(f"[meaning].{key} must be a list of strings")
            values[key] = tuple(items)
    if "end_data" in meaning_raw:
        if not isinstance(meaning_raw["end_data"], str) or not meaning_raw["end_data"]:
            raise ProfileError("[meaning].end_data must be a non-empty string, e.g. \"[DONE]\"")
        values["end_data"] = meaning_raw["end_data"]
    if bool(values.get("end_field")) != bool(values.get("end_values")):
        raise ProfileError("[meaning].end_field and end_values go together (the field, and the values that end the stream)")
    meaning = Meaning(**values)

    claims_raw = _check("claims", raw.get("claims", {}), _CLAIM_KEYS)
    names = {"stream"}
    for key in ("ids", "replay"):
        if key in claims_raw:
            if not isinstance(claims_raw[key], bool):
                raise ProfileError(f"[claims].{key} must be true or false")
            if claims_raw[key]:
                names.add(key)
    if "replay" in names and "ids" not in names:
        raise ProfileError("[claims].replay = true needs [claims].ids = true: Last-Event-ID resumes from an event's id")
    keepalive = claims_raw.get("keepalive_seconds", 0)
    if isinstance(keepalive, bool) or not isinstance(keepalive, (int, float)) or keepalive < 0:
        raise ProfileError(f"[claims].keepalive_seconds must be a number of seconds >= 0, not {keepalive!r}")
    if keepalive:
        names.add("keepalive")
    retry = claims_raw.get("retry_ms", 0)
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
        raise ProfileError(f"[claims].retry_ms must be a whole number of milliseconds >= 0, not {retry!r}")
    if retry:
        names.add("retry")
    finished = claims_raw.get("finished", "")
    if finished not in ("", "204"):
        raise ProfileError(f"[claims].finished must be \"204\" (what a reconnect after the end gets) or absent, "
                     f"not {finished!r}")
    if finished:
        if not meaning.ends:
            raise ProfileError("[claims].finished needs a stream that ends: [meaning] end_types, end_data or end_field")
        names.add("finished-204")
    health = claims_raw.get("health", "")
    if health:
        if not isinstance(health, str) or not health.startswith("/"):
            raise ProfileError(f"[claims].health must be a path starting with '/', not {health!r}")
        names.add("health")
    if meaning.ends:
        names.add("ends")
    if meaning.timestamp:
        names.add("timestamps")
    if meaning.progress:
        names.add("progress")
    if spec.browser_can_open:
        names.add("browser")
    rest = {k: v for k, v in raw.items() if k in ("target", "timing")}
    return spec, meaning, Claims(frozenset(names), float(keepalive), int(retry), health), rest


def contract_stream(create_path: str, events_path: str, job_body: dict[str, Any]) -> StreamSpec:
    """The contract's stream in these terms: create a job, then open its events."""
    step = SetupStep("POST", create_path, {"Content-Type": "application/json"}, json.dumps(job_body).encode(),
                     (Capture("id", "json:/jobId"),))
    return StreamSpec("GET", events_path, {}, None, (step,), "", False)


CONTRACT_MEANING = Meaning(job_id="data:/jobId", progress="data:/percent", stage="data:/stage", timestamp="data:/ts",
                           timestamp_format="epoch_ms")
CONTRACT_CLAIMS = frozenset(CLAIMS) - {"browser"}  # the browser opens a job's stream, not this recipe
