"""The DICOM node: a Storage SCP that assesses hand radiographs and sends the result back as DICOM.

``DicomNode(assessor, store, ae_title='BONEAGE', port=11112, destination=('127.0.0.1', 104, 'PACS'))``
listens for C-STORE requests. Each Computed Radiography or Digital X-Ray image is assessed and stored by
the one assessment path, :meth:`boneage.api.Assessor.assess` (sex from PatientSex, chronological age from
the birth and study dates, else PatientAge), in the :class:`~boneage.service.store.AssessmentStore` with
the received file's bytes (``source='dicom'``), exactly as the web service stores an upload. Once the association that delivered the image has closed,
a worker thread builds a Secondary Capture (the radiograph, or the model's evidence overlay when the
assessment has one, with the numbers burned in below it) and a Basic Text SR with the same numbers,
both in the patient and study of the received image, writes them to ``<data_dir>/outbox/`` and sends
them by C-STORE to the destination AE when one is configured. The SCP's reply never waits for that.

C-STORE statuses (also in the README):

* ``0x0000`` assessed and stored;
* ``0x0122`` SOP class not assessed (a Secondary Capture, say: only CR and DX images are);
* ``0xA900`` the data set lacks what an assessment needs: no pixel data, PatientSex missing or other
  than M/F, or BodyPartExamined naming something other than a hand or wrist;
* ``0xC000`` the image cannot be read or decoded;
* ``0xC001`` the model refused the image (blank, too small, no hand); the refusal is stored as a
  ``'rejected'`` assessment;
* ``0xC0FF`` an internal error; it is logged and the node keeps running.

Failures carry an ErrorComment (64 characters at most) saying why. Digital X-Ray *For Processing*
images are accepted and assessed like *For Presentation* ones (the model sees percentile-windowed raw
values, which it was not validated on); the record, the Secondary Capture and the SR say so.

Log lines carry image hashes, assessment ids, AE titles and SOP class names, never patient data.
Importing this module is cheap: pydicom, pynetdicom and the model code load when a node is made.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import BoneAgeError, InvalidInputError, NoPixelDataError

__all__ = [
    "ASSESSED_SOP_CLASSES",
    "OUTBOX_DIRNAME",
    "STATUS",
    "Destination",
    "DicomNode",
    "build_secondary_capture",
    "build_text_sr",
    "parse_destination",
    "result_lines",
    "result_picture",
    "serve_node",
    "validate_ae_title",
    "validate_port",
]

log = logging.getLogger("boneage.service.dicom")

OUTBOX_DIRNAME = "outbox"
MAX_ERROR_COMMENT = 64
CODING_SCHEME = "99BONEAGE"  # a local coding scheme ("99" prefix, PS3.16 8.2) for the SR's concept names
SERIES_DESCRIPTION = "boneage assessment"
SC_SERIES_NUMBER, SR_SERIES_NUMBER = 990, 991

CR = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"  # Digital X-Ray Image Storage - For Processing
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
VERIFICATION = "1.2.840.10008.1.1"
ASSESSED_SOP_CLASSES = {
    CR: "Computed Radiography",
    DX_PRESENTATION: "Digital X-Ray For Presentation",
    DX_PROCESSING: "Digital X-Ray For Processing",
}
# accepted at association negotiation so that a sender gets a clear refusal status, not a rejected context
REFUSED_SOP_CLASSES = {SECONDARY_CAPTURE: "Secondary Capture"}

STATUS = {
    "success": 0x0000,
    "sop_class_not_supported": 0x0122,
    "missing_data": 0xA900,
    "unreadable": 0xC000,
    "rejected": 0xC001,
    "internal_error": 0xC0FF,
}
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")  # a DICOM UID: digits and dots, at most 64 characters
HAND_BODY_PARTS = ("HAND", "WRIST", "FINGER", "CARP")  # a BodyPartExamined containing one names a hand
UPPER_LIMB_BODY_PARTS = ("EXTREMITY", "UPPEREXTREMITY", "UPREXTREMITY", "UPPERLIMB", "UPRLIMB")  # vague, accepted
FOR_PROCESSING_NOTE = ("The image is a Digital X-Ray For Processing (raw detector data); it was assessed after "
                       "percentile windowing, which the model was not validated on.")
READER_NOTE = "boneage supports, not replaces, a qualified reader"

# copied from the received image into every result, so a PACS files them with the patient and study
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription",
)
TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "StudyID", "AccessionNumber", "ReferringPhysicianName")


class Destination(NamedTuple):
    """Where results are sent: ``(host, port, ae_title)``."""

    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class _Refusal(Exception):
    """A C-STORE that is answered with a failure status (not a bug). ``log_text`` is what the log says
    (default: the comment); it differs when the comment would name a patient attribute."""

    def __init__(self, status: str, comment: str, log_text: str | None = None):
        super().__init__(comment)
        self.status, self.comment = status, comment
        self.log_text = comment if log_text is None else log_text


@dataclasses.dataclass
class _Result:
    """One assessed image waiting for its Secondary Capture and SR."""

    record_id: str
    image_sha256: str
    assessment: object  # boneage.clinical.Assessment
    identity: object  # pydicom Dataset with the PATIENT_STUDY_KEYWORDS of the received image
    source_sop_class: str
    source_sop_instance: str | None
    for_processing: bool


# ------------------------------------------------------------------------------------------ arguments
def validate_ae_title(value: str, what: str = "AE title") -> str:
    """A DICOM AE title: 1-16 ASCII characters, no backslash or control characters, not only spaces."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise InvalidInputError(f"{what} is empty; give 1-16 characters such as BONEAGE")
    if len(text) > 16:
        raise InvalidInputError(f"{what} {text!r} is longer than 16 characters")
    if any(ord(ch) < 32 or ord(ch) > 126 or ch == "\\" for ch in text):
        raise InvalidInputError(f"{what} {text!r} may only use printable ASCII characters other than backslash")
    return text


