"""The web service's protections: the API token (a FastAPI dependency), the refusal of cross-site requests
that change something, and the security headers on every answer (the UI's Content-Security-Policy, and
``Cache-Control: no-store`` under ``/api/``)."""

from __future__ import annotations

import hmac

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["SECURITY_HEADERS", "UI_CSP", "add_security_headers", "same_origin", "token_dependency"]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
UI_CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; frame-src blob:; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def token_dependency(api_token: str | None):
    """A dependency that answers 401 unless the request carries ``Authorization: Bearer <api_token>``
    (with no token, every request passes)."""
    bearer = HTTPBearer(auto_error=False, description="the server's API token (when it has one)")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if api_token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode("utf-8"), str(api_token).encode("utf-8")):
            raise HTTPException(401, "missing or wrong API token (send 'Authorization: Bearer <token>')",
                                headers={"WWW-Authenticate": "Bearer"})

    return require_token


def same_origin(request: Request) -> bool:
    """True unless the request carries an Origin header whose host and port differ from its Host header."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not sent by a browser from another page (curl, scripts, same-origin GET)
    host = request.headers.get("host", "")
    return origin != "null" and origin.split("://", 1)[-1].rstrip("/").lower() == host.lower()


def add_security_headers(app: FastAPI) -> None:
    """Refuse cross-site requests that change something (403) and add the security headers to every answer."""

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(request):
            return JSONResponse({"detail": "cross-site request refused (its Origin is not this server)"},
                                status_code=403)
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        path = request.url.path
        if not path.startswith(("/docs", "/redoc")):
            response.headers.setdefault("Content-Security-Policy", UI_CSP)
        if path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response
