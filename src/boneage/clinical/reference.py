"""Clinical numbers from a bone age: SDS, centile and reading against Greulich & Pyle, and
Bayley-Pinneau adult height prediction.

The reference tables ship in ``boneage/clinical/data`` (sources in ``data/SOURCES.md``) and are read
once through :mod:`importlib.resources`. Values between tabulated ages are linearly interpolated; a
value outside what a table covers raises :class:`OutOfReferenceRange` instead of being extrapolated.
All ages are in months.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from functools import cache
from importlib.resources import files

import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "OutOfReferenceRange",
    "gp_reference",
    "BoneAgeSDS",
    "bone_age_sds",
    "maturity_category",
    "AdultHeightPrediction",
    "predicted_adult_height",
]

GP_TABLE = "gp_brush_foundation_mean_sd.csv"
BP_TABLE = "bayley_pinneau_percent_mature_height.csv"
GP_REFERENCE = "Greulich & Pyle 1959, Brush Foundation mean and SD"
BONE_AGE_RANGE_MONTHS = (0.0, 228.0)
HEIGHT_RANGE_CM = (30.0, 250.0)
MATURITY_MARGIN_MONTHS = 12.0
_CHILDREN = {"M": "boys", "F": "girls"}


class OutOfReferenceRange(InvalidInputError):
    """A value lies outside the range a reference table covers; the message names the value and the range."""


@dataclass(frozen=True)
class BoneAgeSDS:
    """A bone age compared with the Greulich & Pyle reference at the child's chronological age."""

    bone_age_months: float
    chronological_age_months: float
    sex: str
    reference_mean_months: float
    reference_sd_months: float
    difference_months: float  # bone age - chronological age
    sds: float
    centile: float  # 0-100
    reading: str  # 'delayed' | 'within normal limits' | 'advanced'
    reference: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AdultHeightPrediction:
    """A Bayley-Pinneau adult height prediction: current height / fraction of mature height reached."""

    predicted_adult_height_cm: float
    percent_of_mature_height: float
    maturity_category: str  # 'average' | 'accelerated' | 'retarded'
    height_cm: float
    bone_age_months: float
    sex: str
    table: str

    def to_dict(self) -> dict:
        return asdict(self)


@cache
def _rows(name: str) -> tuple[dict[str, str], ...]:
    text = (files("boneage.clinical") / "data" / name).read_text(encoding="utf-8")
    return tuple(csv.DictReader(text.splitlines()))


@cache
def _gp_columns(sex: str) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(chronological ages, mean skeletal ages, SDs) of one sex, sorted by age."""
    rows = sorted(
        (float(r["chronological_age_months"]), float(r["mean_skeletal_age_months"]), float(r["sd_months"]))
        for r in _rows(GP_TABLE)
        if r["sex"] == sex
    )
    ages, means, sds = zip(*rows)
    return ages, means, sds


@cache
def _bp_columns(sex: str, category: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(skeletal ages, percents of mature height) of one sex and maturity category, sorted by age."""
    rows = sorted(
        (float(r["skeletal_age_months"]), float(r["percent_of_mature_height"]))
        for r in _rows(BP_TABLE)
        if r["sex"] == sex and r["maturity_category"] == category
    )
    ages, percents = zip(*rows)
    return ages, percents


def _sex(sex: str) -> str:
    if sex not in ("M", "F"):
        raise InvalidInputError(f"sex must be 'M' or 'F', got {sex!r}")
    return sex