def validate_port(value, what: str = "port", allow_zero: bool = False) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a whole number, got {value!r}") from None
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise InvalidInputError(f"{what} must be between {0 if allow_zero else 1} and 65535, got {port}")
    return port


def parse_destination(value) -> Destination | None:
    """``'AE@HOST:PORT'`` (or a ``(host, port, ae_title)`` tuple, or None) -> :class:`Destination`."""
    if value is None or isinstance(value, Destination):
        return value
    if isinstance(value, (tuple, list)):
        if len(value) != 3:
            raise InvalidInputError(f"destination must be (host, port, ae_title), got {value!r}")
        host, port, ae_title = value
    else:
        text = str(value).strip()
        match = re.fullmatch(r"([^@]+)@(\[[^\]]+\]|[^:@]+):(\d+)", text)
        if not match:
            raise InvalidInputError(f"destination must be AE@HOST:PORT (e.g. PACS@10.0.0.5:104), got {text!r}")
        ae_title, host, port = match.group(1), match.group(2).strip("[]"), match.group(3)
    host = str(host).strip()
    if not host:
        raise InvalidInputError("destination host is empty")
    return Destination(host, validate_port(port, "destination port"), validate_ae_title(ae_title, "destination AE title"))


def _is_hand(body_part: str) -> bool:
    """Whether a BodyPartExamined value may name a hand (an absent one is not checked)."""
    compact = re.sub(r"[^A-Z]", "", body_part.upper())
    return any(word in compact for word in HAND_BODY_PARTS) or compact in UPPER_LIMB_BODY_PARTS


# ------------------------------------------------------------------------------------------ results
def _months(value: float) -> str:
    from ..clinical import format_age

    return f"{format_age(value)} ({value:.1f} months)"


