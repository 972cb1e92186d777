"""The prediction API (FastAPI): `create_app()` in main.py, `serve()` in server.py. See docs/api.md."""

from digitlab.api.main import create_app

__all__ = ["create_app"]
