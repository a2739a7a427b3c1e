"""boneage.api: the one assessment path, a radiograph in, the whole assessment out (with hand-checkable
numbers from a fixed-answer predictor, and with real small models for the evidence)."""

import json
import types
from html import escape as html_escape

import numpy as np
import pytest
from PIL import Image

from boneage.api import Assessor, assess
from boneage.clinical import DISCLAIMER, Assessment, write_report
from boneage.data import hand_phantom
from boneage.errors import ImageReadError, InvalidInputError, UnusableImageError
from boneage.inference import Predictor, Results
from boneage.io import read_image
from boneage.models import BoneAgeModel
from boneage.preprocess import PreprocessConfig, build_preprocessing
from tests.helpers import dicom_with_dates

_PRE = PreprocessConfig(image_size=(64, 64))


class _NoEvidence(BoneAgeModel):
    """A network that offers no visual evidence (no Grad-CAM layers, ROIs or attention)."""


class FixedPredictor(Predictor):
    """A Predictor that answers a fixed bone age (and SD), so numbers can be checked by hand; it
    preprocesses as a real one does (without the hand check)."""

    def __init__(self, months=140.0, sd=2.0, tta="hflip", sex_probability=None):  # noqa: D107 - no model is loaded
        self.months, self.sd, self.tta, self.sex_probability = months, sd, tta, sex_probability
        config = {"name": "fixed", "version": "1.2.3", "members": [{}, {}], "metrics": {"validation": {"mae_months": 8.5}}}
        self.loaded = types.SimpleNamespace(name="fixed", version="1.2.3", config=config, preprocess=_PRE,
                                            validation_mae=8.5, model=_NoEvidence())
        self.preprocess, self.check_hand, self.pipeline = _PRE, False, build_preprocessing(_PRE)

    predicts_sex = property(lambda self: self.sex_probability is not None)  # given a probability of a boy, it predicts

    def run(self, prepared, sexes, batch_size=64):  # predict() answers through it too
        n = len(prepared)
        return Results(np.full(n, self.months, dtype=np.float32), None if self.sd is None else np.full(n, self.sd, np.float32),
                       None, None if self.sex_probability is None else np.full(n, self.sex_probability, np.float32))


@pytest.fixture()
def hand_png(tmp_path):
    path = tmp_path / "hand.png"
    Image.fromarray(hand_phantom(110, "F", 96, np.random.default_rng(0))).save(path)
    return path


def test_assess_uses_dicom_tags_and_gives_the_interval(tmp_path):
    path = dicom_with_dates(tmp_path / "hand.dcm")
    a = assess(path, model=FixedPredictor(months=140, sd=2.0), height_cm=132)
    assert a.status == "ok" and a.sex == "F" and a.sex_source == "dicom"
    assert a.chronological_age_source == "dicom_dates" and a.chronological_age_months == pytest.approx(111.97, abs=0.01)
    assert a.uncertainty["low_months"] == pytest.approx(140 - 1.96 * 2) and a.uncertainty["high_months"] == pytest.approx(143.92)
    assert "ensemble members" in a.uncertainty["method"] and "flip" in a.uncertainty["method"]
    assert a.uncertainty["calibrated"] is False and a.uncertainty["method"].startswith("uncalibrated")  # no calibration
    assert any(s.startswith("The interval shown is not calibrated") for s in a.statements)
    assert a.adult_height["maturity_category"] == "accelerated"  # bone age 28 months ahead
    data = json.loads(json.dumps(a.to_dict()))
    for key in ("bone_age_months", "bone_age_text", "sex", "chronological_age_months", "chronological_age_source",
                "bone_age_minus_chronological_months", "sds", "centile", "reading", "reference_mean_months",
                "reference_sd_months", "adult_height", "uncertainty", "statements", "status", "model", "patient",
                "study", "image_sha256", "disclaimer"):
        assert key in data, key
    assert data["model"] == {"name": "fixed", "version": "1.2.3", "validation_mae_months": 8.5}
    assert data["patient"]["name"] == "Doe^Jane" and data["study"]["accession_number"] == "ACC42"
    assert data["bone_age_text"] == "11 years 8 months" and len(data["image_sha256"]) == 64


