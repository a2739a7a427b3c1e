"""Per-bone results (the RUS-CHN pipeline) on the one assessment path: 13 bones with their boxes in the
radiograph's own pixels, stages and scores, the total and the RUS-CHN age, in the Assessment, its JSON,
``predict --json`` and the evidence overlay; nothing of it for a model without per-bone results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from boneage.api import Assessor
from boneage.cli import main
from boneage.clinical import Assessment
from boneage.data import hand_phantom
from boneage.data.rus_chn import BONES, bone_age_years, stage_score
from boneage.explain import BONE_LABELS
from boneage.utils import format_months
from tests.conftest import export_tiny_model


@pytest.fixture(scope="module")
def rus_chn_dir(tmp_path_factory):
    """An exported, untrained RUS-CHN pipeline at 64 x 64 px (no hand clean-up)."""
    return export_tiny_model(tmp_path_factory.mktemp("tiny_rus_chn"), "tiny-rus-chn", "rus_chn")


@pytest.fixture(scope="module")
def assessor(rus_chn_dir):
    return Assessor(rus_chn_dir)


@pytest.fixture(scope="module")
def hands(tmp_path_factory):
    """A phantom hand at 256 px and the same picture at twice the size (each pixel repeated)."""
    folder = tmp_path_factory.mktemp("hands")
    pixels = hand_phantom(130, "F", 256, np.random.default_rng(3))
    Image.fromarray(pixels).save(folder / "hand.png")
    Image.fromarray(np.kron(pixels, np.ones((2, 2), np.uint8))).save(folder / "hand_x2.png")
    return folder / "hand.png", folder / "hand_x2.png"


@pytest.fixture(scope="module")
def assessed(assessor, hands):
    return assessor.assess(hands[0], sex="F", age="10y")


def _boxes(assessment) -> np.ndarray:
    return np.array([bone["box"] for bone in assessment.bones], dtype=float)


def test_assess_gives_13_staged_and_scored_bones(assessed):
    a = assessed
    assert a.status == "ok" and [bone["name"] for bone in a.bones] == list(BONES)
    for bone in a.bones:
        assert isinstance(bone["stage"], int) and bone["score"] == stage_score(bone["name"], bone["stage"], "F")
        assert 0.0 <= bone["stage_probability"] <= 1.0 and 0.0 <= bone["box_score"] <= 1.0
    total = sum(bone["score"] for bone in a.bones)
    assert a.rus_chn["total_score"] == total and isinstance(a.rus_chn["total_score"], int)
    assert a.rus_chn["age_months"] == pytest.approx(12 * bone_age_years(total, "F"), abs=0.05)
    assert "Greulich & Pyle" in a.rus_chn["scale"] and "Chinese" in a.rus_chn["scale"]
    sentence = (f"RUS-CHN: 13 bones staged, total score {total} (RUS-CHN bone age {format_months(a.rus_chn['age_months'])}, "
                "Chinese standard); the bone age shown is its Greulich & Pyle equivalent.")
    assert sentence in a.statements


def test_boxes_are_in_the_radiographs_own_pixels(assessor, assessed, hands):
    boxes = _boxes(assessed)
    assert boxes.shape == (13, 4)
    assert (boxes >= 0).all() and (boxes <= 256).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    # the model sees a 64 px input: boxes left in its pixels would all lie below 64
    prepared = assessor.predictor.prepare(str(hands[0]))
    from boneage.inference import predict_bones

    found = predict_bones(assessor.predictor.model, prepared.to_uint8()[None], [0.0], assessor.predictor.preprocess)
    expected = prepared.input_to_original(found["boxes"][0].reshape(-1, 2, 2).astype(float)).reshape(-1, 4)
    np.testing.assert_allclose(boxes, expected, atol=0.051)
    assert not np.allclose(boxes, found["boxes"][0], atol=1.0)
    # the same hand at twice the size: the same model input, so boxes twice as far out
    double = assessor.assess(hands[1], sex="F")
    np.testing.assert_allclose(_boxes(double), 2 * boxes, atol=1.5)
    assert [b["stage"] for b in double.bones] == [b["stage"] for b in assessed.bones]


def test_the_evidence_is_the_13_boxes_labelled_with_short_names_and_stages(assessed):
    a = assessed
    assert a.evidence_kind == "rois" and a.evidence_label.startswith("RUS-CHN bones and stages")
    assert a.evidence.shape == (*a.radiograph.shape, 3)  # drawn on the radiograph as read, not the 64 px input
    assert not np.array_equal(a.evidence[..., 0], a.radiograph)
    assert BONE_LABELS["Radius"] == "R" and BONE_LABELS["MCPFirst"] == "MC1" and BONE_LABELS["DIPFifth"] == "DP5"


def test_explain_image_labels_each_box_and_maps_it_onto_the_display(assessor, hands):
    from boneage.explain import display_image, explain_image
    from boneage.io import read_image

    image = read_image(hands[1])
    prepared = assessor.predictor.prepare(image)
    bones = assessor.predictor.predict_bones([prepared], ["F"])[0]["bones"]
    display = display_image(image.pixels)  # 512 px: shown as it is
    evidence = explain_image(assessor.predictor.loaded, prepared, 0.0, display=display)
    assert evidence.roi_labels == [f"{BONE_LABELS[b['name']]} {b['stage']}" for b in bones]
    np.testing.assert_allclose(evidence.rois, [b["box"] for b in bones], atol=0.051)
    assert evidence.to_dict()["roi_labels"] == evidence.roi_labels


def test_to_dict_and_from_dict_round_trip(assessed):
    data = json.loads(json.dumps(assessed.to_dict()))
    assert len(data["bones"]) == 13 and data["rus_chn_score"] == assessed.rus_chn["total_score"]
    assert {"name", "box", "stage", "score", "stage_probability", "box_score"} <= set(data["bones"][0])
    assert set(data["rus_chn"]) == {"total_score", "age_months", "expected_total_score", "raw_months", "scale"}
    back = Assessment.from_dict(data)
    assert back.bones == assessed.bones and back.rus_chn["total_score"] == assessed.rus_chn["total_score"]
    again = back.to_dict()
    assert {k: v for k, v in again.items() if k != "evidence"} == {k: v for k, v in data.items() if k != "evidence"}


def test_from_dict_drops_malformed_bones(assessed):
    data = assessed.to_dict()
    broken = json.loads(json.dumps(data))
    broken["bones"][3]["box"] = [1.0, 2.0, 3.0]
    broken["rus_chn"].pop("total_score")
    back = Assessment.from_dict(broken)
    assert back.bones is None and back.rus_chn is None
    assert "bones" not in back.to_dict() and "rus_chn_score" not in back.to_dict()
    stage_text = json.loads(json.dumps(data))
    stage_text["bones"][0]["stage"] = "7"
    assert Assessment.from_dict(stage_text).bones is None


def test_assess_files_gives_the_same_bones_as_assess(assessor, assessed, hands):
    first, second = assessor.assess_files(list(hands), sex="F")
    # a batch of two and a batch of one may differ in the last float bits of a convolution
    assert [(b["name"], b["stage"], b["score"]) for b in first.bones] == [(b["name"], b["stage"], b["score"])
                                                                          for b in assessed.bones]
    for mine, theirs in zip(first.bones, assessed.bones):
        assert mine["box"] == pytest.approx(theirs["box"], abs=0.11)
    assert first.rus_chn["total_score"] == assessed.rus_chn["total_score"]
    assert first.rus_chn["raw_months"] == pytest.approx(assessed.rus_chn["raw_months"], abs=1e-3)
    assert len(second.bones) == 13 and any(s.startswith("RUS-CHN: 13 bones staged") for s in second.statements)


def test_a_model_without_per_bone_results_adds_no_keys(tiny_model_dir, hands):
    assessor = Assessor(tiny_model_dir)
    a = assessor.assess(hands[0], sex="F")
    assert a.bones is None and a.rus_chn is None and not assessor.predictor.model.capabilities.per_bone
    assert assessor.predictor.predict_bones([assessor.predictor.prepare(str(hands[0]))], ["F"]) is None
    data = a.to_dict()
    assert not {"bones", "rus_chn", "rus_chn_score"} & set(data)
    assert not any("RUS-CHN" in s for s in a.statements)


def test_predict_json_and_text_show_the_bones(capsys, rus_chn_dir, tiny_model_dir, hands):
    assert main(["predict", str(hands[0]), "--sex", "F", "--model", str(rus_chn_dir), "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert [bone["name"] for bone in item["bones"]] == list(BONES)
    for bone in item["bones"]:
        assert len(bone["box"]) == 4 and isinstance(bone["stage"], int) and isinstance(bone["score"], int)
    assert item["rus_chn_score"] == sum(bone["score"] for bone in item["bones"])
    assert main(["predict", str(hands[0]), "--sex", "F", "--model", str(rus_chn_dir)]) == 0
    assert f"RUS-CHN score {item['rus_chn_score']}" in capsys.readouterr().out
    assert main(["predict", str(hands[0]), "--sex", "F", "--model", str(tiny_model_dir), "--json"]) == 0
    [plain] = json.loads(capsys.readouterr().out)
    assert "bones" not in plain and "rus_chn_score" not in plain


def test_the_evidence_draws_the_bones_found_without_running_the_model_again(assessor, hands, monkeypatch):
    """explain_image with the bones the assessment found gives the picture it draws when it runs the model itself,
    and an assessment with its evidence runs the network as often as one without."""
    from boneage.explain import display_image, explain_image
    from boneage.io import read_image

    image = read_image(hands[0])
    prepared = assessor.predictor.prepare(image)
    found = assessor.predictor.predict_bones([prepared], ["F"])[0]
    display = display_image(image.pixels)
    ran = explain_image(assessor.predictor.loaded, prepared, 0.0, display=display)
    given = explain_image(assessor.predictor.loaded, prepared, 0.0, display=display, bones=found)
    np.testing.assert_allclose(given.rois, ran.rois, atol=0.15)  # the boxes as reported, to 0.1 px
    assert given.roi_labels == ran.roi_labels
    cls = type(assessor.predictor.model)
    original, calls = cls.forward, []

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", counted)
    assessor.assess(hands[0], sex="F")
    without = len(calls)
    assert assessor.assess(hands[0], sex="F", explain=True).evidence is not None
    assert without >= 1 and len(calls) == 2 * without
