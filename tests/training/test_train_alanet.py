"""ALA-Net through the training loop: keypoints reach the RPN (through the augmentation), the RPN
learns, the exported model carries its detection metrics; clear errors without keypoints."""

import json
import re

import pytest
from tests.helpers import write_coco_keypoints

from boneage.errors import InvalidInputError
from boneage.models import load_model
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train


@pytest.fixture(scope="module")
def annotated_phantoms(tmp_path_factory):
    """Phantoms plus COCO keypoints for two thirds of them, on a fixed 21-point pattern."""
    from boneage.data import write_phantom_dataset

    folder = tmp_path_factory.mktemp("alanet_phantoms")
    image_dir, labels = write_phantom_dataset(folder, 120, size=64, seed=0)
    ids = sorted(p.stem for p in image_dir.glob("*.png"))
    pattern = [(12 + 40 * (k % 5) / 4, 10 + 44 * (k // 5) / 4) for k in range(21)]
    keypoints = write_coco_keypoints(folder / "keypoints.json", ids, pattern)
    return image_dir, labels, keypoints


def _config(data, out_dir, **overrides):
    image_dir, labels, keypoints = data
    values = dict(out_dir=str(out_dir), images=str(image_dir), labels=str(labels), keypoints=str(keypoints),
                  model="alanet18", width=0.25, epochs=3, batch_size=16, lr=3e-3, progress=False, seed=0,
                  preprocess=PreprocessConfig(image_size=(64, 64)), val_fraction=0.2)
    values.update(overrides)
    return TrainConfig(**values)


def test_alanet_trains_with_keypoints_and_reports_detection(annotated_phantoms, tmp_path):
    logs = []
    summary = train(_config(annotated_phantoms, tmp_path / "run", epochs=4), log=logs.append)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    parts = [h["train_loss_parts"] for h in history]
    assert set(parts[0]) == {"ordinal", "patch", "rpn"}
    assert parts[-1]["rpn"] < 0.7 * parts[0]["rpn"], parts
    counts = [re.search(r"keypoints: (\d+) training and (\d+) validation", line) for line in logs]
    counts = [tuple(int(v) for v in m.groups()) for m in counts if m]
    assert len(counts) == 1 and sum(counts[0]) == 80, logs[:3]  # 80 of the 120 phantoms are annotated
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    detection = config["metrics"]["detection"]
    assert detection["n_images"] > 0 and detection["n_boxes"] == 17 * detection["n_images"]
    assert 0 <= detection["ap"] <= 100 and detection["ap50"] >= detection["ap75"]
    assert config["model"]["name"] == "alanet18" and summary["val_metrics"]["n"] == config["training"]["split"]["n_val"]
    assert load_model(tmp_path / "run" / "model").model.capabilities.needs_keypoints


def test_rpn_alone_on_annotated_images_only(annotated_phantoms, tmp_path):
    logs = []
    train(_config(annotated_phantoms, tmp_path / "rpn", model="alanet18_rpn", annotated_only=True, epochs=2,
                  val_every=2), log=logs.append)
    history = json.loads((tmp_path / "rpn" / "history.json").read_text())
    assert set(history[0]["train_loss_parts"]) == {"rpn"}
    assert history[0]["val_mae_months"] is None and history[1]["val_mae_months"] is not None  # validated at the end
    annotated = [int(m.group(1)) for m in (re.search(r"keypoints: (\d+) training", line) for line in logs) if m]
    trained = [int(m.group(1)) for m in (re.search(r"data: (\d+) train", line) for line in logs) if m]
    assert trained == annotated and 50 < trained[0] < 80  # only the annotated training images


def test_alanet_without_keypoints_is_a_clear_error(annotated_phantoms, tmp_path):
    with pytest.raises(InvalidInputError, match="--keypoints"):
        train(_config(annotated_phantoms, tmp_path / "x", keypoints=None), log=lambda *a: None)
    with pytest.raises(InvalidInputError, match="annotated-only"):
        train(_config(annotated_phantoms, tmp_path / "y", model="global_resnet18", annotated_only=True),
              log=lambda *a: None)
    assert not (tmp_path / "x" / "split.json").exists()  # failed before writing anything
