"""The shipped localize-then-regress model (--model localize) on real data: its recorded training steps, its
validation MAE reproduced through the predictor, and the command a user runs prints a bone age and writes the
heat map, the mask and the crop on the full-resolution radiograph."""

import json

import numpy as np
import pytest
from PIL import Image

from boneage.cli import main
from boneage.data import apply_split, load_rsna, load_split
from boneage.evaluation.evaluate import evaluate_samples
from boneage.inference import Predictor
from boneage.models import load_model, shipped_model_path
from tests.conftest import RSNA_512

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def localize_model():
    if not (shipped_model_path("localize") / "model.safetensors").exists():
        pytest.fail("the package ships no localize-then-regress model (src/boneage/weights/localize)")
    return load_model("localize")


def test_config_records_both_steps(localize_model):
    """Step 2 started from step 1's localizer and the default model's first member, as scripts/train_localize.sh
    does; the model takes the hand at the size it trained at (crops from 512 px measured worse)."""
    config = localize_model.config
    recipe = config["training"]["recipe"]
    assert config["model"]["name"] == "localize_regress" and config["model"]["kwargs"]["phase"] == "regressor"
    assert len(recipe["init"]) == 2 and recipe["init"][1].endswith("weights/default") and recipe["init_member"] == 0
    assert config["training"]["command"].startswith("boneage train")
    assert localize_model.preprocess.image_size == (100, 100) and localize_model.preprocess.inference_size is None


def test_reproduces_its_validation_mae_through_the_predictor(localize_model, rsna100):
    samples = load_rsna(rsna100 / "images", rsna100 / "boneage-training-dataset.csv")
    _, validation = apply_split(samples, load_split(shipped_model_path("localize") / "split.json"))
    result = evaluate_samples(Predictor(localize_model, check_hand=False), validation)
    recorded = localize_model.config["metrics"]["validation"]
    assert result.metrics["n"] == recorded["n"] and result.metrics["n_skipped"] == 0
    assert result.metrics["mae_months"] == pytest.approx(recorded["mae_months"], abs=0.05)


def test_predict_explain_writes_the_three_panels_on_the_full_resolution_radiograph(tmp_path, capsys):
    if not RSNA_512.exists():
        pytest.skip(f"real data not found at {RSNA_512}")
    image = RSNA_512 / "images" / "1437.png"
    assert main(["predict", str(image), "--sex", "F", "--model", "localize", "--json", "--explain", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    record = out[0] if isinstance(out, list) else out
    assert 0 <= record["bone_age_months"] <= 228
    pictures = sorted(tmp_path.glob("*.png"))
    assert len(pictures) == 1
    picture = np.asarray(Image.open(pictures[0]))
    with Image.open(image) as original:
        size = (original.height, original.width)
    assert max(size) == 512  # the radiograph at its own resolution: three panels of it side by side, 4 px apart
    assert picture.shape == (size[0], 3 * size[1] + 8, 3)
