"""The clinical meaning of a bone age: :class:`Assessment` (the result every front end shows and stores)
and :func:`interpret`, which puts a bone age in context: bone age minus chronological age, SDS, centile and
reading against Greulich & Pyle, a Bayley-Pinneau adult height, and the bone age's interval (made by the
caller: calibrated when the model has a calibration). Running a model on a radiograph is :mod:`boneage.api`'s
job; this module needs no model.

What cannot be computed is said, not guessed: an age outside the reference tables, a bone age outside
0-19 years or a bone age outside a Bayley-Pinneau table leave that number out (None) and add a sentence
to ``Assessment.statements``. Bad input (a sex other than M/F, an impossible age or height) raises a
:class:`~boneage.errors.BoneAgeError`.

All ages are in months.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import re

import numpy as np

from .. import __version__
from ..errors import InvalidInputError
from ..utils import format_months
from .reference import (
    BONE_AGE_RANGE_MONTHS,
    HEIGHT_RANGE_CM,
    OutOfReferenceRange,
    bone_age_sds,
    predicted_adult_height,
)

__all__ = [
    "AGE_SOURCES",
    "BONE_NAMES",
    "DISCLAIMER",
    "RUS_CHN_SCALE",
    "SEX_WORDS",
    "Assessment",
    "check_evidence",
    "check_height",
    "chronological_age",
    "chronological_age_from_meta",
    "format_age",
    "interpret",
    "parse_age",
    "patient_fields",
    "study_fields",
]

DISCLAIMER = (
    "This report was produced by software (boneage) to support, not replace, a qualified reader: the bone "
    "age and every number derived from it must be checked against the radiograph by a clinician."
)
MAX_AGE_MONTHS = 240.0
SEX_WORDS = {"M": "male", "F": "female"}  # the sex as a report and a statement write it
RUS_CHN_SCALE = (
    "bone_age_months is the Greulich & Pyle equivalent of the RUS-CHN result (a monotone map fitted on the model's "
    "training images); the RUS-CHN score and bone age are on the Chinese standard's (China-05) scale."
)
# the 13 RUS-CHN bones (boneage.data.rus_chn.BONES) as a reader names them
BONE_NAMES = {
    "Radius": "radius", "Ulna": "ulna",
    "MCPFirst": "1st metacarpal", "MCPThird": "3rd metacarpal", "MCPFifth": "5th metacarpal",
    "PIPFirst": "1st proximal phalanx", "PIPThird": "3rd proximal phalanx", "PIPFifth": "5th proximal phalanx",
    "MIPThird": "3rd middle phalanx", "MIPFifth": "5th middle phalanx",
    "DIPFirst": "1st distal phalanx", "DIPThird": "3rd distal phalanx", "DIPFifth": "5th distal phalanx",
}
AGE_SOURCES = {
    "argument": "given",
    "dicom_dates": "from the DICOM birth and study dates",
    "dicom_age": "from the DICOM Patient's Age",
}
_AGE_RE = re.compile(
    r"^(?:(?P<years>\d+(?:\.\d+)?)\s*(?:y|yr|yrs|year|years)(?![a-z])\s*,?)?\s*"
    r"(?:(?P<months>\d+(?:\.\d+)?)\s*(?:m|mo|mos|month|months)?)?$"
)


# --------------------------------------------------------------------------------------------- ages
def parse_age(text) -> float:
    """An age in months from ``'9y4m'``, ``'9y'``, ``'4m'``, ``'9 y 4 m'``, ``'9.5y'`` or ``'112'`` (months).

    A number is taken as months. Raises :class:`InvalidInputError` for anything else, a negative age or
    an age above 240 months (20 years).
    """
    example = "give it as 9y4m, 9y, 4m or a number of months such as 112"
    if isinstance(text, bool):
        raise InvalidInputError(f"age must be a number of months or text such as 9y4m, got {text!r}")
    if isinstance(text, (int, float, np.integer, np.floating)):
        months = float(text)
    else:
        raw = str(text) if text is not None else ""
        value = raw.strip().lower()
        if not value:
            raise InvalidInputError(f"age is empty; {example}")
        if value.startswith("-"):
            raise InvalidInputError(f"age must not be negative, got {raw!r}")
        match = _AGE_RE.match(value)
        if not match or (match.group("years") is None and match.group("months") is None):
            raise InvalidInputError(f"age {raw!r} not understood; {example}")
        months = float(match.group("years") or 0) * 12.0 + float(match.group("months") or 0)
    if not math.isfinite(months):
        raise InvalidInputError(f"age must be a finite number of months, got {text!r}")
    if months < 0:
        raise InvalidInputError(f"age must not be negative, got {text!r}")
    if months > MAX_AGE_MONTHS:
        raise InvalidInputError(
            f"age {months:g} months is above {MAX_AGE_MONTHS:g} months (20 years); bone age assessment is for children"
        )
    return months


def format_age(months: float | None) -> str | None:
    """``131.4`` -> ``'10 years 11 months'`` (whole months, rounded; singular forms; a sign when negative)."""
    return format_months(months, "long")


def _date(value: str | None) -> _dt.date | None:
    try:
        return _dt.datetime.strptime(str(value).strip()[:8], "%Y%m%d").date() if value else None
    except ValueError:
        return None


def chronological_age_from_meta(meta) -> tuple[float | None, str | None, list[str]]:
    """Chronological age from an image's metadata -> ``(months, source, statements)``.

    The birth and study dates (``source='dicom_dates'``) are preferred to the coarser Patient's Age tag
    (``'dicom_age'``); ``(None, None, [...])`` when neither is usable, with sentences saying why.
    """
    statements: list[str] = []
    birth, study = _date(getattr(meta, "birth_date", None)), _date(getattr(meta, "study_date", None))
    if getattr(meta, "birth_date", None) and getattr(meta, "study_date", None):
        if birth is None or study is None:
            statements.append("The DICOM birth or study date is not a valid YYYYMMDD date and was not used.")
        elif study < birth:
            statements.append(f"The DICOM study date ({study.isoformat()}) is before the birth date "
                              f"({birth.isoformat()}); the dates were not used.")
        else:
            return round((study - birth).days * 12.0 / 365.25, 2), "dicom_dates", statements
    age = getattr(meta, "age_months", None)
    if age is not None and 0 <= float(age) <= MAX_AGE_MONTHS:
        return float(age), "dicom_age", statements
    return None, None, statements


# ------------------------------------------------------------------------------------------ results
@dataclasses.dataclass
class Assessment:
    """One radiograph assessed; :meth:`to_dict` gives the JSON form with stable keys.

    ``status`` is ``'ok'`` or ``'rejected'`` (the model refused the image: no bone age, ``rejection``
    says why). Numbers that could not be computed are None and ``statements`` says why. ``radiograph``
    (grayscale uint8 for display) and ``evidence`` (an RGB uint8 overlay) are kept for reports and are
    not part of the JSON, nor is ``record``: the stored record when the assessment was stored.

    A per-bone model (RUS-CHN) adds ``bones``: one dict per bone with ``name``, ``box`` ``[x0, y0, x1, y1]``
    in the radiograph's pixels, ``stage`` (0-based), ``score``, ``stage_probability`` and ``box_score``; and
    ``rus_chn``: ``total_score`` (int), ``age_months`` (the RUS-CHN bone age of that total, Chinese
    standard), ``expected_total_score``, ``raw_months`` (its age) and ``scale`` (:data:`RUS_CHN_SCALE`).
    Both are None for other models, and then absent from the JSON.
    """

    status: str
    sex: str | None = None
    sex_source: str | None = None  # 'argument', 'dicom' or 'predicted' (by the model, from the radiograph)
    sex_probability: float | None = None  # a sex-predicting model's probability of the sex used
    bone_age_months: float | None = None
    chronological_age_months: float | None = None
    chronological_age_source: str | None = None  # 'argument', 'dicom_dates' or 'dicom_age'
    bone_age_minus_chronological_months: float | None = None
    sds: float | None = None
    centile: float | None = None
    reading: str | None = None  # 'delayed' | 'within normal limits' | 'advanced'
    reference_mean_months: float | None = None
    reference_sd_months: float | None = None
    reference: str | None = None
    height_cm: float | None = None
    adult_height: dict | None = None
    uncertainty: dict | None = None  # sd_months, low_months, high_months, level, method, calibrated
    statements: list[str] = dataclasses.field(default_factory=list)
    rejection: str | None = None
    model: dict | None = None  # name, version, validation_mae_months
    patient: dict = dataclasses.field(default_factory=dict)
    study: dict = dataclasses.field(default_factory=dict)
    source: str | None = None
    image_sha256: str | None = None
    evidence_label: str | None = None
    bones: list[dict] | None = None  # per-bone models: name, box, stage, score, stage_probability, box_score
    rus_chn: dict | None = None  # per-bone models: total_score, age_months, expected_total_score, raw_months, scale
    radiograph: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    evidence: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    evidence_kind: str | None = dataclasses.field(default=None, compare=False)  # 'gradcam', 'rois', 'attention'
    record: dict | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def bone_age_text(self) -> str | None:
        return format_age(self.bone_age_months)

    @property
    def chronological_age_text(self) -> str | None:
        return format_age(self.chronological_age_months)

    def to_dict(self) -> dict:
        def r(value, digits=2):
            return None if value is None else round(float(value), digits)

        adult = None
        if self.adult_height is not None:
            adult = {k: r(v) if isinstance(v, float) else v for k, v in self.adult_height.items()}
        uncertainty = None
        if self.uncertainty is not None:
            uncertainty = {k: r(v) if isinstance(v, float) else v for k, v in self.uncertainty.items()}
        data = {
            "status": self.status,
            "source": self.source,
            "image_sha256": self.image_sha256,
            "sex": self.sex,
            "sex_source": self.sex_source,
            "sex_probability": r(self.sex_probability, 3),
            "bone_age_months": r(self.bone_age_months),
            "bone_age_text": self.bone_age_text,
            "chronological_age_months": r(self.chronological_age_months),
            "chronological_age_text": self.chronological_age_text,
            "chronological_age_source": self.chronological_age_source,
            "bone_age_minus_chronological_months": r(self.bone_age_minus_chronological_months),
            "sds": r(self.sds, 3),
            "centile": r(self.centile),
            "reading": self.reading,
            "reference_mean_months": r(self.reference_mean_months),
            "reference_sd_months": r(self.reference_sd_months),
            "reference": self.reference,
            "height_cm": r(self.height_cm),
            "adult_height": adult,
            "uncertainty": uncertainty,
            "statements": list(self.statements),
            "rejection": self.rejection,
            "evidence": {"available": self.evidence is not None, "label": self.evidence_label},
            "model": dict(self.model) if self.model is not None else None,
            "patient": dict(self.patient),
            "study": dict(self.study),
            "disclaimer": DISCLAIMER,
            "boneage_version": __version__,
        }
        if self.bones is not None:
            data["bones"] = [dict(bone, box=list(bone["box"])) for bone in self.bones]
        if self.rus_chn is not None:
            data["rus_chn_score"] = self.rus_chn.get("total_score")
            data["rus_chn"] = {k: r(v) if isinstance(v, float) else v for k, v in self.rus_chn.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict, *, radiograph: np.ndarray | None = None,
                  evidence: np.ndarray | None = None) -> Assessment:
        """Rebuild an Assessment from :meth:`to_dict` output (e.g. a stored record), to write its report.

        Tolerant of what a database may hand back: unknown keys are ignored, missing ones take their
        defaults, and a value of the wrong type (a number that is not finite, a dict that lacks the keys
        a report prints) is dropped rather than raising later. ``radiograph`` (grayscale uint8) and
        ``evidence`` (the RGB overlay) are the pictures, which the JSON form does not hold; the evidence
        label comes from ``data['evidence']['label']`` when ``evidence`` is given.
        """
        if not isinstance(data, dict):
            raise InvalidInputError(f"an assessment must be rebuilt from a dict, got {type(data).__name__}")

        def number(value):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                return None
            return float(value) if math.isfinite(float(value)) else None

        def text(value):
            return value if isinstance(value, str) and value.strip() else None

        def mapping(value):
            return dict(value) if isinstance(value, dict) else {}

        def numbers(value, required):
            """A dict whose ``required`` keys are all finite numbers (made floats), else None."""
            if not isinstance(value, dict) or any(number(value.get(key)) is None for key in required):
                return None
            return {**value, **{key: number(value[key]) for key in required}}

        bone_age = number(data.get("bone_age_months"))
        status = data.get("status") if data.get("status") in ("ok", "rejected") else None
        rejection = text(data.get("rejection"))
        if status is None or (status == "ok" and bone_age is None):
            status = "ok" if bone_age is not None else "rejected"
            if status == "rejected" and rejection is None:
                rejection = "the stored result holds no bone age"
        statements = data.get("statements")
        statements = [str(s) for s in statements if isinstance(s, str)] if isinstance(statements, list) else []
        sex = data.get("sex") if data.get("sex") in ("M", "F") else None
        evidence_info = mapping(data.get("evidence"))
        result = cls(
            status=status,
            sex=sex,
            sex_source=text(data.get("sex_source")),
            sex_probability=number(data.get("sex_probability")),
            bone_age_months=bone_age if status == "ok" else None,
            chronological_age_months=number(data.get("chronological_age_months")),
            chronological_age_source=text(data.get("chronological_age_source")),
            bone_age_minus_chronological_months=number(data.get("bone_age_minus_chronological_months")),
            sds=number(data.get("sds")),
            centile=number(data.get("centile")),
            reading=text(data.get("reading")),
            reference_mean_months=number(data.get("reference_mean_months")),
            reference_sd_months=number(data.get("reference_sd_months")),
            reference=text(data.get("reference")),
            height_cm=number(data.get("height_cm")),
            adult_height=numbers(data.get("adult_height"), ("predicted_adult_height_cm", "percent_of_mature_height")),
            uncertainty=_stored_interval(data.get("uncertainty"), numbers),
            statements=statements,
            rejection=rejection if status == "rejected" else None,
            model=mapping(data.get("model")) or None,
            patient=mapping(data.get("patient")),
            study=mapping(data.get("study")),
            source=text(data.get("source")),
            image_sha256=text(data.get("image_sha256")),
            bones=_stored_bones(data.get("bones"), number) if status == "ok" else None,
            rus_chn=_stored_rus_chn(data.get("rus_chn"), numbers) if status == "ok" else None,
        )
        if result.sds is not None and None in (result.centile, result.reading, result.reference_mean_months,
                                               result.reference_sd_months):
            result.sds = result.centile = result.reading = None  # an incomplete reading is not shown
            result.reference_mean_months = result.reference_sd_months = None
        result.radiograph = radiograph
        if evidence is not None:
            result.evidence = check_evidence(evidence)
            result.evidence_label = text(evidence_info.get("label")) or "model evidence"
        return result


def _stored_bones(value, number) -> list[dict] | None:
    """Stored ``bones``: every bone a dict with a name, a box of 4 finite numbers, a whole stage and a score
    (floats made of the probabilities when they are numbers), else None (all or none are shown)."""
    if not isinstance(value, list) or not value:
        return None
    bones = []
    for bone in value:
        if not isinstance(bone, dict) or not isinstance(bone.get("name"), str) or not isinstance(bone.get("box"), list):
            return None
        box = [number(v) for v in bone["box"]]
        stage, score = bone.get("stage"), number(bone.get("score"))
        if len(box) != 4 or None in box or score is None or isinstance(stage, bool) or not isinstance(stage, int):
            return None
        bones.append({**bone, "box": box, "stage": stage, "score": int(score) if score.is_integer() else score,
                      **{k: number(bone.get(k)) for k in ("stage_probability", "box_score")}})
    return bones


def _stored_rus_chn(value, numbers) -> dict | None:
    """A stored ``rus_chn`` summary: its total score and age must be numbers (the total made whole)."""
    summary = numbers(value, ("total_score", "age_months"))
    if summary is None:
        return None
    summary["total_score"] = int(round(summary["total_score"]))
    summary["scale"] = summary.get("scale") if isinstance(summary.get("scale"), str) else RUS_CHN_SCALE
    return summary


def interpret(
    bone_age_months: float,
    sex: str,
    *,
    chronological_age_months: float | None = None,
    height_cm: float | None = None,
    interval: dict | None = None,
) -> Assessment:
    """The clinical numbers for a bone age already known (no model, no image): an ``'ok'`` Assessment.

    SDS, centile and reading need the chronological age inside the Greulich & Pyle table; the adult
    height needs the chronological age (to choose the Bayley-Pinneau table) and a bone age inside that
    table. Whatever cannot be computed is None with a sentence in ``statements``. ``interval`` is the
    bone age's interval, ready made by whoever ran the model (:mod:`boneage.api`: calibrated when the
    model has a calibration): ``low_months``, ``high_months``, ``level``, ``method`` and, when the model
    gives one, ``sd_months`` (the SD across its ensemble members) and ``calibrated`` (bool); it becomes
    ``Assessment.uncertainty``.
    """
    if sex not in ("M", "F"):
        raise InvalidInputError(f"sex must be 'M' or 'F', got {sex!r}")
    bone_age = float(bone_age_months)
    if not math.isfinite(bone_age):
        raise InvalidInputError(f"bone age must be a finite number, got {bone_age_months!r}")
    age = _age_value(chronological_age_months)
    height = check_height(height_cm)
    result = Assessment(status="ok", sex=sex, bone_age_months=bone_age, chronological_age_months=age, height_cm=height)
    statements = result.statements
    low, high = BONE_AGE_RANGE_MONTHS
    bone_age_in_range = low <= bone_age <= high
    if not bone_age_in_range:
        statements.append(f"The bone age ({bone_age:.1f} months) is outside 0-{high / 12:g} years, the range the "
                          "model and the references cover; it is not interpreted further.")
    _add_uncertainty(result, interval)
    if age is None:
        statements.append("No chronological age was given or found in the file, so bone age minus chronological "
                          "age, the SDS, centile, reading and adult height are not computed.")
    else:
        result.bone_age_minus_chronological_months = bone_age - age
        if bone_age_in_range:
            _add_reading(result)
    if height is not None:
        _add_adult_height(result, bone_age_in_range)
    return result


def _add_uncertainty(result: Assessment, interval: dict | None) -> None:
    """The interval given (checked), or a statement that there is none."""
    if interval is None:
        result.statements.append("The model gives no uncertainty estimate (no calibration, and a single model), so "
                                 "no interval is shown.")
        return
    try:
        low, high, level = (float(interval[key]) for key in ("low_months", "high_months", "level"))
        sd = None if interval.get("sd_months") is None else float(interval["sd_months"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(f"an interval needs low_months, high_months and level as numbers, got {interval!r}") from None
    finite = all(math.isfinite(v) for v in (low, high)) and (sd is None or math.isfinite(sd))
    if not (finite and low <= high and 0 < level < 1):
        raise InvalidInputError(f"an interval needs finite low_months <= high_months and a level in (0, 1), got {interval!r}")
    result.uncertainty = {"sd_months": sd, "low_months": low, "high_months": high, "level": level,
                          "method": str(interval.get("method") or "not stated"),
                          "calibrated": bool(interval.get("calibrated", False))}


def _stored_interval(value, numbers) -> dict | None:
    """A stored ``uncertainty``: low, high and level must be numbers; the member SD may be None (a single,
    calibrated model)."""
    interval = numbers(value, ("low_months", "high_months", "level"))
    if interval is not None and interval.get("sd_months") is not None:
        interval["sd_months"] = (numbers(interval, ("sd_months",)) or {}).get("sd_months")
    return interval


def _add_reading(result: Assessment) -> None:
    """SDS, centile and reading against Greulich & Pyle, or a statement why not."""
    try:
        sds = bone_age_sds(result.bone_age_months, result.chronological_age_months, result.sex)
    except OutOfReferenceRange as err:
        result.statements.append(f"No SDS or centile: {err}.")
        return
    result.sds, result.centile, result.reading = sds.sds, sds.centile, sds.reading
    result.reference_mean_months, result.reference_sd_months = sds.reference_mean_months, sds.reference_sd_months
    result.reference = sds.reference


def _add_adult_height(result: Assessment, bone_age_in_range: bool) -> None:
    """The Bayley-Pinneau adult height, or a statement why not."""
    if result.chronological_age_months is None:
        result.statements.append("A height was given but no chronological age, so the Bayley-Pinneau table cannot be "
                                 "chosen and no adult height is predicted.")
        return
    if not bone_age_in_range:
        return
    try:
        prediction = predicted_adult_height(result.height_cm, result.bone_age_months, result.chronological_age_months,
                                            result.sex)
    except OutOfReferenceRange as err:
        result.statements.append(f"No adult height prediction: {err}.")
        return
    result.adult_height = {"method": "Bayley-Pinneau", **prediction.to_dict()}


def _age_value(months) -> float | None:
    """A chronological age in months: text goes through :func:`parse_age`; a number only has to be finite
    and not negative (an adult's age from DICOM dates is out of the references, which is said, not refused)."""
    if months is None:
        return None
    if isinstance(months, str):
        return parse_age(months)
    try:
        age = float(months)
    except (TypeError, ValueError):
        raise InvalidInputError(f"chronological age must be a number of months, got {months!r}") from None
    if not math.isfinite(age) or age < 0:
        raise InvalidInputError(f"chronological age must be a finite number of months, not negative, got {months!r}")
    return age


def check_height(height_cm, field: str = "height_cm") -> float | None:
    """A height in cm (a number or text) within the Bayley-Pinneau tables' range; None stays None.
    Messages name the value as ``field``."""
    if height_cm is None:
        return None
    try:
        height = float(height_cm)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{field} must be a number of centimetres, got {height_cm!r}") from None
    low, high = HEIGHT_RANGE_CM
    if not (math.isfinite(height) and low <= height <= high):
        raise InvalidInputError(f"{field} must be between {low:g} and {high:g} cm, got {height_cm!r}")
    return height


# ------------------------------------------------------------------------------------ from the image
def chronological_age(given: float | None, meta) -> tuple[float | None, str | None, list[str]]:
    from_file, file_source, statements = chronological_age_from_meta(meta)
    if given is None:
        return from_file, file_source, statements
    if from_file is not None and abs(from_file - given) > 1.0:
        statements.append(f"The chronological age given ({given:.1f} months) differs from the one in the file "
                          f"({from_file:.1f} months, {AGE_SOURCES[file_source]}); the given age was used.")
    return given, "argument", statements


def check_evidence(evidence) -> np.ndarray | None:
    if evidence is None:
        return None
    array = np.asarray(evidence)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise InvalidInputError(f"evidence must be an (H, W, 3) uint8 RGB image, got {array.dtype} {tuple(array.shape)}")
    return array


def patient_fields(meta) -> dict:
    return {
        "name": getattr(meta, "patient_name", None),
        "id": getattr(meta, "patient_id", None),
        "birth_date": getattr(meta, "birth_date", None),
        "sex": getattr(meta, "sex", None),
        "age_months": getattr(meta, "age_months", None),
    }


def study_fields(meta) -> dict:
    return {
        "date": getattr(meta, "study_date", None),
        "accession_number": getattr(meta, "accession_number", None),
        "description": getattr(meta, "study_description", None),
        "institution": getattr(meta, "institution", None),
        "modality": getattr(meta, "modality", None),
        "body_part": getattr(meta, "body_part", None),
        "study_instance_uid": getattr(meta, "study_instance_uid", None),
        "series_instance_uid": getattr(meta, "series_instance_uid", None),
        "sop_instance_uid": getattr(meta, "sop_instance_uid", None),
        "format": getattr(meta, "format", None),
    }