def test_given_age_wins_over_dicom_and_the_difference_is_stated(tmp_path):
    a = assess(dicom_with_dates(tmp_path / "hand.dcm"), model=FixedPredictor(), age="8y")
    assert a.chronological_age_months == 96 and a.chronological_age_source == "argument"
    assert any("differs from the one in the file" in s for s in a.statements)


def test_single_model_has_no_interval(hand_png, tiny_model_dir):

    a = assess(hand_png, model=Predictor(tiny_model_dir), sex="F", age=110)
    assert a.status == "ok" and 0 <= a.bone_age_months <= 228 and a.uncertainty is None
    assert any("no uncertainty estimate" in s for s in a.statements)
    assert a.model["name"] == "tiny-test" and a.radiograph.dtype == np.uint8


def test_blank_image_is_rejected(tmp_path, tiny_model_dir):

    path = tmp_path / "blank.png"
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(path)
    predictor = Predictor(tiny_model_dir)
    with pytest.raises(UnusableImageError, match="blank"):
        assess(path, model=predictor, sex="M")
    a = assess(path, model=predictor, sex="M", age=120, reject=True)
    assert a.status == "rejected" and a.bone_age_months is None and "blank" in a.rejection
    assert a.chronological_age_months == 120 and "rejected" in a.statements[0]
    assert a.to_dict()["status"] == "rejected"
    with pytest.raises(ImageReadError, match="not found"):  # nothing to report on: still an error
        assess(tmp_path / "missing.png", model=predictor, sex="M", reject=True)


def test_the_model_evidence_is_drawn_and_can_be_switched_off(hand_png, tiny_model_dir):

    predictor = Predictor(tiny_model_dir)  # a ResNet: Grad-CAM
    a = assess(hand_png, model=predictor, sex="F", age=110)
    assert a.evidence is not None and a.evidence.dtype == np.uint8 and a.evidence.ndim == 3 and a.evidence.shape[2] == 3
    assert a.radiograph.shape == (96, 96) and a.evidence.shape == (96 * 3, 96 * 3, 3)  # enlarged to be legible
    assert "Grad-CAM" in a.evidence_label
    assert a.to_dict()["evidence"] == {"available": True, "label": a.evidence_label}
    plain = assess(hand_png, model=predictor, sex="F", age=110, explain=False)
    assert plain.evidence is None and plain.to_dict()["evidence"] == {"available": False, "label": None}
    assert plain.bone_age_months == pytest.approx(a.bone_age_months)
    text = write_report(a, hand_png.parent / "r.html").read_text()
    assert f"Evidence overlay: {html_escape(a.evidence_label)}" in text


def test_evidence_of_an_alanet_is_its_rois(hand_png, tiny_alanet_dir):

    a = assess(hand_png, model=Predictor(tiny_alanet_dir), sex="M", age=110)
    assert a.evidence is not None and "regions of interest" in a.evidence_label


def test_a_failure_to_draw_evidence_is_stated_not_fatal(hand_png, tiny_model_dir, monkeypatch):
    from boneage.api import assessor

    def broken(*_args, **_kwargs):
        raise RuntimeError("hook failed")

    monkeypatch.setattr(assessor, "explain_image", broken)
    a = assess(hand_png, model=Predictor(tiny_model_dir), sex="F")
    assert a.status == "ok" and a.evidence is None and any("evidence could not be drawn" in s for s in a.statements)


def test_source_names_the_image_in_messages(tmp_path, hand_png):
    blank = tmp_path / "tmp-upload-1234.png"
    Image.fromarray(np.full((200, 200), 7, dtype=np.uint8)).save(blank)
    rejected = assess(blank, model=FixedPredictor(), sex="F", name="hand of the patient.png", reject=True)
    assert rejected.source == "hand of the patient.png"
    assert rejected.rejection.startswith("hand of the patient.png: image is blank")
    assert all("tmp-upload-1234" not in s for s in [rejected.rejection, *rejected.statements])
    image = read_image(hand_png)
    assert assess(image, model=FixedPredictor(), sex="F").source == str(hand_png)  # default: the path
    with pytest.raises(InvalidInputError, match="^upload.png: sex unknown"):
        assess(image, model=FixedPredictor(), name="upload.png")


