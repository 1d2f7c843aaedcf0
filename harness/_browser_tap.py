"""The probe page and the recording tap in front of the target, for a real browser's EventSource.

The tap is a TCP forwarder between the harness's fault proxy and the target. It serves the probe
page itself at ``PAGE_PATH`` (so the page and the streams share one origin: no CORS, the browser's
own connection pool for it) and records every request the browser made, with the headers it
really sent (Last-Event-ID included, which Playwright's own request view does not show), and every
response, de-framed with h11 and decoded into ``Segment``s: what the browser was sent, judged by
the same checks as a Python recording.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import h11
import trio

from ._client import END_CLIENT, END_RESET, END_SERVER, END_STATUS, Segment
from ._decoder import Decoder
from ._tasks import BackgroundServer

__all__ = ["Exchange", "PAGE_HTML", "PAGE_PATH", "Tap"]

PAGE_PATH = "/__sse-harness__/probe.html"

# -- the probe page -----------------------------------------------------------------------
# It opens one EventSource per stream, listens to every type it is given (and open, error), and
# records each call in ``window.__obs`` on the page's clock (harness._browser.PageHandle reads it).
PAGE_HTML = """<!doctype html><html lang="en"><meta charset="utf-8"><link rel="icon" href="data:,">
<title>sse-harness: EventSource probe</title>
<style>body{font:13px/1.4 system-ui,sans-serif;margin:1em}td{padding:2px 8px;border-bottom:1px solid #ddd}
.s0{color:#8a5a00}.s1{color:#17692b}.s2{color:#b00020}</style>
<h1>EventSource as this browser sees it</h1><table id="t"></table><script>
"use strict";
const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const obs = window.__obs = [];
const rows = [];
const now = () => performance.timeOrigin + performance.now();
function note(o) {
  o.t = now(); obs.push(o);
  const row = rows[o.s]; if (!row) return;
  row.n += o.k === "ev" && o.message ? 1 : 0;
  // textContent only: what the target sends must never become markup in the probe.
  const cells = [cfg.streams[o.s], ["CONNECTING", "OPEN", "CLOSED"][o.rs], row.n + " events",
                 o.k === "ev" ? o.type + " #" + o.id : o.k];
  row.el.replaceChildren(...cells.map((text, i) => {
    const td = document.createElement("td"); td.textContent = text; if (i === 1) td.className = "s" + o.rs; return td;
  }));
}
// Streams open at load, or (with "defer") when the harness calls __go(streams): then a slow page
// load does not eat into the jobs it is about to follow.
window.__go = (streams) => { cfg.streams = streams; window.__sources = streams.map(follow); };
function follow(url, s) {
  const el = document.createElement("tr"); document.getElementById("t").appendChild(el);
  rows.push({el, n: 0});
  const es = new EventSource(url);
  let rs = es.readyState;
  note({k: "state", s, rs});
  es.onopen = () => note({k: "open", s, rs: es.readyState});
  es.onerror = () => note({k: "error", s, rs: es.readyState});
  for (const type of cfg.types) {
    es.addEventListener(type, (e) => note({k: "ev", s, type: e.type, message: e instanceof MessageEvent,
      id: e instanceof MessageEvent ? e.lastEventId : null, data: e instanceof MessageEvent ? e.data : null,
      rs: es.readyState}));
  }
  setInterval(() => { if (es.readyState !== rs) { rs = es.readyState; note({k: "state", s, rs}); } }, 10);
  return es;
}
if (!cfg.defer) window.__go(cfg.streams);
</script></html>
"""


# -- the recording tap --------------------------------------------------------------------

@dataclasses.dataclass
class Exchange:
    """One request and its response as they passed the tap (mutable while the connection lives)."""

    connection: int
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]  # lower-case names, as the browser sent them
    started_at: float
    version: str = ""  # the request line's HTTP version
    status: int | None = None
    response_headers: tuple[tuple[str, str], ...] = ()
    chunks: list = dataclasses.field(default_factory=list)  # (arrival, body bytes), bounded
    size: int = 0
    ended_at: float | None = None
    end: str = ""
    end_detail: str = ""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def segment(self) -> Segment:
        decoder = Decoder()
        records = []
        for arrived, data in self.chunks:
            records.extend(decoder.feed(data, arrived))
        ended = self.ended_at if self.ended_at is not None else time.monotonic()
        records.extend(decoder.close(ended))
        body = b"".join(d for _, d in self.chunks)
        return Segment(
            url=self.target, request_headers=self.headers, last_event_id_sent=self.header("last-event-id"),
            started_at=self.started_at, wall_offset=time.time() - time.monotonic(), status=self.status,
            headers=self.response_headers, records=tuple(records),
            chunks=tuple((t, len(d)) for t, d in self.chunks), ended_at=ended, end=self.end or "open",
            end_detail=self.end_detail, body=body[:16384] if self.status != 200 else b"",
            last_event_id=decoder.last_event_id, retry_ms=decoder.retry_ms, raw=body)


def _end_open(pending: list[Exchange], end: str, detail: str, *, keep_noted: bool) -> None:
    """The exchanges still open when their connection went: ended now, as ``end`` with ``detail``
    (``keep_noted``: unless a detail was noted already, such as a response the tap could not de-frame)."""
    now = time.monotonic()
    for exchange in pending:
        if exchange.ended_at is None:
            exchange.ended_at, exchange.end = now, end
            exchange.end_detail = (exchange.end_detail if keep_noted else "") or detail


class Tap(BackgroundServer):
    """A TCP forwarder to the target that serves the probe page and records every exchange.

    Requests are parsed as they go up (heads only; bodies are counted off by Content-Length), and
    responses are de-framed with h11 as they come down. Bounded: ``max_body`` bytes kept per
    response, ``max_exchanges`` exchanges.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, page: bytes = PAGE_HTML.encode(),
                 max_body: int = 4 << 20, max_exchanges: int = 2000) -> None:
        self.target = (target_host, target_port)
        self.page = page
        self.max_body, self.max_exchanges = max_body, max_exchanges
        self.exchanges: list[Exchange] = []
        self._count = 0

    async def _handle(self, client: trio.SocketStream) -> None:
        self._count += 1
        number = self._count
        pending: list[Exchange] = []  # sent up, response not yet complete
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:

            async def up() -> None:
                buffer, skip = b"", 0
                try:
                    while chunk := await client.receive_some(65536):
                        buffer += chunk
                        while True:
                            if skip:
                                taken = min(skip, len(buffer))
                                await server.send_all(buffer[:taken])
                                buffer, skip = buffer[taken:], skip - taken
                                if skip:
                                    break
                            head, sep, rest = buffer.partition(b"\r\n\r\n")
                            if not sep:
                                break
                            exchange, length = self._parse(number, head)
                            buffer = rest
                            if exchange is not None and exchange.target == PAGE_PATH:
                                await self._serve_page(client, exchange)
                                nursery.cancel_scope.cancel()
                                return
                            if exchange is not None:
                                pending.append(exchange)
                            await server.send_all(head + sep)
                            skip = length
                        if len(buffer) > 65536:  # not HTTP as we know it: forward it blind
                            await server.send_all(buffer)
                            buffer = b""
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                _end_open(pending, END_CLIENT, "the client side closed (the browser, or a cut at the proxy)",
                          keep_noted=False)
                nursery.cancel_scope.cancel()

            async def down() -> None:
                parser = h11.Connection(h11.CLIENT)
                state = {"started": False, "ok": True}
                try:
                    while True:
                        chunk = await server.receive_some(65536)
                        if state["ok"]:
                            try:
                                self._feed(parser, state, pending, chunk, time.monotonic())
                            except h11.ProtocolError:
                                # What we cannot de-frame we still forward; the exchange says so.
                                state["ok"] = False
                                for exchange in pending:
                                    exchange.end_detail = "the tap could not de-frame the response"
                        if not chunk:
                            break
                        await client.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                _end_open(pending, END_RESET, "the server closed the connection mid-response", keep_noted=True)
                nursery.cancel_scope.cancel()

            nursery.start_soon(up)
            nursery.start_soon(down)

    def _parse(self, number: int, head: bytes) -> tuple[Exchange | None, int]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = next((int(v) for k, v in headers if k == "content-length" and v.isdigit()), 0)
        if len(parts) != 3 or len(self.exchanges) >= self.max_exchanges:
            return None, length
        exchange = Exchange(number, parts[0], parts[1], tuple(headers), time.monotonic(), parts[2])
        self.exchanges.append(exchange)
        return exchange, length

    @staticmethod
    def _start(parser: h11.Connection, exchange: Exchange) -> None:
        headers = [(k, v) for k, v in exchange.headers if k not in ("content-length", "transfer-encoding")]
        if not any(k == "host" for k, _ in headers):
            headers.append(("host", "tap"))
        parser.send(h11.Request(method=exchange.method, target=exchange.target, headers=headers))
        parser.send(h11.EndOfMessage())

    def _feed(self, parser: h11.Connection, state: dict, pending: list[Exchange], chunk: bytes,
              now: float) -> None:
        parser.receive_data(chunk)  # b"" is the server's close
        while True:
            if not state["started"]:
                if not pending:
                    return
                self._start(parser, pending[0])
                state["started"] = True
            event = parser.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return
            exchange = pending[0]
            if isinstance(event, h11.Response):
                exchange.status = event.status_code
                exchange.response_headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1"))
                                                  for k, v in event.headers)
            elif isinstance(event, h11.Data):
                if exchange.size < self.max_body:
                    exchange.chunks.append((now, bytes(event.data)))
                exchange.size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                exchange.ended_at = now
                exchange.end = END_SERVER if exchange.status == 200 else END_STATUS
                exchange.end_detail = ("the server ended the response" if exchange.status == 200
                                       else f"HTTP {exchange.status}")
                pending.pop(0)
                if parser.their_state is not h11.DONE or parser.our_state is not h11.DONE:
                    return  # the connection closes after this response
                parser.start_next_cycle()
                state["started"] = False

    async def _serve_page(self, client: trio.SocketStream, exchange: Exchange) -> None:
        exchange.status, exchange.ended_at, exchange.end = 200, time.monotonic(), END_SERVER
        head = (f"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {len(self.page)}\r\n"
                "cache-control: no-store\r\nconnection: close\r\n\r\n").encode()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await client.send_all(head + self.page)
