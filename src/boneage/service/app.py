"""The web service: a REST API and a browser UI over one model and one assessment store.

``create_app(data_dir)`` builds the FastAPI application; ``serve()`` runs it with uvicorn (``boneage serve``).

* ``POST /api/assessments`` (multipart: ``image``, ``sex`` M|F, optional ``chronological_age_months``
  as months or ``9y4m``, ``height_cm``) assesses the radiograph with
  :func:`boneage.clinical.assess_or_reject`, stores it with its input image in the
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
"""

from __future__ import annotations

import contextlib
import hmac
import io
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Annotated

import anyio
import numpy as np
from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from ..errors import BoneAgeError, ImageReadError, InvalidInputError
from ..utils import atomic_write
from .store import (
    DATABASE_URL_ENV,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    AssessmentStore,
    NotFound,
)

__all__ = ["API_TOKEN_ENV", "DATA_DIR_ENV", "DEFAULT_MAX_UPLOAD_MB", "create_app", "serve", "sniff_image"]

log = logging.getLogger("boneage.service")

DATA_DIR_ENV = "BONEAGE_DATA_DIR"
API_TOKEN_ENV = "BONEAGE_API_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 32.0
MB = 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small text fields
MAX_OFFSET = 2**53  # larger offsets overflow the database's integers (a 500); they get 422
MAX_PENDING_UPLOADS = 64  # uploads being assessed or waiting for the model; more get 503
WORKER_THREADS = 4  # threads that read, assess, render and store uploads (inference itself is serialised)
RENDERS_DIRNAME = "renders"
STATIC_DIR = Path(__file__).resolve().parent / "static"
SOURCES = ("api", "ui")
_ID_RE = re.compile(r"^[0-9a-fA-F-]{1,64}$")
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_UI_CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; frame-src blob:; "
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
IMAGE_TYPES = {  # suffix (chooses the reader) and media type, by content
    "png": (".png", "image/png"),
    "jpeg": (".jpg", "image/jpeg"),
    "tiff": (".tif", "image/tiff"),
    "dicom": (".dcm", "application/dicom"),
}


# ------------------------------------------------------------------------------------------ checks
def sniff_image(data: bytes, filename: str | None = None) -> str | None:
    """The kind of an uploaded file by its content: ``'png'``, ``'jpeg'``, ``'tiff'``, ``'dicom'`` or None.

    A DICOM file needs 'DICM' at byte 128 (Part 10), or, without the preamble, a ``.dcm``/``.dicom``
    name and a first tag in group 0002 or 0008.
    """
    head = bytes(data[:132])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    suffix = Path(filename or "").suffix.lower()
    if suffix in (".dcm", ".dicom") and head[:2] in (b"\x02\x00", b"\x08\x00"):
        return "dicom"
    return None


