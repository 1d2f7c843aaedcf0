"""Target profiles: a TOML description of a server under test; the default is the contract."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from ._errors import ProfileError
from ._stream_profile import (CONTRACT_CLAIMS, CONTRACT_MEANING, Claims, Meaning, StreamSpec, contract_stream,
                              parse_stream_profile)

__all__ = ["Profile", "ProfileError", "load_profile"]


_DEFAULT_TEXT = resources.files("harness").joinpath("contract.toml").read_text()
_DEFAULTS: dict[str, Any] = tomllib.loads(_DEFAULT_TEXT)
_PATH_KEYS = {"job", "events", "cancel", "progress"}  # must contain {id}


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    base_url: str
    auth_header: tuple[str, str] | None
    paths: dict[str, str]
    events: dict[str, str]
    statuses: dict[str, str]
    stages: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    job_body: dict[str, Any]
    knobs: bool
    artifact: str
    timing: dict[str, float]
    restart_command: str = ""  # a shell command with {signal}; empty: the harness cannot restart the target
    restart_timeout: float = 30.0
    # How to open the stream, what its events mean, what the server claims (harness._stream_profile).
    # A contract profile claims everything and its stream is a job's events; a stream profile
    # (a [stream] section) claims what it says, and the contract's job API not at all.
    stream: StreamSpec | None = None
    meaning: Meaning = Meaning()
    claims: Claims = Claims(CONTRACT_CLAIMS)

    @property
    def kind(self) -> str:
        """"contract" (the contract's job API, renamed at most) or "stream" (any SSE stream)."""
        return "contract" if self.claims.has("contract") else "stream"

    @property
    def terminal_events(self) -> frozenset[str]:
        return frozenset({self.events["completed"], self.events["failed"], self.events["cancelled"]})

    @property
    def terminal_statuses(self) -> frozenset[str]:
        return frozenset({self.statuses["completed"], self.statuses["failed"], self.statuses["canceled"]})

    def url(self, key: str, **params: str) -> str:
        return self.base_url.rstrip("/") + self.paths[key].format(**params)

    def with_base_url(self, base_url: str) -> "Profile":
        return dataclasses.replace(self, base_url=base_url)

    def with_timing_slack(self, factor: float | None) -> "Profile":
        """The profile with --timing-slack in force (None: as the profile says)."""
        if factor is None:
            return self
        if not factor >= 1:
            raise ProfileError(f"--timing-slack must be a factor >= 1 (it only widens tolerances), not {factor!r}")
        return dataclasses.replace(self, timing={**self.timing, "timing_slack": float(factor)})

    def headers(self) -> dict[str, str]:
        return dict([self.auth_header]) if self.auth_header else {}


def _check_keys(section: str, given: dict, allowed: dict) -> None:
    for key in given:
        if key not in allowed:
            raise ProfileError(f"unknown key [{section}].{key}; known: {', '.join(sorted(allowed))}")


def _merge(raw: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(_DEFAULTS)
    for section, values in raw.items():
        if section not in _DEFAULTS:
            raise ProfileError(f"unknown section [{section}]; known: {', '.join(sorted(_DEFAULTS))}")
        if not isinstance(values, dict):
            raise ProfileError(f"[{section}] must be a table")
        _check_keys(section, values, _DEFAULTS[section] | ({"auth_header": ""} if section == "target" else {}))
        merged[section].update(values)
    return merged


def _str(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ProfileError(f"[{section}].{key} must be a non-empty string, not {value!r}")
    return value


def load_profile(path: str | Path | None = None, *, base_url: str | None = None) -> Profile:
    """Read a profile file (None: the contract) and validate every value. A file with a
    [stream] section describes any SSE stream (docs/profiles.md); one without, the contract's
    job API under other names."""
    raw: dict[str, Any] = {}
    name = "contract"
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"profile {path} is not valid TOML: {exc}") from None
        name = path.stem
    if "stream" in raw:
        return _stream_profile(raw, name, base_url)
    profile = _contract_profile(raw, name, base_url)
    return dataclasses.replace(
        profile, stream=contract_stream(profile.paths["create"], profile.paths["events"], profile.job_body),
        meaning=dataclasses.replace(CONTRACT_MEANING, end_types=tuple(sorted(profile.terminal_events))))


def _stream_profile(raw: dict[str, Any], name: str, base_url: str | None) -> Profile:
    try:
        spec, meaning, claims, rest = parse_stream_profile(raw)
    except ValueError as exc:
        raise ProfileError(str(exc)) from None
    # [target] and [timing] as in any profile; the contract's other sections are not claimed,
    # and their defaults only fill fields no case that runs here reads.
    base = _contract_profile(rest, name, base_url)
    return dataclasses.replace(base, stream=spec, meaning=meaning, claims=claims, knobs=False, restart_command="")


def _contract_profile(raw: dict[str, Any], name: str, base_url: str | None) -> Profile:
    data = _merge(raw)
    target = data["target"]
    url = _str("target", "base_url", base_url or target["base_url"])
    if not url.startswith(("http://", "https://")):
        raise ProfileError(f"[target].base_url must start with http:// or https://, not {url!r}")
    auth = None
    if target.get("auth_header"):
        header = _str("target", "auth_header", target["auth_header"])
        name_, colon, value = header.partition(":")
        if not colon or not name_.strip():
            raise ProfileError("[target].auth_header must look like 'Name: value'")
        auth = (name_.strip(), value.strip())
    paths = {k: _str("paths", k, v) for k, v in data["paths"].items()}
    for key, value in paths.items():
        if not value.startswith("/"):
            raise ProfileError(f"[paths].{key} must start with '/'")
        if key in _PATH_KEYS and "{id}" not in value:
            raise ProfileError(f"[paths].{key} must contain {{id}}")
    if "{name}" not in paths["artifact"] or "{id}" not in paths["artifact"]:
        raise ProfileError("[paths].artifact must contain {id} and {name}")
    events = {k: _str("events", k, v) for k, v in data["events"].items()}
    statuses = {k: _str("statuses", k, v) for k, v in data["statuses"].items()}
    order = data["stages"]["order"]
    if not isinstance(order, list) or not order or not all(isinstance(s, str) and s for s in order):
        raise ProfileError("[stages].order must be a non-empty list of stage names")
    ranges_raw = data["stages"]["ranges"]
    if not isinstance(ranges_raw, dict) or set(ranges_raw) != set(order):
        raise ProfileError("[stages].ranges must give a [low, high] range for exactly the stages in order")
    ranges = {}
    for stage in order:
        pair = ranges_raw[stage]
        if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(x, (int, float)) for x in pair)
                or not 0 <= pair[0] <= pair[1] <= 100):
            raise ProfileError(f"[stages].ranges.{stage} must be [low, high] with 0 <= low <= high <= 100")
        ranges[stage] = (float(pair[0]), float(pair[1]))
    job = data["job"]
    if not isinstance(job["body"], dict):
        raise ProfileError("[job].body must be a table")
    if not isinstance(job["knobs"], bool):
        raise ProfileError("[job].knobs must be true or false")
    timing = {}
    for key, value in data["timing"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ProfileError(f"[timing].{key} must be a number >= 0, not {value!r}")
        timing[key] = float(value)
    if not timing["timing_slack"] >= 1:
        raise ProfileError(f"[timing].timing_slack must be a factor >= 1 (it only widens tolerances), "
                           f"not {timing['timing_slack']!r}")
    restart = data["restart"]
    if not isinstance(restart["command"], str):
        raise ProfileError("[restart].command must be a string (empty: the target cannot be restarted)")
    if (isinstance(restart["timeout_seconds"], bool) or not isinstance(restart["timeout_seconds"], (int, float))
            or not restart["timeout_seconds"] > 0):
        raise ProfileError(f"[restart].timeout_seconds must be a number > 0, not {restart['timeout_seconds']!r}")
    return Profile(
        name=name, base_url=url, auth_header=auth, paths=paths, events=events, statuses=statuses,
        stages=tuple(order), ranges=ranges, job_body=dict(job["body"]), knobs=job["knobs"],
        artifact=_str("job", "artifact", job["artifact"]), timing=timing,
        restart_command=restart["command"].strip(), restart_timeout=float(restart["timeout_seconds"]),
    )
