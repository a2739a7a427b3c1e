"""Clinical layer: turn a bone age into SDS, centile and reading against Greulich & Pyle and a
Bayley-Pinneau adult height (:mod:`.reference`); assess a radiograph with a model (:func:`assess`,
:mod:`.assessment`); write the result as a PDF or HTML report (:func:`write_report`, :mod:`.report`)."""

from .assessment import (
    DISCLAIMER,
    Assessment,
    assess,
    assess_or_reject,
    chronological_age_from_meta,
    format_age,
    interpret,
    parse_age,
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
from .report import growth_chart, report_format, write_report

__all__ = [
    "OutOfReferenceRange",
    "gp_reference",
    "BoneAgeSDS",
    "bone_age_sds",
    "maturity_category",
    "AdultHeightPrediction",
    "predicted_adult_height",
    "Assessment",
    "DISCLAIMER",
    "assess",
    "assess_or_reject",
    "interpret",
    "parse_age",
    "format_age",
    "chronological_age_from_meta",
    "write_report",
    "growth_chart",
    "report_format",
]
