"""The reference server's web page (GET /): one self-contained file, no build step, no external
assets; it follows its jobs through one multiplexed EventSource (see _multistream)."""

from __future__ import annotations

from importlib import resources

from quart import Response

from ._multistream import MultiStreamRoute

PAGE = resources.files("reference_server").joinpath("static/index.html")


def register_page(app, manager) -> None:
    """GET / serves the page; /api/streams serves one stream for several jobs."""

    @app.get("/")
    async def index() -> Response:
        return Response(PAGE.read_bytes(), content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    app.asgi_app = MultiStreamRoute(app.asgi_app, manager)