def _field(value: str | None) -> str | None:
    """A form field with blanks treated as absent."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def _reason(err: Exception) -> str:
    """The part of a MissingSexError in brackets: why the image does not say."""
    text = str(err)
    return text[text.find("(") + 1 : text.rfind(")")] if "(" in text else "it is not in the file"


def _base_name(filename: str | None) -> str:
    name = re.split(r"[\\/]", filename or "")[-1].strip()
    return name[:200] or "upload"


def _check_id(assessment_id: str) -> str:
    if not _ID_RE.match(assessment_id):
        raise NotFound(f"no assessment with id {assessment_id[:64]!r}")
    return assessment_id.lower()


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def _assessment_from_record(record: dict, picture: np.ndarray | None):
    """An :class:`~boneage.clinical.Assessment` rebuilt from a stored record (for the PDF report), with
    ``picture`` (what ``image.png`` shows: the RGB evidence overlay, or the grayscale radiograph)."""
    from ..clinical import Assessment

    result = record.get("result") if isinstance(record.get("result"), dict) else {}
    evidence = result.get("evidence") if isinstance(result.get("evidence"), dict) else {}
    overlay = picture is not None and picture.ndim == 3
    assessment = Assessment.from_dict(result, radiograph=None if overlay else picture,
                                      evidence=picture if overlay else None)
    if evidence.get("available") and not overlay:
        assessment.statements.append("The model's evidence overlay could not be drawn again (the service now runs "
                                     "another model, or the stored image cannot be read); the radiograph is shown.")
    return assessment


# ------------------------------------------------------------------------------------------ the work
class _Service:
    """The model, the store and the rendering of one running application."""

    def __init__(self, data_dir: Path, model, max_upload_bytes: int, database_url: str | None = None):
        from ..api import Assessor
        from ..inference import Predictor

        self.assessor = model if isinstance(model, Assessor) else Assessor(model if isinstance(model, Predictor) else model)
        self.store = AssessmentStore(data_dir, database_url)
        self.renders = self.store.data_dir / RENDERS_DIRNAME
        self.renders.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = max_upload_bytes
        self.limiter = anyio.CapacityLimiter(WORKER_THREADS)
        self.pending = threading.BoundedSemaphore(MAX_PENDING_UPLOADS)
        self.model_info = {"name": self.assessor.model_info["name"], "version": self.assessor.model_info["version"]}
        log.info("model %s %s loaded", self.model_info["name"], self.model_info["version"])

    def close(self) -> None:
        self.store.close()

    # -- assessing

    def assess_upload(self, data: bytes, filename: str, inputs, source: str) -> dict:
        """Assess one upload (``inputs``: its checked form fields) and store it; returns the stored record.
        Raises BoneAgeError for bad input."""
        from ..api import MissingSexError

        started = time.perf_counter()
        name = _base_name(filename)
        try:
            assessment = self.assessor.assess(data, inputs=inputs, name=name, reject=True, store=self.store,
                                              source=source)
        except MissingSexError as err:
            raise InvalidInputError(f"sex is required (M or F) and the image does not say ({_reason(err)}): "
                                    "give it with the upload (form field sex)") from None
        except BoneAgeError as err:
            log.info("upload not assessed (%s, %.0f ms)", type(err).__name__, (time.perf_counter() - started) * 1000)
            raise
        record = assessment.record
        picture = assessment.evidence if assessment.evidence is not None else assessment.radiograph
        if picture is not None:
            with contextlib.suppress(OSError):  # a render is a cache: it is made again on demand
                atomic_write(self.renders / f"{record['id']}.png", _png_bytes(picture), fsync=False)
        log.info("assessment %s: image %s, status %s, evidence %s, %.0f ms", record["id"], record["image_sha256"][:16],
                 record["status"], "yes" if assessment.evidence is not None else "no",
                 (time.perf_counter() - started) * 1000)
        return record

    # -- pictures and reports

    def image_png(self, assessment_id: str) -> bytes:
        """The evidence overlay (or the radiograph) of an assessment as PNG: from the cache, else drawn
        again from the stored image (the overlay with the same model, which is deterministic)."""
        record = self.store.get(assessment_id)
        cached = self.renders / f"{record['id']}.png"
        if cached.is_file():
            return cached.read_bytes()
        data = _png_bytes(self._draw(record))
        with contextlib.suppress(OSError):
            atomic_write(cached, data, fsync=False)
        return data

    def _draw(self, record: dict) -> np.ndarray:
        from ..api import read_radiograph
        from ..explain import display_image

        try:
            item = read_radiograph(self.store.image_path(record["id"]), name=record["id"])
        except NotFound:
            raise
        except BoneAgeError:
            raise ImageReadError(f"the stored image of assessment {record['id']} cannot be read") from None
        result = record.get("result") or {}
        evidence = result.get("evidence") if isinstance(result.get("evidence"), dict) else {}
        same_model = (record.get("model_name"), record.get("model_version")) == (
            self.model_info["name"], self.model_info["version"])
        if record.get("status") == "ok" and evidence.get("available") and same_model:
            return self.assessor.picture(item, record["sex"], name=record["id"])
        return display_image(item.image.pixels)

    def chart_png(self, assessment_id: str) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from ..clinical import growth_chart

        record = self.store.get(assessment_id)
        cached = self.renders / f"{record['id']}-chart.png"
        if cached.is_file():
            return cached.read_bytes()
        result = record["result"]
        uncertainty = result.get("uncertainty") if isinstance(result.get("uncertainty"), dict) else {}
        low, high = uncertainty.get("low_months"), uncertainty.get("high_months")
        interval = None if low is None or high is None else (low, high)
        figure = Figure(figsize=(4.6, 4.2))
        FigureCanvasAgg(figure)
        growth_chart(figure, result.get("sex"), result.get("chronological_age_months"),
                     result.get("bone_age_months"), interval_months=interval)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        data = buffer.getvalue()
        with contextlib.suppress(OSError):
            atomic_write(cached, data, fsync=False)
        return data

    def report_pdf(self, assessment_id: str) -> bytes:
        from PIL import Image

        from ..clinical import render_report

        record = self.store.get(assessment_id)
        picture = np.asarray(Image.open(io.BytesIO(self.image_png(record["id"]))))
        return render_report(_assessment_from_record(record, picture), "pdf")


# ---------------------------------------------------------------------------------------- middleware
class _BodyTooLarge(Exception):
    """Raised inside a request's receive channel when its body passes the limit."""


