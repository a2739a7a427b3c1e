"""Training on synthetic phantoms: the loop learns, checkpoints resume exactly, torchrun/DDP works."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from boneage.models import load_checkpoint, load_model
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from boneage.data import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), 240, size=64, seed=0)


def _config(phantoms, out_dir, **overrides):
    image_dir, labels = phantoms
    values = dict(out_dir=str(out_dir), images=str(image_dir), labels=str(labels), width=0.25, epochs=4,
                  batch_size=32, lr=3e-3, preprocess=PreprocessConfig(image_size=(64, 64)), progress=False, seed=0,
                  val_fraction=0.2)
    values.update(overrides)
    return TrainConfig(**values)


def test_training_learns_phantom_ages(phantoms, tmp_path):
    summary = train(_config(phantoms, tmp_path / "run", epochs=6), log=lambda *a: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 6
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # predicting the mean of uniform 6-216 months gives ~52 months MAE; the model must do clearly better
    assert summary["val_metrics"]["mae_months"] < 40, summary["val_metrics"]
    model_dir = tmp_path / "run" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["format"] == "boneage-model" and config["preprocess"]["image_size"] == [64, 64]
    split = json.loads((model_dir / "split.json").read_text())
    assert config["training"]["split"]["n_val"] == len(split["val"]) and 40 <= len(split["val"]) <= 56
    assert config["training"]["split"]["n_train"] + len(split["val"]) == 240
    assert config["metrics"]["validation"]["mae_months"] == summary["val_metrics"]["mae_months"]
    assert load_model(model_dir).name == "global_resnet18-ordinal"
    for name in ("best.pt", "last.pt", "split.json", "val_predictions.csv", "val_agreement.png"):
        assert (tmp_path / "run" / name).exists(), name


def test_training_with_hand_clean_up_records_it_in_the_model(phantoms, tmp_path):
    """A model trained on segmented inputs stores the clean-up and the segmenter version, and its
    predictions go through the same clean-up."""
    from boneage.inference import Predictor
    from boneage.segmentation import cached_segmenter

    preprocess = PreprocessConfig(image_size=(64, 64), hand="crop_mask", contrast="hand")
    train(_config(phantoms, tmp_path / "seg", epochs=1, max_steps=2, preprocess=preprocess), log=lambda *a: None)
    config = json.loads((tmp_path / "seg" / "model" / "config.json").read_text())
    assert config["preprocess"]["hand"] == "crop_mask" and config["preprocess"]["contrast"] == "hand"
    assert config["preprocess"]["segmenter_version"] == cached_segmenter().info["version"]
    predictor = Predictor(tmp_path / "seg" / "model")
    assert "HandCleanup(hand='crop_mask', contrast='hand', check=True)" in repr(predictor.pipeline)
    image_dir, _ = phantoms
    prepared = predictor.prepare(sorted(Path(image_dir).glob("*.png"))[0])
    months, _ = predictor.predict([prepared], ["F"])
    assert prepared.mask is not None and 0 <= months[0] <= 228


def test_killed_run_resumes_to_the_same_result(phantoms, tmp_path):
    full = train(_config(phantoms, tmp_path / "full", epochs=3), log=lambda *a: None)
    steps_per_epoch = full["steps"] // 3
    # "killed" after the first epoch: only its checkpoint exists
    train(_config(phantoms, tmp_path / "resumed", epochs=3, max_steps=steps_per_epoch), log=lambda *a: None)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 0
    resumed = train(_config(phantoms, tmp_path / "resumed", epochs=3), resume=True, log=lambda *a: None)
    assert resumed["epochs_run"] == 3 and resumed["steps"] == full["steps"]
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]


def test_resume_continues_the_saved_recipe_and_names_ignored_settings(phantoms, tmp_path):
    train(_config(phantoms, tmp_path / "r", epochs=2, max_steps=2), log=lambda *a: None)
    messages = []
    summary = train(_config(phantoms, tmp_path / "r", epochs=2, model="global_resnet34"), resume=True,
                    log=messages.append)
    assert any("ignoring changed settings: model ('global_resnet34' -> saved 'global_resnet18')" in m for m in messages)
    assert summary["epochs_run"] == 2
    assert load_model(tmp_path / "r" / "model").config["model"]["name"] == "global_resnet18"


@pytest.mark.slow
def test_torchrun_two_processes_ddp(phantoms, tmp_path):
    image_dir, labels = phantoms
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "boneage",
           "train", "--images", str(image_dir), "--labels", str(labels), "--width", "0.25", "--image-size", "64",
           "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--no-progress", "--out-dir", str(tmp_path / "ddp")]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(history) == 2
    checkpoint = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert len(checkpoint["rng"]) == 2  # one augmentation RNG state per rank
    # 240 phantoms, 10% validation -> 216 training images; 2 ranks x 16 per step -> 6 steps per epoch
    assert checkpoint["step"] == 12
    assert Path(tmp_path / "ddp" / "model" / "model.safetensors").exists()
