"""HTTP serving of a detector: ``create_app(detector, settings)`` builds the FastAPI app, ``run_server``
serves it on uvicorn with header timeouts and a connection cap."""

from __future__ import annotations

from mfclip.serve.app import create_app
from mfclip.serve.server import run_server
from mfclip.serve.settings import ListenSettings, ServeSettings

__all__ = ["ListenSettings", "ServeSettings", "create_app", "run_server"]
