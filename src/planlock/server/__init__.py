"""planlock.server: the HTTP approval service (FastAPI) and its web page."""

from planlock.server._app import ServerConfig, create_app
from planlock.server._auth import TokenStore
from planlock.server._engine import QueueEngine

__all__ = ["QueueEngine", "ServerConfig", "TokenStore", "create_app"]
