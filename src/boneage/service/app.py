"""The web service: a REST API and a browser UI over one model and one assessment store.

``create_app(data_dir)`` builds the FastAPI application; ``serve()`` runs it with uvicorn (``boneage serve``).

* ``POST /api/assessments`` (multipart: ``image``, ``sex`` M|F, optional ``chronological_age_months``
  as months or ``9y4m``, ``height_cm``) assesses the radiograph with
  :meth:`boneage.api.Assessor.assess`, stores it with its input image in the
  :class:`~boneage.service.store.AssessmentStore` and answers 201 with the record. An image the model
  rejects (blank, too small, no hand) is stored too and answered with 422, its ``detail`` and its ``id``.
* ``GET /api/assessments?offset=&limit=`` (newest first), ``GET /api/assessments/{id}``, its
  ``image.png`` (the model's evidence overlay when the assessment has one, else the radiograph as
  read), ``chart.png`` (bone age against chronological age) and ``report.pdf``.
* ``POST /api/assessments/{id}/decision`` (JSON ``decision`` accepted|corrected,
  ``reader_bone_age_months``, ``comment``, ``reader``): a reader's decision, stored beside the model's
  result, which is never changed.
* ``GET /api/health`` (never needs the token), ``/docs`` and ``/openapi.json``; the UI at ``/``.

Every error is JSON ``{"detail": "<one line>"}``: 401 (token missing or wrong), 404, 413 (upload
too large), 415 (not a PNG, JPEG, TIFF or DICOM file, judged by its content), 422 (bad field, unreadable
or rejected image), 503 (too many uploads waiting). Model inference runs one image at a time (a lock)
in worker threads, so the event loop keeps answering. Log lines carry assessment ids, image hashes
and timings, never names, sexes, ages or file names.

The parts: :mod:`.context` (the checked settings; the model, the store and the renders),
:mod:`.routes` (the API routes), :mod:`.uploads` (the upload checks and the 413 middleware),
:mod:`.security` (the token, cross-site refusal, security headers), :mod:`.handlers` (JSON errors) and
:mod:`.ui` (the browser UI).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from .config import DATA_DIR_ENV, configure_logging, data_folder, resolve_database_url, spool_uploads_into
from .context import Service, Settings
from .handlers import add_error_handlers
from .routes import api_router
from .security import add_security_headers, token_dependency
from .ui import add_ui
from .uploads import FORM_OVERHEAD_BYTES, UploadLimit, sniff_image

__all__ = ["API_TOKEN_ENV", "DATA_DIR_ENV", "DEFAULT_MAX_UPLOAD_MB", "create_app", "serve", "sniff_image"]

log = logging.getLogger("boneage.service")

API_TOKEN_ENV = "BONEAGE_API_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 32.0
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def _lifespan(service: Service):
    """The application's lifespan: the store is closed when the application stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            service.close()

    return lifespan


def create_app(
    data_dir: str | Path,
    model=None,
    api_token: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    allowed_hosts: list[str] | None = None,
    database_url: str | None = None,
) -> FastAPI:
    """The FastAPI application: API under ``/api``, UI at ``/``, docs at ``/docs``.

    ``model``: a model path (None: the shipped default model) or a ready
    :class:`~boneage.inference.Predictor` or :class:`~boneage.api.Assessor`; it is loaded here, once.
    ``api_token``: when set, every ``/api`` route but ``/api/health`` needs ``Authorization: Bearer <token>``. ``max_upload_mb``:
    the largest image accepted (413 above it). ``allowed_hosts``: when given, requests whose Host header
    names another host get 400 (``serve`` sets the loopback names when it listens on loopback, against
    DNS rebinding). A request that changes something and carries an ``Origin`` other than its own host
    (a cross-site form or script) gets 403. ``database_url``: an SQLAlchemy URL (e.g.
    ``postgresql+psycopg://user@host/db``) instead of the SQLite file in ``data_dir``; uploaded images
    stay in ``data_dir`` either way.
    """
    settings = Settings.checked(api_token, max_upload_mb, allowed_hosts)
    service = Service(Path(data_dir), model, database_url)
    app = FastAPI(
        title="boneage",
        version=__version__,
        summary="Bone age assessment of hand radiographs: supports, and does not replace, a qualified reader.",
        lifespan=_lifespan(service),
    )
    app.state.service = service
    add_error_handlers(app)
    add_security_headers(app)
    app.include_router(api_router(service, token_dependency(settings.api_token), settings))
    add_ui(app)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
                       message=settings.too_large)
    if settings.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    return app


# -------------------------------------------------------------------------------------------- serve
def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    data_dir: str | Path | None = None,
    model: str | Path | None = None,
    api_token: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    log_level: str = "info",
    database_url: str | None = None,
) -> None:
    """Run the service with uvicorn until interrupted (``boneage serve``).

    ``data_dir`` defaults to ``$BONEAGE_DATA_DIR``, ``api_token`` to ``$BONEAGE_API_TOKEN`` and
    ``database_url`` to ``$BONEAGE_DATABASE_URL`` (else SQLite in the data directory); with no data
    directory, :class:`~boneage.errors.InvalidInputError`. Large uploads are spooled inside the data
    directory (``uploads/``, emptied on start), never in the system's temporary folder.
    """
    import uvicorn

    data_dir = data_folder(data_dir)
    spool_uploads_into(data_dir)
    api_token = api_token or os.environ.get(API_TOKEN_ENV) or None
    database_url = resolve_database_url(database_url)
    configure_logging(log_level)
    if not _is_loopback(host) and api_token is None:
        log.warning("listening on %s without an API token: anyone who can reach this port can read the "
                    "assessments (set --api-token or %s)", host, API_TOKEN_ENV)
    allowed_hosts = LOOPBACK_HOSTS if _is_loopback(host) else None
    app = create_app(data_dir, model=model, api_token=api_token, max_upload_mb=max_upload_mb,
                     allowed_hosts=allowed_hosts, database_url=database_url)
    log.info("boneage %s serving on http://%s:%s/ (API token %s)", __version__, host, port,
             "required" if api_token else "not required")
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
