"""The RUS-CHN (China-05) scoring of bone maturity: 13 bones, a stage each, a score per stage, a total, a bone age.

The 13 RUS bones (:data:`BONES`) are the radius, the ulna, the 1st, 3rd and 5th metacarpals, proximal
phalanges 1, 3 and 5, middle phalanges 3 and 5, and distal phalanges 1, 3 and 5. Each bone's maturity
stage (0-based, :func:`stage_count` stages) has a score that depends on the sex (:func:`stage_score`);
the total of the 13 scores gives the bone age through the 50th-centile score-to-age polynomial
(:func:`bone_age_years`), which rises monotonically over the scores that can occur (from the sum of the
first stages' scores to 1,000).

The tables are a third-party transcription (``data/rus_chn_scores_and_polynomial.json``, sources in
``data/SOURCES.md``): check values against the China-05 standard before clinical use. RUS-CHN is a Chinese
standard; the RSNA labels boneage learns from are Greulich & Pyle readings.

:func:`expected_total_score` is the differentiable form (stage probabilities -> expected score) for
training stage classifiers through the total score.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files

import numpy as np

from ..errors import InvalidInputError

__all__ = ["BONES", "SEXES", "bone_age_years", "expected_total_score", "score_range", "stage_count", "stage_score",
           "stages_for_total", "total_score"]

BONES = ("Radius", "Ulna", "MCPFirst", "MCPThird", "MCPFifth", "PIPFirst", "PIPThird", "PIPFifth", "MIPThird",
         "MIPFifth", "DIPFirst", "DIPThird", "DIPFifth")
SEXES = {"M": "boy", "F": "girl"}


@functools.lru_cache(maxsize=1)
def _tables() -> dict:
    return json.loads((files("boneage.clinical") / "data" / "rus_chn_scores_and_polynomial.json").read_text())


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