def result_lines(assessment, *, for_processing: bool = False) -> list[str]:
    """The numbers of an ``'ok'`` assessment as short lines, burned into the Secondary Capture."""
    a = assessment
    bone_age = f"Bone age: {_months(a.bone_age_months)}"
    if a.uncertainty:
        bone_age += f", 95% interval {a.uncertainty['low_months']:.0f}-{a.uncertainty['high_months']:.0f} months"
    lines = [bone_age]
    if a.chronological_age_months is None:
        lines.append("Chronological age: unknown (no birth and study dates or Patient's Age)")
    else:
        lines.append(f"Chronological age: {_months(a.chronological_age_months)}; "
                     f"bone age minus chronological age {a.bone_age_minus_chronological_months:+.1f} months")
    children = {"M": "boys", "F": "girls"}.get(a.sex, a.sex)
    if a.sds is None:
        lines.append(f"SDS: not computed (see the structured report); sex {a.sex}")
    else:
        lines.append(f"SDS {a.sds:+.2f}, centile {a.centile:.0f}: {a.reading} (Greulich & Pyle, {children})")
    model = a.model or {}
    mae = model.get("validation_mae_months")
    lines.append(f"Model: {model.get('name')} {model.get('version')}"
                 + (f" (validation MAE {float(mae):.1f} months)" if mae is not None else ""))
    lines.append(_picture_line(a))
    if for_processing:
        lines.append("Assessed on a DX For Processing (raw) image")
    lines.append(READER_NOTE)
    return lines


