"""Clinical layer: turn a bone age into SDS, centile, reading and a Bayley-Pinneau adult height."""

from .reference import (
    AdultHeightPrediction,
    BoneAgeSDS,
    OutOfReferenceRange,
    bone_age_sds,
    gp_reference,
    maturity_category,
    predicted_adult_height,
)

__all__ = [
    "OutOfReferenceRange",
    "gp_reference",
    "BoneAgeSDS",
    "bone_age_sds",
    "maturity_category",
    "AdultHeightPrediction",
    "predicted_adult_height",
]
