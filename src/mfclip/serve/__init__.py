"""HTTP serving of a detector: ``create_app(detector, settings)`` builds the FastAPI app."""

from __future__ import annotations

from mfclip.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