def _picture_line(assessment) -> str:
    """What the picture above the numbers shows."""
    if assessment.evidence is not None:
        return f"Picture: evidence overlay, {assessment.evidence_label or 'model evidence'}"
    return "Picture: the radiograph as received (this model offers no evidence overlay)"


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except Exception:  # noqa: BLE001 - a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def result_picture(assessment, *, for_processing: bool = False) -> np.ndarray:
    """The Secondary Capture's pixels: the evidence overlay (else the radiograph) as RGB with the
    numbers of :func:`result_lines` written on a black band below it -> ``(H, W, 3)`` uint8."""
    from PIL import Image, ImageDraw

    picture = assessment.evidence if assessment.evidence is not None else assessment.radiograph
    if picture is None:
        picture = np.zeros((512, 512), dtype=np.uint8)
    picture = np.asarray(picture, dtype=np.uint8)
    if picture.ndim == 2:
        picture = np.repeat(picture[:, :, None], 3, axis=2)
    width = max(picture.shape[1], 512)
    if picture.shape[1] < width:  # small images are scaled up so the text stays readable
        height = round(picture.shape[0] * width / picture.shape[1])
        picture = np.asarray(Image.fromarray(picture).resize((width, height), Image.Resampling.BICUBIC))
    font_size = max(14, width // 45)
    font = _font(font_size)
    margin = font_size // 2
    lines = [part for line in result_lines(assessment, for_processing=for_processing)
             for part in _wrap(line, font, width - 2 * margin)]
    line_height = round(font_size * 1.35)
    band = line_height * len(lines) + font_size
    canvas = Image.new("RGB", (width, picture.shape[0] + band), (0, 0, 0))
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.shape[0] + font_size // 2
    for k, line in enumerate(lines):
        colour = (255, 220, 0) if k == 0 else (255, 255, 255)
        draw.text((margin, y), line, fill=colour, font=font)
        y += line_height
    return np.asarray(canvas, dtype=np.uint8)


def _wrap(text: str, font, width: float) -> list[str]:
    """Greedy word wrap of ``text`` to lines no wider than ``width`` pixels in ``font``."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return lines + [current] if current or not lines else lines


def _identity(source):
    """The patient and study elements of a received dataset, as a new Dataset (type 2 ones always present)."""
    from pydicom.dataset import Dataset

    identity = Dataset()
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            identity[keyword] = source[keyword]
    for keyword in TYPE2_KEYWORDS:
        if keyword not in identity:
            setattr(identity, keyword, "")
    if "StudyInstanceUID" not in identity:  # a required element; a new study rather than none
        from pydicom.uid import generate_uid

        identity.StudyInstanceUID = generate_uid()
    return identity


def _new_dataset(identity, sop_class: str, modality: str, series_number: int, now: dt.datetime):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    from .. import __version__

    ds = Dataset()
    ds.update(identity)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.InstanceNumber = 1
    ds.Manufacturer = "boneage"
    ds.ManufacturerModelName = "boneage"
    ds.SoftwareVersions = str(__version__)[:64]
    ds.InstanceCreationDate = ds.ContentDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = ds.SeriesTime = now.strftime("%H%M%S")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def build_secondary_capture(assessment, identity, *, source_sop_class: str | None = None,
                            source_sop_instance: str | None = None, for_processing: bool = False):
    """A Secondary Capture Image (RGB, 8 bits) of :func:`result_picture`, in the patient and study of
    ``identity`` (a Dataset with the received image's patient and study elements)."""
    from pydicom.dataset import Dataset

    from ..clinical import DISCLAIMER

    now = dt.datetime.now()
    pixels = result_picture(assessment, for_processing=for_processing)
    ds = _new_dataset(identity, SECONDARY_CAPTURE, "OT", SC_SERIES_NUMBER, now)
    ds.ConversionType = "WSD"  # workstation
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"  # the burned-in text holds the results, no patient identifiers
    ds.DerivationDescription = f"boneage assessment of the source image; {READER_NOTE}"[:1024]
    ds.ImageComments = " | ".join(result_lines(assessment, for_processing=for_processing) + [DISCLAIMER])[:10240]
    if source_sop_class and source_sop_instance:
        reference = Dataset()
        reference.ReferencedSOPClassUID = source_sop_class
        reference.ReferencedSOPInstanceUID = source_sop_instance
        ds.SourceImageSequence = [reference]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _code(value: str, meaning: str):
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, CODING_SCHEME, meaning
    return code


def _text_item(value: str, meaning: str, text: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code(value, meaning)]
    item.TextValue = text
    return item


def build_text_sr(assessment, identity, *, for_processing: bool = False):
    """A Basic Text SR with the assessment's numbers, statements, model and disclaimer as TEXT items
    (concept names in the local coding scheme ``99BONEAGE``), in the patient and study of ``identity``."""
    from ..clinical import DISCLAIMER

    a = assessment
    ds = _new_dataset(identity, BASIC_TEXT_SR, "SR", SR_SERIES_NUMBER, dt.datetime.now())
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.PerformedProcedureCodeSequence = []
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("BA-REPORT", "Bone age assessment")]
    items = [_text_item("BA", "Bone age", _months(a.bone_age_months))]
    if a.uncertainty:
        items.append(_text_item("BA-CI", "Bone age 95% interval",
                                f"{a.uncertainty['low_months']:.1f}-{a.uncertainty['high_months']:.1f} months "
                                f"({a.uncertainty.get('method')})"))
    items.append(_text_item("SEX", "Sex used", str(a.sex)))
    if a.chronological_age_months is not None:
        items.append(_text_item("CA", "Chronological age", _months(a.chronological_age_months)))
        items.append(_text_item("BA-CA", "Bone age minus chronological age",
                                f"{a.bone_age_minus_chronological_months:+.1f} months"))
    if a.sds is not None:
        items.append(_text_item("SDS", "Bone age SDS", f"{a.sds:+.2f}"))
        items.append(_text_item("CENTILE", "Centile", f"{a.centile:.0f}"))
        items.append(_text_item("READING", "Reading", f"{a.reading} ({a.reference or 'Greulich & Pyle'})"))
    if a.evidence is not None:
        items.append(_text_item("EVIDENCE", "Visual evidence", "The Secondary Capture of this assessment shows the "
                                f"model's evidence overlay: {a.evidence_label or 'model evidence'}."))
    statements = list(a.statements)
    if for_processing and FOR_PROCESSING_NOTE not in statements:
        statements.append(FOR_PROCESSING_NOTE)
    items.extend(_text_item("NOTE", "Note", statement) for statement in statements)
    model = a.model or {}
    items.append(_text_item("MODEL", "Model", f"{model.get('name')} {model.get('version')}"))
    items.append(_text_item("DISCLAIMER", "Disclaimer", DISCLAIMER))
    ds.ContentSequence = items
    return ds


# ------------------------------------------------------------------------------------------ the node
class DicomNode:
    """A Storage SCP that assesses CR and DX hand radiographs and returns the results as DICOM.

    ``model`` is a :class:`boneage.api.Assessor` (or a Predictor, a model path, None for the shipped
    model); ``store`` an :class:`~boneage.service.store.AssessmentStore`. ``port=0`` picks a free port
    (see :attr:`port` after :meth:`start`). ``destination`` is ``(host, port, ae_title)`` or
    ``'AE@HOST:PORT'``; without one, results are only written to ``<data_dir>/outbox``. Only
    associations that call this node's AE title are accepted.
    """

    def __init__(self, model, store, ae_title: str = "BONEAGE", port: int = 11112, host: str = "127.0.0.1",
                 destination=None, *, outbox_dir: str | Path | None = None, send_sr: bool = True):
        from ..api import Assessor

        self.assessor = model if isinstance(model, Assessor) else Assessor(model)
        self.store = store
        self.ae_title = validate_ae_title(ae_title)
        self.host = str(host)
        self._requested_port = validate_port(port, allow_zero=True)
        self.destination = parse_destination(destination)
        self.outbox_dir = Path(outbox_dir) if outbox_dir is not None else Path(store.data_dir) / OUTBOX_DIRNAME
        self.send_sr = send_sr
        self._pending: dict[int, list[_Result]] = {}
        self._pending_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._server = None
        self._ae = None
        self._stopped = threading.Event()

    # -- lifecycle

    @property
    def port(self) -> int:
        """The port listened on (the one chosen by the system when 0 was asked for)."""
        return int(self._server.server_address[1]) if self._server is not None else self._requested_port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, blocking: bool = False) -> DicomNode:
        """Listen for associations; with ``blocking`` serve until :meth:`stop` (from another thread or a
        signal handler) or Ctrl-C, then stop."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

        if self._server is not None:
            raise RuntimeError("the DICOM node is already running")
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        for sop_class in ASSESSED_SOP_CLASSES:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        for sop_class in REFUSED_SOP_CLASSES:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        handlers = [(evt.EVT_C_STORE, self._handle_store), (evt.EVT_CONN_CLOSE, self._handle_close)]
        try:
            server = ae.start_server((self.host, self._requested_port), block=False, evt_handlers=handlers)
        except OSError as err:
            raise InvalidInputError(f"cannot listen on {self.host}:{self._requested_port}: "
                                    f"{err.strerror or err}") from None
        self._ae, self._server = ae, server
        self._stopped.clear()
        self._worker = threading.Thread(target=self._work, name="boneage-dicom-outbox", daemon=True)
        self._worker.start()
        log.info("DICOM node %s listening on %s:%d (results to %s, outbox %s)", self.ae_title, self.host, self.port,
                 self.destination or "no destination", self.outbox_dir)
        if blocking:
            try:
                while not self._stopped.wait(0.5):
                    pass
            finally:
                self.stop()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listening, send what is still pending, and end the worker (the store stays open)."""
        self._stopped.set()
        server, self._server = self._server, None
        ae, self._ae = self._ae, None
        if server is not None:
            server.shutdown()  # no new associations
        if ae is not None:
            deadline = time.monotonic() + min(timeout, 10.0)
            while ae.active_associations and time.monotonic() < deadline:  # let running ones finish
                time.sleep(0.05)
            ae.shutdown()  # aborts any still running
        with self._pending_lock:
            leftovers, self._pending = list(self._pending.values()), {}
        for results in leftovers:
            if results:
                self._queue.put(results)
        worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout)
            if worker.is_alive():
                log.warning("the outbox worker did not finish within %.0f s", timeout)
        if server is not None:
            log.info("DICOM node %s stopped", self.ae_title)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every queued result was written and sent; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def __enter__(self) -> DicomNode:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- receiving

    def _handle_store(self, event) -> object:
        """EVT_C_STORE: assess, store, answer; never raises."""
        from pydicom.dataset import Dataset

        status = Dataset()
        sha = "unknown"
        try:
            sha, result_status, comment = self._receive(event)
            status.Status = STATUS[result_status]
            if comment:
                status.ErrorComment = comment[:MAX_ERROR_COMMENT]
        except Exception as err:  # a bug must not kill the node, nor its message leak patient data into logs
            log.error("internal error on image %s: %s (the node keeps running)", sha[:16], type(err).__name__)
            log.debug("traceback of the internal error on image %s", sha[:16], exc_info=True)
            status.Status = STATUS["internal_error"]
            status.ErrorComment = "boneage internal error; see the node's log"
        return status

    def _receive(self, event) -> tuple[str, str, str | None]:
        """-> ``(image sha256, status key, error comment)``."""
        request = event.request
        sop_class = str(request.AffectedSOPClassUID or "")
        calling = str(getattr(event.assoc.requestor, "ae_title", "") or "").strip()
        if sop_class not in ASSESSED_SOP_CLASSES:
            name = REFUSED_SOP_CLASSES.get(sop_class, sop_class)
            log.warning("refused a %s image from AE %r: only CR and DX radiographs are assessed", name, calling)
            return "-", "sop_class_not_supported", f"{name} is not assessed; send CR or DX"
        data = event.encoded_dataset()
        sha = hashlib.sha256(data).hexdigest()
        log.info("received image %s (%s) from AE %r", sha[:16], ASSESSED_SOP_CLASSES[sop_class], calling)
        try:
            result = self._assess(data, sha, sop_class)
        except _Refusal as refusal:
            log.warning("refused image %s (status 0x%04X): %s", sha[:16], STATUS[refusal.status], refusal.log_text)
            return sha, refusal.status, refusal.comment
        with self._pending_lock:
            self._pending.setdefault(id(event.assoc), []).append(result)
        return sha, "success", None

    def _assess(self, data: bytes, sha: str, sop_class: str) -> _Result:
        """Check, assess and store one received file; raises :class:`_Refusal` for a failure status (an
        image the model refused is stored as a rejected assessment first)."""
        from ..api import read_radiograph

        provisional = f"{sha[:16]}.dcm"
        try:
            item = read_radiograph(data, name=provisional)
        except NoPixelDataError:
            raise _Refusal("missing_data", "the data set has no pixel data") from None
        except BoneAgeError as err:  # the sender needs only why, not our name for the file
            raise _Refusal("unreadable", str(err).removeprefix(f"{provisional}: ")) from None
        ds, meta = item.image.dataset, item.image.meta
        if ds is None:
            raise _Refusal("unreadable", "not a DICOM data set")
        body_part = (meta.body_part or "").strip().upper()
        if body_part and not _is_hand(body_part):
            raise _Refusal("missing_data", f"BodyPartExamined {body_part[:16]} is not a hand")
        sex = str(ds.get("PatientSex", "") or "").strip().upper()
        if sex not in ("M", "F"):
            raise _Refusal("missing_data", "PatientSex must be M or F" + (" (is O)" if sex == "O" else " (missing)"),
                           log_text="PatientSex missing or not M/F")  # the log does not say which
        for_processing = sop_class == DX_PROCESSING
        # the name the image goes by in messages, the record and the report: its SOP Instance UID when it
        # is a valid UID (nothing a sender can use to reach a path or inject text), else its hash
        sop_instance = meta.sop_instance_uid
        safe_uid = sop_instance is not None and len(sop_instance) <= 64 and _UID_RE.fullmatch(sop_instance)
        item.name = f"{sop_instance if safe_uid else sha[:16]}.dcm"
        try:
            assessment = self.assessor.assess(item, reject=True, store=self.store, source="dicom",
                                              notes=[FOR_PROCESSING_NOTE] if for_processing else ())
        except BoneAgeError as err:
            raise _Refusal("unreadable", str(err).removeprefix(f"{item.name}: ")) from None
        record = assessment.record
        if assessment.status != "ok":
            log.info("image %s rejected by the model; assessment %s stored as rejected", sha[:16], record["id"])
            reason = (assessment.rejection or "no reason given").removeprefix(f"{item.name}: ")
            raise _Refusal("rejected", f"refused by the model: {reason}")
        log.info("image %s assessed: assessment %s stored", sha[:16], record["id"])
        return _Result(record["id"], sha, assessment, _identity(ds), sop_class, sop_instance, for_processing)

    def _handle_close(self, event) -> None:
        """EVT_CONN_CLOSE: the association that delivered images is over; queue their results."""
        with self._pending_lock:
            results = self._pending.pop(id(event.assoc), None)
        if results:
            self._queue.put(results)

    # -- sending

    def _work(self) -> None:
        while True:
            results = self._queue.get()
            try:
                if results is None:
                    return
                self._deliver(results)
            except Exception as err:  # never let one result stop the worker
                log.error("could not deliver results: %s", type(err).__name__)
                log.debug("traceback", exc_info=True)
            finally:
                self._queue.task_done()

    def _deliver(self, results: list[_Result]) -> None:
        outgoing = []
        for result in results:
            try:
                datasets = [("Secondary Capture", build_secondary_capture(
                    result.assessment, result.identity, source_sop_class=result.source_sop_class,
                    source_sop_instance=result.source_sop_instance, for_processing=result.for_processing))]
                if self.send_sr:
                    datasets.append(("Basic Text SR", build_text_sr(result.assessment, result.identity,
                                                                    for_processing=result.for_processing)))
                for kind, ds in datasets:
                    path = self.outbox_dir / f"{ds.SOPInstanceUID}.dcm"
                    tmp = path.with_name(f".{path.name}.tmp")
                    try:
                        ds.save_as(tmp, enforce_file_format=True)
                        os.replace(tmp, path)
                    finally:
                        tmp.unlink(missing_ok=True)  # no partial file is left in the outbox
                    outgoing.append((kind, result, ds))
            except Exception as err:
                log.error("could not build the results of assessment %s: %s", result.record_id, type(err).__name__)
                log.debug("traceback", exc_info=True)
        if outgoing and self.destination is not None:
            self._send(outgoing)

    def _send(self, outgoing) -> None:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE

        destination = self.destination
        ae = AE(ae_title=self.ae_title)
        for sop_class in {ds.SOPClassUID for _, _, ds in outgoing}:
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if not assoc.is_established:
            log.error("could not associate with %s; %d result(s) stay in %s only", destination, len(outgoing),
                      self.outbox_dir)
            return
        try:
            for kind, result, ds in outgoing:
                try:
                    reply = assoc.send_c_store(ds)
                    code = reply.get("Status") if reply else None
                except Exception as err:  # noqa: BLE001 - one failed send must not stop the others
                    log.error("sending the %s of assessment %s to %s failed: %s", kind, result.record_id,
                              destination, type(err).__name__)
                    continue
                if code == 0x0000:
                    log.info("sent the %s of assessment %s to %s", kind, result.record_id, destination)
                else:
                    text = "no reply" if code is None else f"status 0x{int(code):04X}"
                    log.error("%s refused the %s of assessment %s (%s); it stays in %s", destination, kind,
                              result.record_id, text, self.outbox_dir)
        finally:
            assoc.release()


