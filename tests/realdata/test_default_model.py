"""The shipped default model on real data: it reproduces its recorded validation MAE exactly."""

import json
import subprocess
import sys

import numpy as np
import pytest

from boneage.data import apply_split, load_rsna, load_split
from boneage.evaluation.evaluate import evaluate_samples
from boneage.inference import Predictor
from boneage.models import default_model_path, load_model

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def default_model():
    if not (default_model_path() / "model.safetensors").exists():
        pytest.fail("the package ships no default model (src/boneage/weights/default)")
    return load_model(None)


def test_default_model_config_is_complete(default_model):
    config = default_model.config
    for key in ("model", "preprocess", "labels", "training", "metrics", "version"):
        assert key in config, key
    assert config["training"]["command"].startswith("boneage train")
    assert config["metrics"]["validation"]["n"] == config["training"]["split"]["n_val"]
    assert (default_model_path() / "split.json").exists()


def test_default_model_reproduces_its_validation_mae(default_model, rsna100):
    samples = load_rsna(rsna100 / "images", rsna100 / "boneage-training-dataset.csv")
    _, val = apply_split(samples, load_split(default_model_path() / "split.json"))
    result = evaluate_samples(Predictor(default_model, check_hand=False), val)
    recorded = default_model.config["metrics"]["validation"]
    assert result.metrics["n"] == recorded["n"] and result.metrics["n_skipped"] == 0
    assert result.metrics["mae_months"] == pytest.approx(recorded["mae_months"], abs=0.05)
    assert result.metrics["mae_months"] < 9.0  # the target at 100 px


def test_cli_on_real_512px_samples(rsna512):
    """The command a user runs, on higher-resolution real radiographs the model never saw at that size."""
    result = subprocess.run([sys.executable, "-m", "boneage", "evaluate", "--images", str(rsna512 / "images"),
                             "--labels", str(rsna512 / "labels.csv"), "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 40 and metrics["mae_months"] < 20, metrics
    first = sorted((rsna512 / "images").glob("*.png"))[0]
    result = subprocess.run([sys.executable, "-m", "boneage", "predict", str(first), "--sex", "F", "--json"],
                            capture_output=True, text=True, timeout=300)
    value = json.loads(result.stdout)[0]["bone_age_months"]
    assert result.returncode == 0 and 0 <= value <= 228 and np.isfinite(value)


def test_onnx_runtime_gives_the_same_bone_ages_on_real_validation_images(default_model, rsna100, tmp_path, monkeypatch):
    """The shipped model exported to ONNX and run by onnxruntime: within 0.1 month of PyTorch on every one of 128
    real validation images (through the whole preprocessing, hand clean-up included)."""
    monkeypatch.setenv("BONEAGE_CACHE", str(tmp_path))
    samples = load_rsna(rsna100 / "images", rsna100 / "boneage-training-dataset.csv")
    _, val = apply_split(samples, load_split(default_model_path() / "split.json"))
    val = val[:128]
    torch_predictor = Predictor(default_model, check_hand=False)
    onnx_predictor = Predictor(default_model, check_hand=False, runtime="onnx")
    assert onnx_predictor.runtime == "onnx"
    prepared = [torch_predictor.prepare(s.path) for s in val]
    sexes = [s.sex for s in val]
    (months, sd), (onnx_months, onnx_sd) = torch_predictor.predict(prepared, sexes), onnx_predictor.predict(prepared, sexes)
    assert np.abs(onnx_months - months).max() < 0.1
    if sd is not None:
        assert np.abs(onnx_sd - sd).max() < 0.1


def test_the_robust_model_reproduces_its_mae_and_predicts_the_sex(rsna100):
    """The shipped `robust` model (stage 2 of scripts/train_default_model.sh): its recorded validation MAE through
    the predictor, and a sex head that beats always answering the commoner sex; without the sex it still assesses."""
    from boneage.models import shipped_model_path

    if not (shipped_model_path("robust") / "model.safetensors").exists():
        pytest.fail("the package ships no robust model (src/boneage/weights/robust)")
    robust = load_model("robust")
    samples = load_rsna(rsna100 / "images", rsna100 / "boneage-training-dataset.csv")
    _, val = apply_split(samples, load_split(shipped_model_path("robust") / "split.json"))
    result = evaluate_samples(Predictor(robust, check_hand=False), val)
    assert result.metrics["mae_months"] == pytest.approx(robust.config["metrics"]["validation"]["mae_months"], abs=0.05)
    sex = result.metrics["sex_prediction"]
    assert sex["accuracy"] > sex["majority_rate"] + 0.03 and sex["auc"] > 0.6, sex
    assert sex["mae_months_sex_unknown"] < 20, sex
    assert "calibration" in robust.config
