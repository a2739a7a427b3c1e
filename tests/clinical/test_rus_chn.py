"""RUS-CHN stage scores, totals and the score-to-age curve on hand-computed examples (values quoted from
data/rus_chn_scores_and_polynomial.json)."""

import math

import numpy as np
import pytest
import torch

from boneage.clinical.rus_chn import (
    BONES,
    bone_age_years,
    expected_total_score,
    score_range,
    stage_count,
    stage_score,
    stages_for_total,
    total_score,
)
from boneage.errors import InvalidInputError

GIRL_STAGES = {"Radius": 7, "Ulna": 6, "MCPFirst": 5, "MCPThird": 4, "MCPFifth": 4, "PIPFirst": 5, "PIPThird": 5,
               "PIPFifth": 5, "MIPThird": 5, "MIPFifth": 5, "DIPFirst": 5, "DIPThird": 5, "DIPFifth": 5}
BOY_POLYNOMIAL = [2.01790023656577, -0.0931820870747269, 0.00334709095418796, -3.32988302362153e-05,
                  1.75712910819776e-07, -5.59998691223273e-10, 1.1296711294933e-12, -1.45218037113138e-15,
                  1.15333377080353e-18, -5.15887481551927e-22, 9.94098428102335e-26]


def test_thirteen_bones_and_their_stages():
    assert len(BONES) == 13
    assert stage_count("Radius", "F") == 14 and stage_count("Ulna", "M") == 12 and stage_count("MCPThird", "F") == 10
    assert stage_score("Radius", 7, "F") == 125 and stage_score("Radius", 7, "M") == 118


def test_a_girls_total_by_hand():
    # girl: Radius[7] 125 + Ulna[6] 120 + MCP 1/3/5 28, 14, 15 + PIP 1/3/5 26, 20, 21 + MIP 3/5 21, 23 + DIP 1/3/5 31, 24, 25
    assert total_score(GIRL_STAGES, "F") == 493


def test_the_first_and_last_stages_bound_the_totals():
    assert score_range("M") == (69, 1000) and score_range("F") == (82, 1000)
    assert total_score({bone: 0 for bone in BONES}, "M") == 69
    assert total_score({bone: stage_count(bone, "F") - 1 for bone in BONES}, "F") == 1000


def test_score_to_age_by_the_polynomial_both_sexes():
    expected = sum(c * 400.0**k for k, c in enumerate(BOY_POLYNOMIAL))
    assert bone_age_years(400, "M") == pytest.approx(expected) == pytest.approx(11.935, abs=1e-3)
    assert bone_age_years(493, "F") == pytest.approx(10.33, abs=0.01)
    assert bone_age_years(1000, "M") == pytest.approx(18.21, abs=0.01)
    assert bone_age_years(1000, "F") == pytest.approx(16.69, abs=0.01)
    ages = bone_age_years(np.arange(69, 1001), "M")
    assert np.all(np.diff(ages) > 0)  # rises over every total that can occur
    assert bone_age_years(10, "M") == bone_age_years(69, "M")  # clipped to the range
    tensor = bone_age_years(torch.tensor([400.0, 493.0]), "M")
    assert tensor.dtype == torch.float32 and float(tensor[0]) == pytest.approx(expected, rel=1e-6)


def test_expected_score_is_the_total_for_certain_stages_and_differentiable():
    probabilities = {b: torch.nn.functional.one_hot(torch.tensor(GIRL_STAGES[b]), stage_count(b, "F")).float()
                     for b in BONES}
    assert float(expected_total_score(probabilities, "F")) == 493
    logits = {b: torch.zeros(stage_count(b, "F"), requires_grad=True) for b in BONES}
    total = expected_total_score({b: logits[b].softmax(-1) for b in BONES}, "F")
    uniform = sum(np.mean([stage_score(b, s, "F") for s in range(stage_count(b, "F"))]) for b in BONES)
    assert float(total.detach()) == pytest.approx(uniform)
    bone_age_years(total, "F").backward()
    assert all(torch.isfinite(logits[b].grad).all() and logits[b].grad.abs().sum() > 0 for b in BONES)


def test_typical_stages_for_a_total_rise_with_it():
    young, old = stages_for_total(200, "M"), stages_for_total(800, "M")
    assert all(young[b] <= old[b] for b in BONES) and any(young[b] < old[b] for b in BONES)
    assert abs(total_score(old, "M") - 800) < 60


def test_bad_input_is_one_line():
    with pytest.raises(InvalidInputError, match="unknown RUS-CHN bone"):
        stage_score("Femur", 0, "M")
    with pytest.raises(InvalidInputError, match="stages 0-13"):
        stage_score("Radius", 14, "F")
    with pytest.raises(InvalidInputError, match="missing: Ulna"):
        total_score({b: 0 for b in BONES if b != "Ulna"}, "M")
    with pytest.raises(InvalidInputError, match="sex"):
        score_range("X")
    assert math.isfinite(bone_age_years(500, "F"))
