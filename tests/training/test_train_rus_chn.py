"""The RUS-CHN pipeline through the training loop, in its two documented steps: the detector with the stage
heads on the annotated images, then the stage heads on every image from the first run's weights (--init)
with the detector frozen; per-bone stage labels from a made-up CSV; the G&P-equivalent map fitted at
export; transfer learning's report and its errors."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from tests.helpers import write_coco_keypoints

from boneage.data import KEYPOINT_NAMES, write_phantom_dataset
from boneage.data.rus_chn import BONES
from boneage.errors import DatasetError, InvalidInputError
from boneage.models import create_model, load_model
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train
from boneage.training.steps import param_groups
from boneage.training.transfer import freeze, load_matching_weights

HAND = {"wrist": (30, 58), "thumb1": (40, 50), "thumb2": (46, 42), "thumb3": (50, 35), "thumb4": (52, 30)}
for _name, _x in (("forefinger", 38), ("middle_finger", 31), ("ring_finger", 25), ("pinky_finger", 19)):
    for _k, _y in ((1, 34), (2, 22), (3, 14), (4, 8)):
        HAND[f"{_name}{_k}"] = (_x, _y)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """60 phantoms, two thirds annotated with one 21-point hand, and a stage label CSV for some of them."""
    folder = tmp_path_factory.mktemp("rus_phantoms")
    image_dir, labels = write_phantom_dataset(folder, 60, size=64, seed=0)
    ids = sorted(p.stem for p in image_dir.glob("*.png"))
    keypoints = write_coco_keypoints(folder / "keypoints.json", ids, [HAND[name] for name in KEYPOINT_NAMES])
    stages = folder / "stages.csv"
    stages.write_text("id,bone,stage\n" + "".join(f"{i},Radius,{n % 14}\n{i},dipfifth,{n % 11}\n" for n, i in enumerate(ids)))
    return image_dir, labels, keypoints, stages


def _config(data, out_dir, **overrides):
    image_dir, labels, keypoints, _ = data
    values = dict(out_dir=str(out_dir), images=str(image_dir), labels=str(labels), keypoints=str(keypoints),
                  model="rus_chn", head="stages", model_kwargs={"detector_options": {"work_size": 64}}, epochs=1,
                  batch_size=16, lr=3e-3, progress=False, seed=0, preprocess=PreprocessConfig(image_size=(64, 64)),
                  val_fraction=0.2)
    values.update(overrides)
    return TrainConfig(**values)


def test_two_step_training_with_init_freeze_and_stage_labels(phantoms, tmp_path):
    logs = []
    train(_config(phantoms, tmp_path / "detector", annotated_only=True), log=logs.append)
    history = json.loads((tmp_path / "detector" / "history.json").read_text())
    assert set(history[0]["train_loss_parts"]) == {"age", "prior", "detector"}
    config = json.loads((tmp_path / "detector" / "model" / "config.json").read_text())
    detection = config["metrics"]["detection"]
    assert set(detection["by_bone"]) == set(BONES)
    assert detection["n_boxes"] == 13 * detection["n_images"] and 0 <= detection["map50"] <= 100
    assert "training images" in config["output_map"]["fitted_on"]
    first = load_file(str(tmp_path / "detector" / "model" / "model.safetensors"))

    logs = []
    train(_config(phantoms, tmp_path / "stages", init=str(tmp_path / "detector" / "model"), freeze=["detector"],
                  stage_labels=str(phantoms[3]), init_lr_scale=0.5), log=logs.append)
    text = "\n".join(logs)
    assert re.search(r"--init .*: loaded \d+ tensors", text) and "--freeze detector" in text
    assert re.search(r"stage labels: \d+ bones of \d+ training images", text)
    history = json.loads((tmp_path / "stages" / "history.json").read_text())
    assert set(history[0]["train_loss_parts"]) == {"age", "prior", "stage"}  # no detector loss: frozen
    second = load_file(str(tmp_path / "stages" / "model" / "model.safetensors"))
    detector_keys = [k for k in first if k.startswith("detector.")]
    assert detector_keys and all(torch.equal(first[k], second[k]) for k in detector_keys)  # BN statistics included
    assert any(not torch.equal(first[k], second[k]) for k in first if k.startswith("stages."))
    fitted = load_model(tmp_path / "stages" / "model").model
    assert not torch.allclose(fitted.map_x[0], torch.linspace(0, 240, fitted.map_x.shape[1]))  # the map was fitted


def test_stage_label_errors_name_the_line(phantoms, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,bone,stage\nx,Radius,3\nx,Scaphoid,2\n")
    with pytest.raises(DatasetError, match=r"bad.csv:3: unknown bone 'Scaphoid'"):
        train(_config(phantoms, tmp_path / "a", stage_labels=str(bad)), log=lambda *a: None)
    bad.write_text("id,bone,stage\nx,DIPFifth,11\n")
    with pytest.raises(DatasetError, match=r"bad.csv:2: DIPFifth has stages 0-10, got 11"):
        train(_config(phantoms, tmp_path / "b", stage_labels=str(bad)), log=lambda *a: None)
    bad.write_text("id,bone,stage\nx,Ulna,1\nx,ulna,2\n")
    with pytest.raises(DatasetError, match="second stage for Ulna"):
        train(_config(phantoms, tmp_path / "c", stage_labels=str(bad)), log=lambda *a: None)
    with pytest.raises(InvalidInputError, match="per-bone models"):
        train(_config(phantoms, tmp_path / "d", model="global_resnet18", head="ordinal", model_kwargs={}, width=0.25,
                      stage_labels=str(phantoms[3])), log=lambda *a: None)


def test_load_matching_weights_reports_what_did_not_match(tmp_path):
    from tests.conftest import export_tiny_model

    source = export_tiny_model(tmp_path / "src", "src", "rus_chn", detector_options={"work_size": 64})
    target = create_model("rus_chn", detector_options={"work_size": 64, "cascade": 1}, attention=False)
    report = load_matching_weights(target, str(source))
    loaded_state = load_model(source).model.state_dict()
    assert report.loaded and all(torch.equal(target.state_dict()[k], loaded_state[k]) for k in report.loaded)
    assert any(name.startswith("stages.attention.") for name in report.unused)  # the target has no attention
    assert any(name.startswith("detector.refiners.") for name in report.missing)  # nor the source a cascade
    assert "loaded" in report.summary() and "unused" in report.summary()
    with pytest.raises(InvalidInputError, match="no weight of it matches"):
        load_matching_weights(create_model("global_resnet18", width=0.25), str(source))

    groups = param_groups(target, 0.05, lr=1e-3, loaded=report.loaded, loaded_lr=1e-4)
    assert {g.get("lr") for g in groups} == {None, 1e-4}  # the cascade's new refiners train at --lr
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in target.parameters())
    frozen = freeze(target, ["detector"])
    assert frozen and not any(p.requires_grad for p in target.detector.parameters())
    with pytest.raises(InvalidInputError, match="its modules are detector, stages"):
        freeze(target, ["backbone"])


def test_init_from_an_ensemble_loads_one_member(tmp_path, tiny_model_dir):
    from boneage.models import combine_models, export_model

    members = [load_model(tiny_model_dir), load_model(tiny_model_dir)]
    with torch.no_grad():
        for p in members[1].model.parameters():
            p.add_(1.0)  # the second member differs from the first
    ensemble, config = combine_models(members)
    source = export_model(tmp_path / "ensemble", ensemble, config)
    target = create_model("global_resnet18", width=0.25, head="ordinal")
    report = load_matching_weights(target, str(source), member=1)
    assert report.loaded and not report.missing
    expected = members[1].model.state_dict()
    assert all(torch.equal(target.state_dict()[k], expected[k].to(target.state_dict()[k].dtype)) for k in report.loaded)
    with pytest.raises(InvalidInputError, match="members 0-1, not 2"):
        load_matching_weights(target, str(source), member=2)


def test_an_output_head_loaded_by_init_is_not_reset_to_the_label_prior(tmp_path, tiny_model_dir):
    """--init with a matching head keeps that head (a frozen one exactly); without a loaded head the model starts at
    the training labels' prior."""
    image_dir, labels = write_phantom_dataset(tmp_path / "ph", 24, size=64, seed=5)
    common = dict(images=str(image_dir), labels=str(labels), model="global_resnet18", head="ordinal", width=0.25,
                  model_kwargs={"max_pool": True}, epochs=1, batch_size=8, progress=False, val_fraction=0.25,
                  preprocess=PreprocessConfig(image_size=(64, 64)), max_steps=1, tta="none")
    logs = []
    train(TrainConfig(out_dir=str(tmp_path / "kept"), init=str(tiny_model_dir), freeze=["head"], **common), log=logs.append)
    assert any("it is not re-initialised from the training labels" in line for line in logs)
    kept = load_file(str(tmp_path / "kept" / "model" / "model.safetensors"))["head.fc.bias"].float()
    source = load_model(tiny_model_dir).model.head.fc.bias.float()
    torch.testing.assert_close(kept, source, atol=2e-3, rtol=2e-3)  # exported as float16
    train(TrainConfig(out_dir=str(tmp_path / "prior"), freeze=["head"], **common))
    prior = load_file(str(tmp_path / "prior" / "model" / "model.safetensors"))["head.fc.bias"].float()
    assert not torch.allclose(prior, source, atol=0.05)  # reset to the labels' log-odds