def test_from_dict_rebuilds_a_stored_assessment_for_its_report(tmp_path):
    a = assess(dicom_with_dates(tmp_path / "hand.dcm"), model=FixedPredictor(months=140, sd=2.0),
               age="9y4m", height_cm=132, explain=False)
    stored = json.loads(json.dumps(a.to_dict()))
    again = type(a).from_dict(stored, radiograph=a.radiograph)
    assert again.to_dict() == stored
    overlay = np.zeros((40, 30, 3), dtype=np.uint8)
    shown = type(a).from_dict({**stored, "evidence": {"available": True, "label": "Grad-CAM: heat"}}, evidence=overlay)
    assert shown.evidence is overlay and shown.evidence_label == "Grad-CAM: heat"
    assert "Evidence overlay: Grad-CAM: heat" in write_report(shown, tmp_path / "e.html").read_text()


# -------------------------------------------------------------------------------------------- reports
def test_pdf_and_html_reports(tmp_path):
    path = dicom_with_dates(tmp_path / "hand.dcm", name="Doe^<Jane>")
    a = assess(path, model=FixedPredictor(months=140, sd=2.0), age="9y4m", height_cm=132)
    pdf = write_report(a, tmp_path / "report.pdf")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
    text = write_report(a, tmp_path / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and "data:image/png;base64," in text
    for needle in ("140.0 months", "11 years 8 months", "+2.01", "advanced", "112.0 months", "ACC42",
                   "Doe^&lt;Jane&gt;", "fixed 1.2.3", "No evidence overlay", "136.1 to 143.9 months"):
        assert needle in text, needle
    assert "<Jane>" not in text and DISCLAIMER in text.replace("\n", " ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand.dcm", "report.html", "report.pdf"]


def test_report_shows_evidence_and_says_when_rejected(tmp_path, hand_png):
    overlay = np.zeros((32, 32, 3), dtype=np.uint8)
    overlay[..., 0] = 255
    a = assess(hand_png, model=FixedPredictor(), sex="F")
    a.evidence, a.evidence_label = overlay, "Grad-CAM"
    text = write_report(a, tmp_path / "r.html").read_text()
    assert "Evidence overlay: Grad-CAM" in text and a.to_dict()["evidence"] == {"available": True, "label": "Grad-CAM"}
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200), 9, dtype=np.uint8)).save(blank)
    rejected = assess(blank, model=FixedPredictor(), sex="F", reject=True)
    assert "rejected" in write_report(rejected, tmp_path / "rejected.html").read_text()
    assert write_report(rejected, tmp_path / "rejected.pdf").read_bytes().startswith(b"%PDF")