class _UploadLimit:
    """Refuse request bodies above a limit with 413: at once by Content-Length, else while reading
    (whatever the inner layers make of the interrupted read, the client gets the 413)."""

    def __init__(self, app, max_bytes: int, message: str):
        self.app, self.max_bytes = app, max_bytes
        self.payload = json.dumps({"detail": message}).encode("utf-8")

    async def _refuse(self, send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.payload)).encode()),
                   (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": self.payload})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        received, exceeded, started = 0, False, False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:  # the app's answer to the interrupted read is replaced by the 413
                if not started:
                    started = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
            if not started:
                await self._refuse(send)


# ---------------------------------------------------------------------------------------------- API
class DecisionIn(BaseModel):
    """A reader's decision on an assessment."""

    decision: str = Field(description="'accepted' or 'corrected'", examples=["corrected"])
    reader_bone_age_months: float | None = Field(None, description="the reader's bone age (corrected only), 0-240")
    comment: str | None = Field(None, description="free text, up to 2000 characters")
    reader: str | None = Field(None, description="the reader's name or initials")


def _same_origin(request: Request) -> bool:
    """True unless the request carries an Origin header whose host and port differ from its Host header."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not sent by a browser from another page (curl, scripts, same-origin GET)
    host = request.headers.get("host", "")
    return origin != "null" and origin.split("://", 1)[-1].rstrip("/").lower() == host.lower()


def _links(record: dict) -> dict:
    base = f"/api/assessments/{record['id']}"
    record["links"] = {"self": base, "image": f"{base}/image.png", "chart": f"{base}/chart.png",
                       "report": f"{base}/report.pdf", "decision": f"{base}/decision"}
    return record


def _one_line_validation(err: RequestValidationError) -> str:
    parts = []
    for item in err.errors()[:3]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "form"))
        message = str(item.get("msg", "invalid value"))
        if item.get("type") == "missing":
            message = "is required"
        parts.append(f"{where or 'request'}: {message}")
    return "; ".join(parts) or "invalid request"


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
    :class:`~boneage.inference.Predictor`; it is loaded here, once. ``api_token``: when set, every
    ``/api`` route but ``/api/health`` needs ``Authorization: Bearer <token>``. ``max_upload_mb``:
    the largest image accepted (413 above it). ``allowed_hosts``: when given, requests whose Host header
    names another host get 400 (``serve`` sets the loopback names when it listens on loopback, against
    DNS rebinding). A request that changes something and carries an ``Origin`` other than its own host
    (a cross-site form or script) gets 403. ``database_url``: an SQLAlchemy URL (e.g.
    ``postgresql+psycopg://user@host/db``) instead of the SQLite file in ``data_dir``; uploaded images
    stay in ``data_dir`` either way.
    """
    if not (isinstance(max_upload_mb, (int, float)) and math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise InvalidInputError(f"max_upload_mb must be a positive number, got {max_upload_mb!r}")
    if api_token is not None and not str(api_token).strip():
        api_token = None
    max_upload_bytes = int(max_upload_mb * MB)
    service = _Service(Path(data_dir), model, max_upload_bytes, database_url)
    too_large = f"the upload is larger than the {max_upload_mb:g} MB limit"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="boneage",
        version=__version__,
        summary="Bone age assessment of hand radiographs: supports, and does not replace, a qualified reader.",
        lifespan=lifespan,
    )
    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description="the server's API token (when it has one)")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if api_token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode("utf-8"), str(api_token).encode("utf-8")):
            raise HTTPException(401, "missing or wrong API token (send 'Authorization: Bearer <token>')",
                                headers={"WWW-Authenticate": "Bearer"})

    # -- errors: JSON {"detail": one line}

    @app.exception_handler(BoneAgeError)
    async def bone_age_error(request: Request, err: BoneAgeError):
        status = 404 if isinstance(err, NotFound) else 422
        return JSONResponse({"detail": str(err)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": _one_line_validation(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):  # a bug: uvicorn logs the traceback
        return JSONResponse({"detail": f"internal error ({type(err).__name__}); see the server log"}, status_code=500)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            return JSONResponse({"detail": "cross-site request refused (its Origin is not this server)"},
                                status_code=403)
        response = await call_next(request)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        path = request.url.path
        if not path.startswith(("/docs", "/redoc")):
            response.headers.setdefault("Content-Security-Policy", _UI_CSP)
        if path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- routes

    @app.get("/api/health", tags=["service"])
    def health() -> dict:
        """Liveness and the loaded model (no token needed, no patient data)."""
        service.store.count()  # the database answers
        return {"status": "ok", "version": __version__, "model": service.model_info,
                "auth_required": api_token is not None, "max_upload_mb": max_upload_mb}

    secured = [Depends(require_token)]

    @app.post("/api/assessments", status_code=201, tags=["assessments"], dependencies=secured,
              responses={413: {"description": "upload too large"}, 415: {"description": "not an image"},
                         422: {"description": "bad field, unreadable image, or image rejected by the model"}})
    async def create_assessment(
        request: Request,
        image: Annotated[UploadFile, File(description="radiograph: PNG, JPEG, TIFF or DICOM")],
        sex: Annotated[str | None, Form(description="M or F (may be omitted for a DICOM with PatientSex)")] = None,
        chronological_age_months: Annotated[str | None, Form(description="months, or text such as 9y4m")] = None,
        height_cm: Annotated[str | None, Form(description="height in cm, for the adult height prediction")] = None,
    ):
        """Assess one radiograph and store it; answers the stored record (``bone_age_months``, ``sds``,
        ``result`` with the whole assessment, ``links``)."""
        from ..api import validate_inputs

        inputs = validate_inputs(_field(sex), _field(chronological_age_months), _field(height_cm))  # 422 before the upload is read
        data = await image.read(service.max_upload_bytes + 1)
        if len(data) > service.max_upload_bytes:
            raise HTTPException(413, too_large)
        if not data:
            raise HTTPException(422, "the image file is empty")
        kind = sniff_image(data, image.filename)
        if kind is None:
            raise HTTPException(415, "the file is not a PNG, JPEG, TIFF or DICOM image (judged by its content)")
        source = request.headers.get("x-boneage-client", "api").strip().lower()
        source = source if source in SOURCES else "api"
        if not service.pending.acquire(blocking=False):
            raise HTTPException(503, "too many uploads are waiting for the model; try again shortly",
                                headers={"Retry-After": "5"})
        try:
            record = await anyio.to_thread.run_sync(
                lambda: service.assess_upload(data, image.filename, inputs, source),
                limiter=service.limiter,
            )
        finally:
            service.pending.release()
        _links(record)
        headers = {"Location": record["links"]["self"]}
        if record["status"] == "rejected":
            detail = f"the image was rejected: {record['result'].get('rejection')}"
            return JSONResponse({"detail": detail, "id": record["id"], "assessment": record}, status_code=422,
                                headers=headers)
        return JSONResponse(record, status_code=201, headers=headers)

    @app.get("/api/assessments", tags=["assessments"], dependencies=secured)
    def list_assessments(
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> dict:
        """A page of assessments, newest first: ``items``, ``total``, ``offset``, ``limit``."""
        page = service.store.list(offset=offset, limit=limit)
        for item in page["items"]:
            _links(item)
        return page

    @app.get("/api/assessments/{assessment_id}", tags=["assessments"], dependencies=secured)
    def get_assessment(assessment_id: str) -> dict:
        """One assessment with the whole result and every reader's decision."""
        return _links(service.store.get(_check_id(assessment_id)))

    @app.post("/api/assessments/{assessment_id}/decision", status_code=201, tags=["assessments"],
              dependencies=secured)
    def add_decision(assessment_id: str, body: DecisionIn) -> dict:
        """Accept the model's bone age, or correct it with the reader's own; the model's stays as it was."""
        decision = service.store.add_decision(_check_id(assessment_id), body.decision,
                                              reader_bone_age_months=body.reader_bone_age_months,
                                              comment=body.comment, reader=body.reader)
        return _links(service.store.get(decision["assessment_id"]))

    async def _render(function, assessment_id: str) -> bytes:
        return await anyio.to_thread.run_sync(function, _check_id(assessment_id), limiter=service.limiter)

    png = {200: {"content": {"image/png": {}}}}

    @app.get("/api/assessments/{assessment_id}/image.png", tags=["assessments"], dependencies=secured,
             response_class=Response, responses=png)
    async def assessment_image(assessment_id: str):
        """The model's evidence overlay, or the radiograph as read when the model offers none."""
        return Response(await _render(service.image_png, assessment_id), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/assessments/{assessment_id}/chart.png", tags=["assessments"], dependencies=secured,
             response_class=Response, responses=png)
    async def assessment_chart(assessment_id: str):
        """Bone age against chronological age with the Greulich & Pyle +-2 SD band."""
        return Response(await _render(service.chart_png, assessment_id), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/assessments/{assessment_id}/report.pdf", tags=["assessments"], dependencies=secured,
             response_class=Response, responses={200: {"content": {"application/pdf": {}}}})
    async def assessment_report(assessment_id: str):
        """The one-page clinical report (PDF)."""
        data = await _render(service.report_pdf, assessment_id)
        return Response(data, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="boneage-{assessment_id[:8]}.pdf"'})

    # -- the UI

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(_UploadLimit, max_bytes=max_upload_bytes + FORM_OVERHEAD_BYTES, message=too_large)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
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
    directory, :class:`~boneage.errors.InvalidInputError`.
    """
    import uvicorn

    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if not data_dir:
        raise InvalidInputError(f"no data directory: pass --data-dir DIR or set {DATA_DIR_ENV}")
    data_dir = Path(data_dir).expanduser()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"cannot use {data_dir} as the data directory ({err.strerror or err})") from None
    api_token = api_token or os.environ.get(API_TOKEN_ENV) or None
    database_url = database_url or os.environ.get(DATABASE_URL_ENV) or None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are migration plumbing
    if not _is_loopback(host) and api_token is None:
        log.warning("listening on %s without an API token: anyone who can reach this port can read the "
                    "assessments (set --api-token or %s)", host, API_TOKEN_ENV)
    allowed_hosts = ["127.0.0.1", "localhost", "::1", "[::1]"] if _is_loopback(host) else None
    app = create_app(data_dir, model=model, api_token=api_token, max_upload_mb=max_upload_mb,
                     allowed_hosts=allowed_hosts, database_url=database_url)
    log.info("boneage %s serving on http://%s:%s/ (API token %s)", __version__, host, port,
             "required" if api_token else "not required")
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
