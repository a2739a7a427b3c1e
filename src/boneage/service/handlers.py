"""The web service's exception handlers: every error is answered as JSON ``{"detail": "<one line>"}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import BoneAgeError
from .store import NotFound

__all__ = ["add_error_handlers", "one_line_validation"]


def one_line_validation(err: RequestValidationError) -> str:
    """The first three problems of a request that failed validation, on one line."""
    parts = []
    for item in err.errors()[:3]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "form"))
        message = str(item.get("msg", "invalid value"))
        if item.get("type") == "missing":
            message = "is required"
        parts.append(f"{where or 'request'}: {message}")
    return "; ".join(parts) or "invalid request"


def add_error_handlers(app: FastAPI) -> None:
    """404 for an unknown assessment, 422 for any other :class:`~boneage.errors.BoneAgeError` and for a
    request that fails validation, 500 (with no detail but the error's type) for a bug."""

    @app.exception_handler(BoneAgeError)
    async def bone_age_error(request: Request, err: BoneAgeError):
        status = 404 if isinstance(err, NotFound) else 422
        return JSONResponse({"detail": str(err)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": one_line_validation(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):  # a bug: uvicorn logs the traceback
        return JSONResponse({"detail": f"internal error ({type(err).__name__}); see the server log"}, status_code=500)
