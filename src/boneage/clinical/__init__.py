"""Clinical layer: turn a bone age into SDS, centile and reading against Greulich & Pyle and a
Bayley-Pinneau adult height (:mod:`.reference`); the assessment of one radiograph as every front end shows
and stores it (:class:`Assessment`, :func:`interpret`, :mod:`.assessment`); and its PDF or HTML report
(:func:`write_report`, :mod:`.report`). Running a model is :mod:`boneage.api`'s job."""

from .assessment import (
    AGE_SOURCES,
    DISCLAIMER,
    Assessment,
    check_evidence,
    check_height,
    chronological_age,
    chronological_age_from_meta,
    format_age,
    interpret,
    parse_age,
    patient_fields,
    study_fields,
)
from .reference import (
    AdultHeightPrediction,
    BoneAgeSDS,
    OutOfReferenceRange,
    bone_age_sds,
    gp_reference,
    maturity_category,
    predicted_adult_height,
)
from .report import growth_chart, render_report, report_format, write_report

__all__ = [
    "AGE_SOURCES",
    "DISCLAIMER",
    "AdultHeightPrediction",
    "Assessment",
    "BoneAgeSDS",
    "OutOfReferenceRange",
    "bone_age_sds",
    "check_evidence",
    "check_height",
    "chronological_age",
    "chronological_age_from_meta",
    "format_age",
    "gp_reference",
    "growth_chart",
    "interpret",
    "maturity_category",
    "parse_age",
    "patient_fields",
    "predicted_adult_height",
    "render_report",
    "report_format",
    "study_fields",
    "write_report",
]
