"""The DICOM node's results: the numbers of an assessment as lines (:func:`result_lines`), burned into a
picture (:func:`result_picture`), as a Secondary Capture (:func:`build_secondary_capture`) and as a Basic
Text SR (:func:`build_text_sr`), both in the patient and study of the received image (:func:`identity_of`)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from .settings import BASIC_TEXT_SR, FOR_PROCESSING_NOTE, SECONDARY_CAPTURE

__all__ = ["READER_NOTE", "build_secondary_capture", "build_text_sr", "identity_of", "result_lines", "result_picture"]

CODING_SCHEME = "99BONEAGE"  # a local coding scheme ("99" prefix, PS3.16 8.2) for the SR's concept names
SERIES_DESCRIPTION = "boneage assessment"
SC_SERIES_NUMBER, SR_SERIES_NUMBER = 990, 991
READER_NOTE = "boneage supports, not replaces, a qualified reader"

# copied from the received image into every result, so a PACS files them with the patient and study
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription",
)
TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _months(value: float) -> str:
    from ...clinical import format_age

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
    if a.rus_chn is not None:
        lines.append(_rus_chn_total(a))
    lines.append(f"Model: {model.get('name')} {model.get('version')}"
                 + (f" (validation MAE {float(mae):.1f} months)" if mae is not None else ""))
    lines.append(_picture_line(a))
    if for_processing:
        lines.append("Assessed on a DX For Processing (raw) image")
    lines.append(READER_NOTE)
    return lines


def _rus_chn_total(assessment) -> str:
    """The RUS-CHN total score and bone age of a per-bone model, and which scale the bone age above is on."""
    summary = assessment.rus_chn
    return (f"RUS-CHN total score {summary['total_score']}: RUS-CHN bone age {_months(summary['age_months'])}, "
            "Chinese standard; the bone age above is its Greulich & Pyle equivalent")


def _bone_items(assessment) -> list:
    """One SR item per bone of a per-bone model (its name, stage and score) and one for the total; none without."""
    from ...clinical.assessment import BONE_NAMES

    if not assessment.bones or assessment.rus_chn is None:
        return []
    items = [_text_item(f"RUS-{bone['name'].upper()}"[:16], f"RUS-CHN {BONE_NAMES.get(bone['name'], bone['name'])}",
                        f"{bone['name']}: stage {bone['stage']}, score {bone['score']:.0f}")
             for bone in assessment.bones]
    return items + [_text_item("RUS-TOTAL", "RUS-CHN total score", _rus_chn_total(assessment))]


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


MIN_PICTURE_WIDTH = 512  # narrower pictures are widened (whole-pixel enlargement, then black margins)


def _at_least(picture: np.ndarray, width: int) -> np.ndarray:
    """``picture`` (RGB) at least ``width`` wide, its pixels as they are: enlarged by a whole factor (each
    pixel repeated, no interpolation) while that fits, then centred between black margins."""
    factor = max(1, width // picture.shape[1])
    if factor > 1:
        picture = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    if picture.shape[1] < width:
        left = (width - picture.shape[1]) // 2
        picture = np.pad(picture, ((0, 0), (left, width - picture.shape[1] - left), (0, 0)))
    return picture


def result_picture(assessment, *, for_processing: bool = False) -> np.ndarray:
    """The Secondary Capture's pixels: the evidence overlay (else the radiograph) as RGB, at its own
    resolution (:func:`~boneage.explain.display_image`: the radiograph as read, at most 1024 px a side; one
    narrower than 512 px is widened without resampling, see :func:`_at_least`), with the numbers of
    :func:`result_lines` written on a black band below it -> ``(H, W, 3)`` uint8."""
    from PIL import Image, ImageDraw

    picture = assessment.evidence if assessment.evidence is not None else assessment.radiograph
    if picture is None:
        picture = np.zeros((MIN_PICTURE_WIDTH, MIN_PICTURE_WIDTH), dtype=np.uint8)
    picture = np.asarray(picture, dtype=np.uint8)
    if picture.ndim == 2:
        picture = np.repeat(picture[:, :, None], 3, axis=2)
    picture = _at_least(picture, MIN_PICTURE_WIDTH)  # so that the text below stays readable
    width = picture.shape[1]
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


def identity_of(source):
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

    from ... import __version__

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

    from ...clinical import DISCLAIMER

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
    from ...clinical import DISCLAIMER

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
    items.extend(_bone_items(a))
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
