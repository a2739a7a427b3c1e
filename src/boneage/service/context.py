"""What one running web service holds: its checked :class:`Settings` and the :class:`Service` (the model,
the assessment store and the rendered pictures, charts and reports)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import threading
import time
from pathlib import Path

import anyio
import numpy as np

from ..errors import BoneAgeError, ImageReadError, InvalidInputError
from ..utils import atomic_write
from .config import assessor_for
from .store import AssessmentStore, NotFound
from .uploads import MB, base_name

__all__ = ["MAX_PENDING_UPLOADS", "RENDERS_DIRNAME", "WORKER_THREADS", "Service", "Settings"]

log = logging.getLogger("boneage.service")

MAX_PENDING_UPLOADS = 64  # uploads being assessed or waiting for the model; more get 503
WORKER_THREADS = 4  # threads that read, assess, render and store uploads (inference itself is serialised)
RENDERS_DIRNAME = "renders"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The checked settings of one application (see :func:`boneage.service.app.create_app`)."""

    api_token: str | None
    max_upload_mb: float
    allowed_hosts: list[str] | None = None

    @classmethod
    def checked(cls, api_token: str | None, max_upload_mb: float, allowed_hosts: list[str] | None = None) -> Settings:
        """Settings from ``create_app``'s arguments: a blank token is no token; a bad upload limit is a
        one-line :class:`~boneage.errors.InvalidInputError`."""
        if not (isinstance(max_upload_mb, (int, float)) and math.isfinite(max_upload_mb) and max_upload_mb > 0):
            raise InvalidInputError(f"max_upload_mb must be a positive number, got {max_upload_mb!r}")
        if api_token is not None and not str(api_token).strip():
            api_token = None
        return cls(api_token, max_upload_mb, allowed_hosts)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def too_large(self) -> str:
        """The 413's detail."""
        return f"the upload is larger than the {self.max_upload_mb:g} MB limit"


def _reason(err: Exception) -> str:
    """The part of a MissingSexError in brackets: why the image does not say."""
    text = str(err)
    return text[text.find("(") + 1 : text.rfind(")")] if "(" in text else "it is not in the file"


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


STALE_TEMPORARY_SECONDS = 3600.0


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove what a killed process left of :func:`~boneage.utils.atomic_write` in ``folder`` (its
    ``.NAME.PID-THREAD-ID.tmp`` files), once they are an hour old (another process on the same data
    directory may be writing a younger one). Renders are written beside their target, in the data directory."""
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    for leftover in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                leftover.unlink()


class Service:
    """The model, the store and the rendering of one running application."""

    def __init__(self, data_dir: Path, model, database_url: str | None = None):
        self.assessor = assessor_for(model)
        self.store = AssessmentStore(data_dir, database_url)
        self.renders = self.store.data_dir / RENDERS_DIRNAME
        self.renders.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(self.renders)
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
        try:
            assessment = self.assessor.assess(data, inputs=inputs, name=base_name(filename), reject=True,
                                              store=self.store, source=source)
        except MissingSexError as err:
            raise InvalidInputError(f"sex is required (M or F) and the image does not say ({_reason(err)}): "
                                    "give it with the upload (form field sex)") from None
        except BoneAgeError as err:
            log.info("upload not assessed (%s, %.0f ms)", type(err).__name__, (time.perf_counter() - started) * 1000)
            raise
        record = assessment.record
        picture = assessment.evidence if assessment.evidence is not None else assessment.radiograph
        if picture is not None:
            self._cache(f"{record['id']}.png", _png_bytes(picture))
        log.info("assessment %s: image %s, status %s, evidence %s, %.0f ms", record["id"], record["image_sha256"][:16],
                 record["status"], "yes" if assessment.evidence is not None else "no",
                 (time.perf_counter() - started) * 1000)
        return record

    # -- pictures and reports

    def _cache(self, name: str, data: bytes) -> None:
        """Keep a render; a render is a cache (it is made again on demand), so failing to keep it is no error."""
        with contextlib.suppress(OSError):
            atomic_write(self.renders / name, data, fsync=False)

    def _cached(self, name: str, draw) -> bytes:
        """The render ``name`` from the cache, else ``draw()`` kept in the cache."""
        cached = self.renders / name
        if cached.is_file():
            return cached.read_bytes()
        data = draw()
        self._cache(name, data)
        return data

    def image_png(self, assessment_id: str) -> bytes:
        """The evidence overlay (or the radiograph) of an assessment as PNG: from the cache, else drawn
        again from the stored image (the overlay with the same model, which is deterministic)."""
        record = self.store.get(assessment_id)
        return self._cached(f"{record['id']}.png", lambda: _png_bytes(self._draw(record)))

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
        """Bone age against chronological age as PNG (from the cache, else drawn)."""
        record = self.store.get(assessment_id)
        return self._cached(f"{record['id']}-chart.png", lambda: _chart(record["result"]))

    def report_pdf(self, assessment_id: str) -> bytes:
        from PIL import Image

        from ..clinical import render_report

        record = self.store.get(assessment_id)
        picture = np.asarray(Image.open(io.BytesIO(self.image_png(record["id"]))))
        assessment = _assessment_from_record(record, picture)
        if assessment.evidence is not None:  # its page 2: the radiograph without the overlay
            assessment.radiograph = self._radiograph(record)
        return render_report(assessment, "pdf")

    def _radiograph(self, record: dict) -> np.ndarray | None:
        """The stored image as read, for display (:func:`~boneage.explain.display_image`), or None."""
        from ..api import read_radiograph
        from ..explain import display_image

        try:
            return display_image(read_radiograph(self.store.image_path(record["id"]), name=record["id"]).image.pixels)
        except BoneAgeError:
            return None


def _chart(result: dict) -> bytes:
    """The growth chart of a stored result as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..clinical import growth_chart

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
    return buffer.getvalue()