def test_default_model_end_to_end(tmp_path, hand_png):
    """The shipped ensemble gives a bone age, its calibrated interval, and a PDF report."""

    a = assess(hand_png, sex="F", age="9y2m", height_cm=130)  # no model given: the shipped one
    assert a.status == "ok" and 0 <= a.bone_age_months <= 228
    assert a.uncertainty is not None and a.uncertainty["low_months"] <= a.bone_age_months <= a.uncertainty["high_months"]
    assert a.uncertainty["calibrated"] is True and "conformal" in a.uncertainty["method"]
    assert a.uncertainty["high_months"] - a.uncertainty["low_months"] > 20  # the model's error, not its members' spread
    assert any("interval is calibrated" in s and "1158 held-out validation images" in s for s in a.statements)
    assert write_report(a, tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


def _calibrated(predictor: FixedPredictor) -> FixedPredictor:
    """The predictor with a calibration in its model config: residuals 1..40 months in every group."""
    from boneage.evaluation.calibration import fit_calibration

    rng = np.random.default_rng(0)
    predicted = rng.uniform(0, 228, 400)
    residual = np.tile(np.arange(1.0, 41.0), 10)
    calibration = fit_calibration(predicted, predicted + residual, ["M", "F"] * 200, grouping="none")
    calibration["fitted_on"] = {"description": "synthetic test data"}
    predictor.loaded.config["calibration"] = calibration
    return predictor


def test_the_interval_comes_from_the_model_calibration(tmp_path, hand_png):
    predictor = _calibrated(FixedPredictor(months=140.0, sd=0.04))
    a = assess(hand_png, model=predictor, sex="F", age="10y")
    q = 39.0  # ceil(401 * 0.95) = 381st smallest of 10 x (1..40) residuals
    assert a.uncertainty["low_months"] == pytest.approx(140 - q) and a.uncertainty["high_months"] == pytest.approx(140 + q)
    assert a.uncertainty["calibrated"] is True and a.uncertainty["level"] == 0.95
    assert a.uncertainty["sd_months"] == pytest.approx(0.04) and "conformal" in a.uncertainty["method"]
    assert any("95% interval is calibrated" in s and "synthetic test data" in s for s in a.statements)
    assert not any("not calibrated" in s or "disagree" in s for s in a.statements)
    [batch] = list(Assessor(predictor).assess_files([hand_png], sex="F"))  # the batch path computes it too
    assert (batch.uncertainty["low_months"], batch.uncertainty["high_months"]) == pytest.approx((140 - q, 140 + q))
    stored = Assessment.from_dict(json.loads(json.dumps(a.to_dict())))
    assert stored.uncertainty["high_months"] == pytest.approx(140 + q) and stored.uncertainty["calibrated"] is True
    low = assess(hand_png, model=_calibrated(FixedPredictor(months=10.0, sd=None)), sex="M")
    assert low.uncertainty["low_months"] == 0.0 and low.uncertainty["sd_months"] is None  # clipped; a single model
    assert Assessment.from_dict(low.to_dict()).uncertainty["low_months"] == 0.0  # kept without a member SD
    assert "0.0 to" in write_report(low, tmp_path / "r.html").read_text()


def test_the_same_file_twice_in_a_batch_is_assessed_twice(hand_png):
    from boneage.api import Assessor

    results = list(Assessor(FixedPredictor(months=120, sd=None)).assess_files([hand_png, hand_png], sex="F"))
    assert [r.status for r in results] == ["ok", "ok"] and [r.bone_age_months for r in results] == [120, 120]


def test_a_model_that_predicts_the_sex_assesses_a_radiograph_of_unknown_sex(hand_png, tmp_path):
    """No sex given, none in the file: the model's prediction is used, said so (the report too), and its
    probability kept."""
    a = assess(hand_png, model=FixedPredictor(months=140, sex_probability=0.2), age="10y")
    assert a.status == "ok" and a.sex == "F" and a.sex_source == "predicted"
    assert a.sex_probability == pytest.approx(0.8)
    assert a.statements[0].startswith("The sex was not given: the model predicted it from the radiograph as female "
                                      "(probability 0.80)")
    girl = assess(hand_png, model=FixedPredictor(months=140), sex="F", age="10y")
    assert a.sds == girl.sds and a.reference == girl.reference  # the girls' reference, as for a given F
    data = a.to_dict()
    assert data["sex_source"] == "predicted" and data["sex_probability"] == 0.8
    assert Assessment.from_dict(data).sex_probability == pytest.approx(0.8)
    html = write_report(a, tmp_path / "report.html").read_text()
    assert "female (predicted from the radiograph, probability 0.80; not given)" in html


def test_a_confident_prediction_of_the_other_sex_asks_to_check_the_dicom_sex(tmp_path):
    path = dicom_with_dates(tmp_path / "hand.dcm")  # PatientSex F
    a = assess(path, model=FixedPredictor(months=140, sex_probability=0.97))
    assert a.sex == "F" and a.sex_source == "dicom" and a.sex_probability == pytest.approx(0.03)
    assert "Check the sex: the DICOM PatientSex is female, but the model reads the radiograph as male (probability 0.97)." \
        in a.statements
    calm = assess(path, model=FixedPredictor(months=140, sex_probability=0.6))
    assert not any(s.startswith("Check the sex") for s in calm.statements)


def test_many_files_of_unknown_sex_get_the_predicted_sex(hand_png, tmp_path):
    other = tmp_path / "other.png"
    other.write_bytes(hand_png.read_bytes())
    found = list(Assessor(FixedPredictor(months=120, sex_probability=0.9)).assess_files([hand_png, other]))
    assert [(a.sex, a.sex_source) for a in found] == [("M", "predicted")] * 2
    assert all(a.statements[0].startswith("The sex was not given") for a in found)
