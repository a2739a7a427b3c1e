"""ALA-Net on real RSNA images: the RPN's recall of the keypoint boxes rises with a few hundred steps."""

import json

import numpy as np
import pytest
import torch

from boneage.data import (
    apply_split,
    load_hand_keypoints,
    load_images,
    load_rsna,
    load_split,
    to_input_coordinates,
)
from boneage.evaluation import roi_detection_metrics
from boneage.models import create_model, default_model_path
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train
from tests.conftest import SHARED_DATA, require_shared

pytestmark = pytest.mark.realdata


def test_rpn_recall_rises_after_a_few_hundred_steps(rsna100, tmp_path):
    keypoints = require_shared(SHARED_DATA / "annotations" / "hand-keypoints-21")
    split_file = default_model_path() / "split.json"
    preprocess = PreprocessConfig(image_size=(100, 100))
    # held-out annotated images: the default split's validation part
    annotations = load_hand_keypoints(keypoints)
    samples = load_rsna(rsna100 / "images", rsna100 / "boneage-training-dataset.csv")
    _, val = apply_split(samples, load_split(split_file))
    val = [s for s in val if s.id in annotations]
    images = load_images(val, preprocess, progress=False)
    points = [to_input_coordinates(annotations[s.id].roi_points(), (100, 100), (100, 100)) for s in val]
    males = [s.male for s in val]

    torch.manual_seed(0)
    untrained = create_model("alanet18_rpn", width=0.5, max_pool=False, head="ordinal", label_range=[0.0, 228.0])
    before = roi_detection_metrics(untrained, images, points, males, preprocess)

    config = TrainConfig(
        out_dir=str(tmp_path / "rpn"), images=str(rsna100 / "images"), labels=str(rsna100 / "boneage-training-dataset.csv"),
        split_file=str(split_file), keypoints=str(keypoints), model="alanet18_rpn", annotated_only=True,
        batch_size=32, epochs=16, val_every=16, progress=False, seed=0, preprocess=preprocess,
    )
    summary = train(config, log=lambda *a: None)
    assert summary["steps"] == 16 * (511 // 32)  # 240 steps on the 511 annotated training images
    after = json.loads((tmp_path / "rpn" / "model" / "config.json").read_text())["metrics"]["detection"]
    assert after["n_images"] == len(val) == 57 and after["n_boxes"] == 17 * 57
    assert after["recall50"] > before["recall50"] + 30, (before, after)
    assert after["ap50"] > 40 and np.isfinite(after["ap"]), after