def _number(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    return number


def _within(name: str, value: float, low: float, high: float, where: str) -> None:
    if not low <= value <= high:
        raise OutOfReferenceRange(f"{name} {value:g} months is outside {where} ({low:g}-{high:g} months)")


def gp_reference(sex: str, chronological_age_months: float) -> tuple[float, float]:
    """Mean skeletal age and its SD (months) at a chronological age, from the Brush Foundation table.

    Linearly interpolated between the tabulated ages; ages outside the table of that sex (boys 3-204,
    girls 3-192 months) raise :class:`OutOfReferenceRange`.
    """
    sex = _sex(sex)
    age = _number("chronological age", chronological_age_months)
    ages, means, sds = _gp_columns(sex)
    _within("chronological age", age, ages[0], ages[-1], f"the Greulich & Pyle reference for {_CHILDREN[sex]}")
    return float(np.interp(age, ages, means)), float(np.interp(age, ages, sds))


def bone_age_sds(bone_age_months: float, chronological_age_months: float, sex: str) -> BoneAgeSDS:
    """Bone age SDS = (bone age - reference mean) / reference SD, both at the chronological age.

    The centile comes from the standard normal CDF; the reading is 'delayed' below -2 SDS, 'advanced'
    above +2 SDS, otherwise 'within normal limits' (exactly +/-2 is within).
    """
    sex = _sex(sex)
    bone_age = _number("bone age", bone_age_months)
    _within("bone age", bone_age, *BONE_AGE_RANGE_MONTHS, "the supported bone age range")
    age = _number("chronological age", chronological_age_months)
    mean, sd = gp_reference(sex, age)
    sds = (bone_age - mean) / sd
    reading = "delayed" if sds < -2 else "advanced" if sds > 2 else "within normal limits"
    return BoneAgeSDS(
        bone_age_months=bone_age,
        chronological_age_months=age,
        sex=sex,
        reference_mean_months=mean,
        reference_sd_months=sd,
        difference_months=bone_age - age,
        sds=sds,
        centile=50.0 * (1.0 + math.erf(sds / math.sqrt(2.0))),
        reading=reading,
        reference=GP_REFERENCE,
    )


def maturity_category(bone_age_months: float, chronological_age_months: float) -> str:
    """Which Bayley-Pinneau table applies: 'average', 'accelerated' or 'retarded'.

    Bayley & Pinneau (J Pediatr 1952;40:423-441) give separate tables for children whose skeletal age is
    within one year of their chronological age ('average'), more than one year ahead of it
    ('accelerated') or more than one year behind it ('retarded'). Here: bone age - chronological age
    > 12 months is 'accelerated', < -12 months is 'retarded', and anything in [-12, 12] is 'average'.
    """
    difference = _number("bone age", bone_age_months) - _number("chronological age", chronological_age_months)
    if difference > MATURITY_MARGIN_MONTHS:
        return "accelerated"
    if difference < -MATURITY_MARGIN_MONTHS:
        return "retarded"
    return "average"


def predicted_adult_height(
    height_cm: float, bone_age_months: float, chronological_age_months: float, sex: str
) -> AdultHeightPrediction:
    """Bayley-Pinneau adult height: height / (percent of mature height at the bone age / 100).

    The table (sex and :func:`maturity_category`) is looked up at the bone age, linearly interpolated
    between tabulated skeletal ages. A bone age outside that table's skeletal-age range raises
    :class:`OutOfReferenceRange` naming the range; a height outside 30-250 cm raises InvalidInputError.
    """
    sex = _sex(sex)
    height = _number("height", height_cm)
    low, high = HEIGHT_RANGE_CM
    if not low <= height <= high:
        raise InvalidInputError(f"height must be between {low:g} and {high:g} cm, got {height:g}")
    bone_age = _number("bone age", bone_age_months)
    category = maturity_category(bone_age, chronological_age_months)
    table = f"Bayley-Pinneau 1952 ({_CHILDREN[sex]}, {category} maturity)"
    ages, percents = _bp_columns(sex, category)
    _within("bone age", bone_age, ages[0], ages[-1], f"the {table} table")
    percent = float(np.interp(bone_age, ages, percents))
    return AdultHeightPrediction(
        predicted_adult_height_cm=height / (percent / 100.0),
        percent_of_mature_height=percent,
        maturity_category=category,
        height_cm=height,
        bone_age_months=bone_age,
        sex=sex,
        table=table,
    )
