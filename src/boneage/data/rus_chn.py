"""The RUS-CHN (China-05) scoring of bone maturity: 13 bones, a stage each, a score per stage, a total, a bone age.

The 13 RUS bones (:data:`BONES`) are the radius, the ulna, the 1st, 3rd and 5th metacarpals, proximal
phalanges 1, 3 and 5, middle phalanges 3 and 5, and distal phalanges 1, 3 and 5. Each bone's maturity
stage (0-based, :func:`stage_count` stages) has a score that depends on the sex (:func:`stage_score`);
the total of the 13 scores gives the bone age through the 50th-centile score-to-age polynomial
(:func:`bone_age_years`), which rises monotonically over the scores that can occur (from the sum of the
first stages' scores to 1,000).

The tables are a third-party transcription (``rus_chn_scores_and_polynomial.json`` beside this module, sources
in ``boneage/clinical/data/SOURCES.md``): check values against the China-05 standard before clinical use. RUS-CHN is a Chinese
standard; the RSNA labels boneage learns from are Greulich & Pyle readings.

:func:`expected_total_score` is the differentiable form (stage probabilities -> expected score) for
training stage classifiers through the total score; :func:`score_table` gives the tables as one array for
a model, :func:`total_for_age` inverts the curve and :func:`typical_stage_fraction` places every bone at the
same fraction of its stages for an age (a prior for weak training). The clinical layer re-exports this
module as :mod:`boneage.clinical.rus_chn`; it lives here, below the models, because the RUS-CHN pipeline
scores its stages with it.
"""

from __future__ import annotations

import csv
import functools
import json
from importlib.resources import files
from pathlib import Path

import numpy as np

from ..errors import DatasetError, InvalidInputError

__all__ = ["BONES", "MAX_STAGES", "SEXES", "bone_age_years", "expected_total_score", "load_stage_labels", "score_range",
           "score_table", "stage_count", "stage_score", "stages_for_total", "total_for_age", "total_score",
           "typical_stage_fraction"]

BONES = ("Radius", "Ulna", "MCPFirst", "MCPThird", "MCPFifth", "PIPFirst", "PIPThird", "PIPFifth", "MIPThird",
         "MIPFifth", "DIPFirst", "DIPThird", "DIPFifth")
SEXES = {"M": "boy", "F": "girl"}
MAX_STAGES = 14  # the most stages any bone has (the radius); score_table pads the others to it


@functools.lru_cache(maxsize=1)
def _tables() -> dict:
    return json.loads((files("boneage.data") / "rus_chn_scores_and_polynomial.json").read_text())


def _sex(sex: str) -> str:
    if sex not in SEXES:
        raise InvalidInputError(f"sex must be 'M' or 'F', got {sex!r}")
    return SEXES[sex]


def _scores(bone: str, sex: str) -> list[int]:
    if bone not in BONES:
        raise InvalidInputError(f"unknown RUS-CHN bone {bone!r}; the bones are {', '.join(BONES)}")
    return _tables()["stage_scores"][_sex(sex)][bone]


def stage_count(bone: str, sex: str) -> int:
    """The number of maturity stages of ``bone`` in the table of ``sex``."""
    return len(_scores(bone, sex))


def stage_score(bone: str, stage: int, sex: str) -> int:
    """The score of ``bone`` at 0-based ``stage`` for ``sex`` ('M' or 'F')."""
    scores = _scores(bone, sex)
    if not 0 <= int(stage) < len(scores):
        raise InvalidInputError(f"{bone} has stages 0-{len(scores) - 1}, got {stage}")
    return scores[int(stage)]


def total_score(stages: dict[str, int], sex: str) -> int:
    """The RUS-CHN total: the sum of the 13 bones' stage scores (every bone must have a stage)."""
    missing = [bone for bone in BONES if bone not in stages]
    if missing:
        raise InvalidInputError(f"a RUS-CHN total needs a stage for every bone; missing: {', '.join(missing)}")
    return int(sum(stage_score(bone, stages[bone], sex) for bone in BONES))


def score_range(sex: str) -> tuple[int, int]:
    """The lowest and highest total score that can occur (all bones at their first or last stage)."""
    return (sum(_scores(b, sex)[0] for b in BONES), sum(_scores(b, sex)[-1] for b in BONES))


def bone_age_years(total, sex: str):
    """Bone age in years from the total score (a number or an array; numpy or torch, differentiable) by the
    50th-centile polynomial of ``sex``, with the total clipped to :func:`score_range` (where it rises)."""
    coefficients = _tables()["score_to_bone_age_years_polynomial_coeffs_c0_to_c10"][_sex(sex)]
    low, high = score_range(sex)
    if hasattr(total, "clamp"):  # a torch tensor: evaluated in float64 (the 10th power of 1,000 is 1e30)
        x = total.double().clamp(low, high)
        years = sum(c * x**k for k, c in enumerate(coefficients))
        return years.to(total.dtype) if total.is_floating_point() else years.float()
    x = np.clip(np.asarray(total, dtype=np.float64), low, high)
    result = np.polynomial.polynomial.polyval(x, coefficients)
    return float(result) if np.ndim(result) == 0 else result


