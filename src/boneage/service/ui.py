"""The browser UI: ``/`` (``static/index.html``) and its files under ``/static``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "add_ui"]

STATIC_DIR = Path(__file__).resolve().parent / "static"


def add_ui(app: FastAPI) -> None:
    """Serve the UI's page at ``/`` (left out of the OpenAPI schema) and its files at ``/static``."""

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
