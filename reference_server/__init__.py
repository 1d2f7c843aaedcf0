"""The reference server: a job-progress SSE API implementing the contract, on quart-trio and hypercorn."""

from ._config import ServerConfig
from ._app import VERSION, create_app, serve

__all__ = ["ServerConfig", "create_app", "serve"]
__version__ = VERSION