def expected_total_score(probabilities: dict, sex: str):
    """The expected total score from each bone's stage probabilities (``{bone: (..., stages)}`` arrays or
    tensors summing to 1 over the last axis): differentiable, for training through the score."""
    total = 0.0
    for bone in BONES:
        scores = _scores(bone, sex)
        p = probabilities[bone]
        if p.shape[-1] != len(scores):
            raise InvalidInputError(f"{bone}: {p.shape[-1]} stage probabilities, the table has {len(scores)} stages")
        weights = p.new_tensor(scores) if hasattr(p, "new_tensor") else np.asarray(scores, dtype=np.float64)
        total = total + (p * weights).sum(-1)
    return total


def stages_for_total(target: float, sex: str) -> dict[str, int]:
    """Typical stages for a total score: every bone advanced together (each at the same fraction of its
    stages), the fraction chosen so that the total comes closest to ``target``. A prior for weak training."""
    best, best_gap = None, float("inf")
    for fraction in np.linspace(0.0, 1.0, 201):
        stages = {bone: int(round(fraction * (stage_count(bone, sex) - 1))) for bone in BONES}
        gap = abs(total_score(stages, sex) - target)
        if gap < best_gap:
            best, best_gap = stages, gap
    return best


def score_table(sex: str) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, valid)``: ``(13, MAX_STAGES)`` float64 stage scores of ``sex`` in :data:`BONES` order, padded
    with 0, and the boolean mask of the stages that exist."""
    scores = np.zeros((len(BONES), MAX_STAGES))
    valid = np.zeros((len(BONES), MAX_STAGES), dtype=bool)
    for i, bone in enumerate(BONES):
        row = _scores(bone, sex)
        scores[i, : len(row)] = row
        valid[i, : len(row)] = True
    return scores, valid


def total_for_age(years, sex: str):
    """The total score whose 50th-centile bone age is ``years`` (the curve inverted by bisection; ages
    below or above what the curve reaches give the lowest or highest total)."""
    low, high = score_range(sex)
    target = np.asarray(years, dtype=np.float64)
    lo, hi = np.full(target.shape, float(low)), np.full(target.shape, float(high))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = np.asarray(bone_age_years(mid, sex)) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    result = 0.5 * (lo + hi)
    return float(result) if result.ndim == 0 else result


def typical_stage_fraction(years, sex: str):
    """The fraction ``f`` in [0, 1] such that every bone at stage ``f * (stages - 1)`` (interpolating the
    scores between stages) gives the total of the 50th-centile curve at ``years``: the bones advanced
    together, as :func:`stages_for_total` does with whole stages."""
    scores, valid = score_table(sex)
    counts = valid.sum(1)
    grid = np.linspace(0.0, 1.0, 401)
    totals = np.zeros_like(grid)
    for i, count in enumerate(counts):
        totals += np.interp(grid * (count - 1), np.arange(count), scores[i, :count])
    return np.interp(np.asarray(total_for_age(years, sex)), totals, grid)


def load_stage_labels(path) -> dict[str, dict[str, int]]:
    """Per-bone stage labels from a CSV with the columns ``id,bone,stage``: ``{id: {bone: stage}}``.

    ``bone`` is one of :data:`BONES` (any case), ``stage`` the 0-based RUS-CHN stage. A row with an
    unknown bone, a stage the bone does not have, or an (id, bone) given twice is an error naming its line.
    """
    path = Path(path)
    names = {bone.lower(): bone for bone in BONES}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: cannot be read as a stage label CSV ({err})") from None
    if not {"id", "bone", "stage"} <= set(columns):
        raise DatasetError(f"{path}: expected the columns id,bone,stage (found: {', '.join(columns) or 'no header'})")
    labels: dict[str, dict[str, int]] = {}
    for line, row in enumerate(rows, start=2):
        bone = names.get(row["bone"].lower())
        if bone is None:
            raise DatasetError(f"{path}:{line}: unknown bone {row['bone']!r}; the bones are {', '.join(BONES)}")
        try:
            stage = int(row["stage"])
        except ValueError:
            raise DatasetError(f"{path}:{line}: stage must be a whole number, got {row['stage']!r}") from None
        count = stage_count(bone, "M")
        if not 0 <= stage < count:
            raise DatasetError(f"{path}:{line}: {bone} has stages 0-{count - 1}, got {stage}")
        if bone in labels.setdefault(row["id"], {}):
            raise DatasetError(f"{path}:{line}: id {row['id']} has a second stage for {bone}")
        labels[row["id"]][bone] = stage
    if not labels:
        raise DatasetError(f"{path}: no stage labels")
    return labels
