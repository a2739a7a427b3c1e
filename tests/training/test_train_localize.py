"""Localize-then-regress through the training loop in its two documented steps (scripts/train_localize.sh): the
age-group localizer, then the regressor from its weights and from a global model's (two --init sources, the
later one overriding), exported with a larger inference size that the predictor then prepares images at."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import export_tiny_model

from boneage.data import write_phantom_dataset
from boneage.inference import Predictor
from boneage.models import load_model
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train

OPTIONS = {"localizer_size": [64, 64], "localizer_width": 0.25, "crop_size": [48, 48], "max_pool": False}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("localize_phantoms"), 48, size=64, seed=0)


def _config(data, out_dir, phase, **overrides):
    image_dir, labels = data
    values = dict(out_dir=str(out_dir), images=str(image_dir), labels=str(labels), model="localize_regress", head="mse",
                  width=0.25, model_kwargs={**OPTIONS, "phase": phase}, epochs=1, batch_size=16, lr=3e-3, progress=False,
                  seed=0, preprocess=PreprocessConfig(image_size=(64, 64)), val_fraction=0.25, tta="none")
    values.update(overrides)
    return TrainConfig(**values)


def test_two_steps_with_two_init_sources_and_an_inference_size(phantoms, tmp_path):
    train(_config(phantoms, tmp_path / "localizer", "localizer"))
    history = json.loads((tmp_path / "localizer" / "history.json").read_text())
    assert {"cross_entropy", "group_accuracy"} <= set(history[0]["train_loss_parts"])
    localizer = load_file(str(tmp_path / "localizer" / "model" / "model.safetensors"))

    glob = export_tiny_model(tmp_path / "global", "global", "global_resnet18", width=0.25, head="mse", max_pool=False)
    logs = []
    preprocess = PreprocessConfig(image_size=(64, 64), inference_size=(128, 128))
    train(_config(phantoms, tmp_path / "regressor", "regressor", init=[str(tmp_path / "localizer" / "model"), str(glob)],
                  preprocess=preprocess, freeze=["backbone"], max_steps=2), log=logs.append)
    text = "\n".join(logs)
    assert len(re.findall(r"--init .*: loaded \d+ tensors", text)) == 2
    exported = tmp_path / "regressor" / "model"
    weights = load_file(str(exported / "model.safetensors"))
    # the localizer (frozen by the model) is step 1's; the regressor's backbone (frozen here) is the global model's,
    # which overrode the step-1 regressor's weights of the same names
    name = "localizer.backbone.conv1.weight"
    torch.testing.assert_close(weights[name].float(), localizer[name].float())
    global_weights = load_file(str(glob / "model.safetensors"))
    torch.testing.assert_close(weights["backbone.conv1.weight"].float(), global_weights["backbone.conv1.weight"].float(),
                               atol=2e-3, rtol=2e-3)  # exported as float16
    assert not torch.equal(weights["backbone.conv1.weight"].float(), localizer["backbone.conv1.weight"].float())
    config = json.loads((exported / "config.json").read_text())
    assert config["preprocess"]["inference_size"] == [128, 128] and config["preprocess"]["image_size"] == [64, 64]

    predictor = Predictor(exported, check_hand=False)
    prepared = predictor.prepare(next(iter(sorted(phantoms[0].glob("*.png")))))
    assert prepared.image.shape == (128, 128)  # the model is given the hand at its inference size
    months, _ = predictor.predict([prepared], ["M"])
    assert np.isfinite(months).all()
    assert load_model(exported).model.gamma == 0.5