# ------------------------------------------------------------------------------------------- serving
def serve_node(*, data_dir: str | Path | None = None, model=None, ae_title: str = "BONEAGE", port: int = 11112,
               host: str = "127.0.0.1", destination=None, database_url: str | None = None,
               threads: int | None = None, announce=None) -> None:
    """Run a DICOM node until Ctrl-C or SIGTERM (``boneage dicom-node``).

    ``data_dir`` defaults to ``$BONEAGE_DATA_DIR`` and ``database_url`` to ``$BONEAGE_DATABASE_URL`` (else
    SQLite in the data folder); ``announce(line)`` is told where the node listens. Bad settings are a
    one-line :class:`~boneage.errors.InvalidInputError`.
    """
    import signal

    from ..api import Assessor
    from .store import DATABASE_URL_ENV, AssessmentStore

    data_dir = _data_folder(data_dir or os.environ.get("BONEAGE_DATA_DIR"))
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        raise InvalidInputError("the DICOM node needs pynetdicom: pip install pynetdicom") from None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO lines name SOP instance UIDs
    logging.getLogger("alembic").setLevel(logging.WARNING)
    assessor = Assessor(model, threads=threads)
    with AssessmentStore(data_dir, database_url or os.environ.get(DATABASE_URL_ENV) or None) as store:
        node = DicomNode(assessor, store, ae_title=ae_title, port=port, host=host, destination=destination)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: node._stopped.set())
        if announce is not None:
            announce(f"{node.ae_title} listening on {host}:{port}, data in {store.data_dir}"
                     + (f", results to {node.destination}" if node.destination else ", results in outbox/ only")
                     + " (Ctrl-C stops)")
        node.start(blocking=True)


def _data_folder(value) -> Path:
    if not value:
        raise InvalidInputError("no data folder: pass --data-dir DIR or set BONEAGE_DATA_DIR")
    data_dir = Path(value).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise InvalidInputError(f"data folder {data_dir} is a file, not a folder")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"cannot use {data_dir} as the data folder ({err.strerror or err})") from None
    return data_dir
