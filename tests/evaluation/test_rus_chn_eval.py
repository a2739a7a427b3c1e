"""RUS-CHN evaluation helpers on tiny synthetic inputs: stage distribution, age-group table, pictures, geometry."""

import numpy as np
import pytest
from PIL import Image

from boneage.data import HandKeypoints, OssificationBoxes
from boneage.data.keypoints import KEYPOINT_NAMES
from boneage.data.rus_chn import BONES
from boneage.evaluation.rus_chn import (
    BONE_LABELS,
    RUS_AGE_GROUPS_YEARS,
    age_group_table,
    code_geometry,
    draw_contact_sheet,
    geometry_comparison,
    measure_box_geometry,
    measure_keypoint_geometry,
    plot_stage_distribution,
    stage_distribution,
    summarise,
)

AGES = np.array([12.0, 60.0, 110.0, 160.0, 200.0, 30.0, 90.0, 130.0, 180.0, 215.0])  # two per group
SEXES = np.array(["M"] * 5 + ["F"] * 5)


def monotone_stages() -> np.ndarray:
    """Stage = rank of the age (0-9): strictly rising with age."""
    return np.repeat(np.argsort(np.argsort(AGES))[:, None], len(BONES), axis=1)


def test_labels_cover_the_bones_and_the_groups_are_the_papers():
    assert len(BONE_LABELS) == len(BONES) == 13
    assert [g[0] for g in RUS_AGE_GROUPS_YEARS] == ["0-3", "4-7", "8-11", "12-15", "16-18"]
    assert RUS_AGE_GROUPS_YEARS[-1][1:] == (16, 19)


def test_a_stage_rising_with_age_is_monotone_with_spearman_one():
    result = stage_distribution(monotone_stages(), AGES, SEXES)
    assert result["n_by_group"] == {"0-3": 2, "4-7": 2, "8-11": 2, "12-15": 2, "16-18": 2}
    entry = result["by_bone"]["Radius"]
    assert entry["spearman"] == pytest.approx(1.0)
    assert entry["monotone"] is True
    assert entry["mean_by_group"]["0-3"] == pytest.approx(0.5)  # ages 12 and 30 months: ranks 0 and 1
    assert entry["by_sex"]["M"]["8-11"] == pytest.approx(4)  # 110 months, the boy of the group


def test_a_falling_stage_is_not_monotone_and_a_constant_one_has_no_rho():
    stages = monotone_stages()
    stages[:, 0] = -AGES  # falls with age
    stages[:, 1] = 3  # constant
    result = stage_distribution(stages, AGES)
    assert result["by_bone"]["Radius"]["spearman"] == pytest.approx(-1.0)
    assert result["by_bone"]["Radius"]["monotone"] is False
    assert result["by_bone"]["Ulna"]["spearman"] is None and result["by_bone"]["Ulna"]["monotone"] is True
    assert result["by_bone"]["Ulna"]["by_sex"] == {}
    with pytest.raises(ValueError):
        stage_distribution(stages[:, :5], AGES)


def test_age_group_table_known_values():
    truth = np.array([24.0, 36.0, 100.0, 200.0, 228.0])
    pred = truth + np.array([6.0, -8.0, 3.0, 0.0, 12.0])
    table = age_group_table(pred, truth)
    assert table["0-3"] == {"n": 2, "mae": pytest.approx(7.0), "rmse": pytest.approx(np.sqrt(50.0))}
    assert table["8-11"]["n"] == 1 and table["8-11"]["mae"] == pytest.approx(3.0)
    assert table["4-7"] == {"n": 0, "mae": None, "rmse": None}
    assert table["16-18"]["n"] == 1  # 228 months = 19 years: in no group, only in "all"
    assert table["all"]["n"] == 5 and table["all"]["mae"] == pytest.approx(29 / 5)
    with pytest.raises(ValueError):
        age_group_table(pred[:2], truth)


def test_contact_sheet_is_written_at_the_expected_size(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (5, 64, 64), dtype=np.uint8)
    boxes = np.tile(np.array([10.0, 10.0, 20.0, 20.0]), (5, 13, 1))
    out = draw_contact_sheet(images, boxes, tmp_path / "sheet.png", titles=[f"img {i}" for i in range(5)], cols=3,
                             points=np.full((5, 17, 2), 32.0), cell_px=120)
    with Image.open(out) as png:
        assert png.size == (3 * 120, 2 * 120)
    with pytest.raises(ValueError):
        draw_contact_sheet(images, boxes[:2], tmp_path / "bad.png")


def test_stage_plot_is_written(tmp_path):
    out = plot_stage_distribution(stage_distribution(monotone_stages(), AGES, SEXES), tmp_path / "stages.png", title="t")
    with Image.open(out) as png:
        assert png.size == (1400, 800)


def _hand_boxes(scale: float = 1.0) -> OssificationBoxes:
    """A left hand (thumb at large x), fingers up: MCP row at y 60, index at x 60 and little at x 30 (W = 30)."""
    mcp = [(75, 65), (60, 60), (50, 60), (40, 60), (30, 60)]
    pip = [(85, 50), (60, 40), (50, 40), (40, 40), (30, 40)]
    dip = [(60, 30), (50, 28), (40, 30), (30, 30)]
    boxes, labels = [], []
    for name, centres, half in (("MCP", mcp, 4.5), ("PIP", pip, 3.0), ("DIP", dip, 3.0)):
        for x, y in centres:
            boxes.append([x - half, y - half, x + half, y + half])
            labels.append(name)
    boxes += [[56, 100, 68, 110], [26, 100, 34, 108]]
    labels += ["Radius", "Ulna"]
    return OssificationBoxes("h", np.asarray(boxes, np.float32) / 100 * scale, tuple(labels), 100, 100)


def test_box_geometry_of_a_drawn_hand():
    values = measure_box_geometry({"h": _hand_boxes(), "incomplete": OssificationBoxes("x", np.zeros((0, 4)), (), 10, 10)})
    assert int(values["n_images"]) == 1
    assert values["radius_t"][0] == pytest.approx(12 / 30) and values["radius_p"][0] == pytest.approx(45 / 30)
    assert values["radius_w"][0] == pytest.approx(12 / 30) and values["ulna_h"][0] == pytest.approx(8 / 30)
    assert values["mcp_size"][0] == pytest.approx(9 / 30) and values["thumb_ip_size"][0] == pytest.approx(6 / 30)
    assert values["pip3_t"][0] == pytest.approx(0.0, abs=1e-5) and values["pip3_p"][0] == pytest.approx(-20 / 30)
    rows = {row["key"]: row for row in geometry_comparison(values)}
    assert rows["radius_t"]["code"] == code_geometry()["radius_t"] and rows["mcp_height"]["code"] is None


def test_keypoint_geometry_of_a_drawn_hand():
    points = np.zeros((21, 2), np.float32)
    named = {"forefinger1": (60, 60), "middle_finger1": (50, 60), "pinky_finger1": (30, 60),
             "middle_finger2": (50, 40), "middle_finger3": (52, 28)}
    for name, xy in named.items():
        points[KEYPOINT_NAMES.index(name)] = np.array(xy) / 200  # normalised on a 200 x 200 image
    values = measure_keypoint_geometry({"k": HandKeypoints("k", points[None], 200, 200)})
    assert values["pip3_p"][0] == pytest.approx(-20 / 30) and values["dip3_t"][0] == pytest.approx(2 / 30)
    assert summarise(values["pip3_p"]) == {"median": pytest.approx(-20 / 30), "q1": pytest.approx(-20 / 30),
                                           "q3": pytest.approx(-20 / 30), "n": 1}
