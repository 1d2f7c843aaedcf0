"""What ``sse-harness probe`` writes from its findings: the draft stream profile (TOML that claims
only what was observed, each line commented with why) and the console summary. Pure: Findings in, text out."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ._probe import Findings, sent_header

__all__ = ["render_profile", "render_summary"]


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return _toml_string(str(value))


def _line(key: str, value: Any, note: str) -> str:
    text = f"{key} = {_toml_value(value)}"
    return f"{text:<40} # {_one_line(note)}" if note else text


def _absent(key: str, note: str) -> str:
    return f"# {key}: not claimed: {_one_line(note)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_profile(f: Findings, *, when: str = "") -> str:
    """The draft stream profile: every value commented with what was seen, and what could not
    be claimed said in a comment where its key would go."""
    parts = urlsplit(f.url)
    base_url = f"{parts.scheme}://{parts.netloc}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        "# A draft stream profile written by `sse-harness probe`" + (f" at {when}" if when else "") + ".",
        f"# It claims only what was seen: {f.method} {f.url} -> HTTP {f.status}, {f.events} event(s) in "
        f"{f.seconds:.1f} s; then {_reconnect_summary(f)}.",
        "# Review it, then: sse-harness run --profile THIS_FILE (docs/profiles.md says what each key means).",
        "",
        "[target]",
        _line("base_url", base_url, ""),
        "",
        "[stream]",
        _line("method", f.method, ""),
        _line("path", path, "a stream per job: its id is in the path" if f.per_job else ""),
    ]
    if f.per_job:
        lines += ["# To open a new job for every stream, create it first and use what it answers, e.g.:",
                  "#   [[setup]]",
                  "#   method = \"POST\"",
                  "#   path = \"/api/jobs\"              # the request that starts a job (this is the contract's)",
                  "#   capture = { id = \"json:/jobId\" } # where its answer names the job",
                  "# and write {id} in place of the job's id in path."]
    if f.request_headers:
        lines.append(_line("headers", f.request_headers, "sent with every request of the probe"))
    if f.body is not None:
        lines.append(_line("body", f.body, "the probe's --data"))
    lines += ["", "[meaning]"]
    if f.job_id:
        lines.append(_line("job_id", f.job_id.where, f.job_id.note))
    else:
        lines.append(_absent("job_id", f.job_id_note))
    if f.progress:
        lines.append(_line("progress", f.progress.where, f.progress.note))
        lines.append(_line("progress_scale", int(f.progress_scale), "1: a fraction, 100: percent"))
    else:
        lines.append(_absent("progress", f.progress_note))
    if f.timestamp and f.timestamp_withheld:
        lines.append(_absent("timestamp", f.timestamp_withheld))
        lines.append("# " + _line("timestamp", f.timestamp.where, f.timestamp.note))
        lines.append("# " + _line("timestamp_format", f.timestamp_format, ""))
    elif f.timestamp:
        lines.append(_line("timestamp", f.timestamp.where, f.timestamp.note))
        lines.append(_line("timestamp_format", f.timestamp_format, ""))
    else:
        lines.append(_absent("timestamp", f.timestamp_note))
    if f.end_types:
        lines.append(_line("end_types", list(f.end_types), f.end_note))
        lines.append("# (only the end that was seen: add the others, e.g. a failure's and a cancellation's type)")
    elif f.end_data:
        lines.append(_line("end_data", f.end_data, f.end_note))
    elif f.end_field:
        lines.append(_line("end_field", f.end_field, f.end_note))
        lines.append(_line("end_values", list(f.end_values), "only the value seen: add the others"))
    else:
        lines.append(_absent("an end (end_types, end_data, end_field)", f.end_note))
    lines += ["", "[claims]"]
    if f.ids == "all":
        lines.append(_line("ids", True, f.ids_note))
    else:
        lines.append(_absent("ids", f.ids_note))
    if f.replay:
        lines.append(_line("replay", True, f.replay_note))
    else:
        lines.append(_absent("replay", f.replay_note))
    if f.keepalive_seconds:
        lines.append(_line("keepalive_seconds", f.keepalive_seconds, f.keepalive_note))
    else:
        lines.append(_absent("keepalive_seconds", f.keepalive_note))
    if f.retry_ms:
        lines.append(_line("retry_ms", f.retry_ms, f"the stream sent retry: {f.retry_ms}"))
    else:
        lines.append(_absent("retry_ms", "the stream sent no retry field"))
    if f.finished_204:
        lines.append(_line("finished", "204", f.finished_note))
    else:
        lines.append(_absent("finished", f.finished_note))
    lines.append("# health: not probed (a health endpoint's path, if the server has one)")
    return "\n".join(lines) + "\n"


def _reconnect_summary(f: Findings) -> str:
    if f.reconnect is None:
        return "no reconnect"
    text = f"a reconnect with {sent_header(f.reconnect.sent_id)} got {f.reconnect.note}"
    if f.resume is not None:
        text += f"; one with {sent_header(f.resume.sent_id)} got {f.resume.note}"
    return text


def render_summary(f: Findings) -> list[str]:
    """What the probe saw, for a person: one fact a line."""
    lines = [f"{f.method} {f.url} -> " + (f"HTTP {f.status}" if f.status is not None else "no response")]
    lines += [f"  {name}: {value}" for name, value in f.response_headers]
    if f.problem:
        return lines + [f"not a stream: {f.problem}"]
    kinds = ", ".join(f"{t} {n}" for t, n in f.types.items())
    lines += [
        f"events: {f.events} in {f.seconds:.1f} s" + (f" ({kinds})" if kinds else "") + f"; comments: {f.comments}",
        f"ids: {f.ids_note}",
        f"keep-alive: {f.keepalive_note}",
        f"retry: {f'{f.retry_ms} ms' if f.retry_ms is not None else 'none sent'}",
        f"progress: {f'{f.progress.where}: {f.progress.note}' if f.progress else f.progress_note}",
        f"timestamps: {f'{f.timestamp.where}: {f.timestamp.note}' if f.timestamp else f.timestamp_note}"
        + (f" (not claimed: {f.timestamp_withheld})" if f.timestamp_withheld else ""),
        f"job id: {f'{f.job_id.where}: {f.job_id.note}' if f.job_id else f.job_id_note}",
        f"end: {f.end_note}",
    ]
    for label, reconnect in (("reconnect", f.reconnect), ("resume", f.resume)):
        if reconnect is not None:
            lines.append(f"{label} with {sent_header(reconnect.sent_id)}: {reconnect.note}")
    lines.append(f"replay: {'yes' if f.replay else 'not shown'}: {f.replay_note}")
    return lines
