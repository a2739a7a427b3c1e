"""The web service's API routes (``/api/health`` and ``/api/assessments...``), built by :func:`api_router`
for one :class:`~boneage.service.context.Service`."""

from __future__ import annotations

import re
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from .. import __version__
from .context import Service, Settings
from .store import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, NotFound
from .uploads import form_field, read_upload

__all__ = ["MAX_OFFSET", "SOURCES", "DecisionIn", "api_router", "links"]

MAX_OFFSET = 2**53  # larger offsets overflow the database's integers (a 500); they get 422
SOURCES = ("api", "ui")
_ID_RE = re.compile(r"^[0-9a-fA-F-]{1,64}$")
_PNG = {200: {"content": {"image/png": {}}}}
_RENDER_CACHE = {"Cache-Control": "private, max-age=3600"}


class DecisionIn(BaseModel):
    """A reader's decision on an assessment."""

    decision: str = Field(description="'accepted' or 'corrected'", examples=["corrected"])
    reader_bone_age_months: float | None = Field(None, description="the reader's bone age (corrected only), 0-240")
    comment: str | None = Field(None, description="free text, up to 2000 characters")
    reader: str | None = Field(None, description="the reader's name or initials")


def links(record: dict) -> dict:
    """``record`` with its ``links`` (self, image, chart, report, decision) added."""
    base = f"/api/assessments/{record['id']}"
    record["links"] = {"self": base, "image": f"{base}/image.png", "chart": f"{base}/chart.png",
                       "report": f"{base}/report.pdf", "decision": f"{base}/decision"}
    return record


def _check_id(assessment_id: str) -> str:
    if not _ID_RE.match(assessment_id):
        raise NotFound(f"no assessment with id {assessment_id[:64]!r}")
    return assessment_id.lower()


def api_router(service: Service, require_token, settings: Settings) -> APIRouter:
    """The API: ``/api/health`` (open to all) and the assessments (behind ``require_token``)."""
    router = APIRouter()
    secured = [Depends(require_token)]

    @router.get("/api/health", tags=["service"])
    def health() -> dict:
        """Liveness and the loaded model (no token needed, no patient data)."""
        service.store.count()  # the database answers
        return {"status": "ok", "version": __version__, "model": service.model_info,
                "auth_required": settings.api_token is not None, "max_upload_mb": settings.max_upload_mb}

    _upload_route(router, service, settings, secured)
    _record_routes(router, service, secured)
    _render_routes(router, service, secured)
    return router


async def _assess_queued(service: Service, data: bytes, filename: str | None, inputs, source: str) -> dict:
    """Assess an upload in a worker thread; 503 when too many uploads are waiting already."""
    if not service.pending.acquire(blocking=False):
        raise HTTPException(503, "too many uploads are waiting for the model; try again shortly",
                            headers={"Retry-After": "5"})
    try:
        return await anyio.to_thread.run_sync(
            lambda: service.assess_upload(data, filename, inputs, source),
            limiter=service.limiter,
        )
    finally:
        service.pending.release()


def _upload_route(router: APIRouter, service: Service, settings: Settings, secured: list) -> None:
    @router.post("/api/assessments", status_code=201, tags=["assessments"], dependencies=secured,
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

        # the fields are checked (422) before the upload is read
        inputs = validate_inputs(form_field(sex), form_field(chronological_age_months), form_field(height_cm))
        data = await read_upload(image, settings.max_upload_bytes, settings.too_large)
        source = request.headers.get("x-boneage-client", "api").strip().lower()
        source = source if source in SOURCES else "api"
        record = links(await _assess_queued(service, data, image.filename, inputs, source))
        headers = {"Location": record["links"]["self"]}
        if record["status"] == "rejected":
            detail = f"the image was rejected: {record['result'].get('rejection')}"
            return JSONResponse({"detail": detail, "id": record["id"], "assessment": record}, status_code=422,
                                headers=headers)
        return JSONResponse(record, status_code=201, headers=headers)


def _record_routes(router: APIRouter, service: Service, secured: list) -> None:
    @router.get("/api/assessments", tags=["assessments"], dependencies=secured)
    def list_assessments(
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> dict:
        """A page of assessments, newest first: ``items``, ``total``, ``offset``, ``limit``."""
        page = service.store.list(offset=offset, limit=limit)
        for item in page["items"]:
            links(item)
        return page

    @router.get("/api/assessments/{assessment_id}", tags=["assessments"], dependencies=secured)
    def get_assessment(assessment_id: str) -> dict:
        """One assessment with the whole result and every reader's decision."""
        return links(service.store.get(_check_id(assessment_id)))

    @router.post("/api/assessments/{assessment_id}/decision", status_code=201, tags=["assessments"],
                 dependencies=secured)
    def add_decision(assessment_id: str, body: DecisionIn) -> dict:
        """Accept the model's bone age, or correct it with the reader's own; the model's stays as it was."""
        decision = service.store.add_decision(_check_id(assessment_id), body.decision,
                                              reader_bone_age_months=body.reader_bone_age_months,
                                              comment=body.comment, reader=body.reader)
        return links(service.store.get(decision["assessment_id"]))


def _render_routes(router: APIRouter, service: Service, secured: list) -> None:
    async def render(function, assessment_id: str) -> bytes:
        return await anyio.to_thread.run_sync(function, _check_id(assessment_id), limiter=service.limiter)

    @router.get("/api/assessments/{assessment_id}/image.png", tags=["assessments"], dependencies=secured,
                response_class=Response, responses=_PNG)
    async def assessment_image(assessment_id: str):
        """The model's evidence overlay, or the radiograph as read when the model offers none."""
        return Response(await render(service.image_png, assessment_id), media_type="image/png",
                        headers=dict(_RENDER_CACHE))

    @router.get("/api/assessments/{assessment_id}/chart.png", tags=["assessments"], dependencies=secured,
                response_class=Response, responses=_PNG)
    async def assessment_chart(assessment_id: str):
        """Bone age against chronological age with the Greulich & Pyle +-2 SD band."""
        return Response(await render(service.chart_png, assessment_id), media_type="image/png",
                        headers=dict(_RENDER_CACHE))

    @router.get("/api/assessments/{assessment_id}/report.pdf", tags=["assessments"], dependencies=secured,
                response_class=Response, responses={200: {"content": {"application/pdf": {}}}})
    async def assessment_report(assessment_id: str):
        """The one-page clinical report (PDF)."""
        data = await render(service.report_pdf, assessment_id)
        return Response(data, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="boneage-{assessment_id[:8]}.pdf"'})
