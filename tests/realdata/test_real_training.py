"""Real RSNA radiographs from ../shared/data: a short training run must lower the loss."""

import json

import numpy as np
import pytest

from boneage.data import load_images, load_rsna
from boneage.io import read_image
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train

pytestmark = pytest.mark.realdata


def test_real_images_read_and_preprocess(rsna100, rsna512):
    image = read_image(rsna100 / "images" / "1377.png")
    assert image.pixels.shape == (100, 100) and image.meta.format == "png"
    samples = load_rsna(rsna512 / "images", rsna512 / "labels.csv", require_images=True)
    assert len(samples) == 40
    arrays = load_images(samples[:8], PreprocessConfig(image_size=(128, 128)))
    assert arrays.shape == (8, 128, 128) and arrays.std() > 20  # real contrast survived preprocessing


def test_few_steps_on_real_data_lower_the_loss(rsna100, tmp_path):
    config = TrainConfig(
        out_dir=str(tmp_path / "run"), images=str(rsna100 / "images"),
        labels=str(rsna100 / "boneage-training-dataset.csv"), limit=1200, width=0.25, epochs=4, batch_size=32,
        lr=3e-3, preprocess=PreprocessConfig(image_size=(96, 96)), progress=False, seed=0,
    )
    summary = train(config, log=lambda *a: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < losses[0] * 0.95, losses
    assert summary["steps"] == 4 * (1080 // 32)
    # the RSNA labels span ~1-228 months; predicting their mean gives ~33 months MAE
    assert np.isfinite(summary["best_val_mae_months"]) and summary["best_val_mae_months"] < 33
