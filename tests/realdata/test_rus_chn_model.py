"""The shipped RUS-CHN pipeline (--model rus-chn) on real data: it reproduces its recorded validation MAE,
its bones' stages rise with the bone age, and the command a user runs prints the 13 bones."""

import json
import subprocess
import sys

import numpy as np
import pytest

from boneage.data import apply_split, load_images, load_rsna, load_split
from boneage.data.rus_chn import BONES
from boneage.evaluation.evaluate import evaluate_samples
from boneage.inference import Predictor, predict_bones
from boneage.models import load_model, shipped_model_path
from boneage.segmentation import model_preprocessing

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def rus_model():
    if not (shipped_model_path("rus-chn") / "model.safetensors").exists():
        pytest.fail("the package ships no RUS-CHN model (src/boneage/weights/rus-chn)")
    return load_model("rus-chn")


@pytest.fixture(scope="module")
def validation(rus_model, rsna100):
    samples = load_rsna(rsna100 / "images", rsna100 / "boneage-training-dataset.csv")
    _, val = apply_split(samples, load_split(shipped_model_path("rus-chn") / "split.json"))
    return val


def test_config_records_both_training_steps(rus_model):
    config = rus_model.config
    recipe = config["training"]["recipe"]
    assert config["model"]["name"] == "rus_chn" and recipe["freeze"] == ["detector"] and recipe["init"]
    assert config["training"]["command"].startswith("boneage train")
    assert "training images" in config["output_map"]["fitted_on"]
    detection = config["metrics"]["detection"]
    assert set(detection["by_bone"]) == set(BONES) and detection["n_images"] > 40


def test_reproduces_its_validation_mae(rus_model, validation):
    result = evaluate_samples(Predictor(rus_model, check_hand=False), validation)
    recorded = rus_model.config["metrics"]["validation"]
    assert result.metrics["n"] == recorded["n"] and result.metrics["n_skipped"] == 0
    assert result.metrics["mae_months"] == pytest.approx(recorded["mae_months"], abs=0.05)


def test_every_bone_matures_with_age(rus_model, validation):
    """Weakly trained stages still mean something: each bone's predicted stage rises with the reference age."""
    from scipy.stats import spearmanr

    images = load_images(validation, rus_model.preprocess, pipeline=model_preprocessing(rus_model.preprocess, check_hand=False))
    males = [s.male for s in validation]
    found = predict_bones(rus_model.model, images, males, rus_model.preprocess)
    ages = np.array([s.bone_age_months for s in validation])
    for b, bone in enumerate(BONES):
        rho = spearmanr(found["stage"][:, b], ages).statistic
        assert rho > 0.5, (bone, rho)


def test_predict_prints_the_bones(rsna512):
    first = sorted((rsna512 / "images").glob("*.png"))[0]
    result = subprocess.run([sys.executable, "-m", "boneage", "predict", str(first), "--sex", "F", "--model", "rus-chn",
                             "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    item = json.loads(result.stdout)[0]
    assert [b["name"] for b in item["bones"]] == list(BONES)
    assert item["rus_chn_score"] == sum(b["score"] for b in item["bones"])
    height, width = 512, 512  # boxes are in the input file's pixels
    for bone in item["bones"]:
        x0, y0, x1, y1 = bone["box"]
        assert -0.1 * width < x0 < x1 < 1.1 * width and -0.1 * height < y0 < y1 < 1.1 * height
    assert 0 <= item["bone_age_months"] <= 240
