"""Distillation (boneage train --teacher): the student learns the teacher's soft targets, an ensemble's averaged
over its members; a teacher trained on other inputs is refused in one line."""

import json

import pytest
import torch
from tests.conftest import export_tiny_model

from boneage.data import write_phantom_dataset
from boneage.errors import InvalidInputError
from boneage.inference import Predictor
from boneage.models import ModelOutput, combine_models, export_model, load_model
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train
from boneage.training.distill import check_teacher, distillation_loss


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("distill_phantoms"), 48, size=64, seed=1)


@pytest.fixture(scope="module")
def young_teacher(tmp_path_factory):
    """A teacher that calls every hand a newborn's (its ordinal biases set low: about 1.5 months), whatever the label."""
    folder = export_tiny_model(tmp_path_factory.mktemp("teacher"), "young-teacher", "global_resnet18", width=0.25,
                               head="ordinal")
    loaded = load_model(folder)
    with torch.no_grad():
        loaded.model.head.fc.weight.zero_()
        loaded.model.head.fc.bias.fill_(-5.0)
    return export_model(folder, loaded.model, loaded.config)


def _config(data, out_dir, **overrides):
    image_dir, labels = data
    values = dict(out_dir=str(out_dir), images=str(image_dir), labels=str(labels), model="global_resnet18", head="ordinal",
                  width=0.25, model_kwargs={"max_pool": True}, epochs=3, batch_size=16, lr=1e-2, progress=False, seed=0,
                  preprocess=PreprocessConfig(image_size=(64, 64)), val_fraction=0.25, tta="none", ema_decay=0.0,
                  val_every=10)  # validated once, after the last epoch: the exported model is the last
    values.update(overrides)
    return TrainConfig(**values)


def _mean_prediction(model_dir, data) -> float:
    image_dir, _ = data
    predictor = Predictor(model_dir, check_hand=False)
    paths = sorted(image_dir.glob("*.png"))[:12]
    months, _ = predictor.predict([predictor.prepare(p) for p in paths], ["F"] * len(paths))
    return float(months.mean())


def test_the_student_follows_the_teacher(phantoms, young_teacher, tmp_path):
    assert _mean_prediction(young_teacher, phantoms) < 2
    train(_config(phantoms, tmp_path / "labels"))
    train(_config(phantoms, tmp_path / "student", teacher=str(young_teacher), distill_weight=1.0))
    history = json.loads((tmp_path / "student" / "history.json").read_text())
    assert "distill" in history[0]["train_loss_parts"]
    on_labels = _mean_prediction(tmp_path / "labels" / "model", phantoms)
    distilled = _mean_prediction(tmp_path / "student" / "model", phantoms)
    assert distilled < 20 < 60 < on_labels, (on_labels, distilled)  # the teacher's newborns, not the labels' 6-216 months


def test_distillation_loss_targets():
    logits = torch.zeros(2, 228)
    student = ModelOutput(bone_age_months=torch.tensor([100.0, 120.0]), extras={"head": {"logits": logits}})
    probabilities = torch.full((2, 228), 0.25)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, probabilities)
    torch.testing.assert_close(distillation_loss(student, {"months": torch.zeros(2), "probabilities": probabilities}), expected)
    # a teacher without an ordinal head: the bone ages' L1 distance in units of 40 months
    loss = distillation_loss(student, {"months": torch.tensor([140.0, 120.0]), "probabilities": None})
    torch.testing.assert_close(loss, torch.tensor(20.0 / 40.0))


def test_an_ensemble_teacher_averages_its_members(tiny_model_dir):
    from boneage.training.distill import teacher_targets

    members = [load_model(tiny_model_dir), load_model(tiny_model_dir)]
    with torch.no_grad():
        members[1].model.head.fc.bias.add_(1.0)
    ensemble, _ = combine_models(members)
    x, male = torch.randn(3, 1, 64, 64), torch.tensor([0.0, 1.0, 1.0])
    targets = teacher_targets(ensemble.eval(), x, male)
    with torch.no_grad():
        each = [torch.sigmoid(m.model(x, male).extras["head"]["logits"]) for m in members]
    torch.testing.assert_close(targets["probabilities"], (each[0] + each[1]) / 2)


def test_a_teacher_trained_on_other_inputs_is_refused(young_teacher):
    with pytest.raises(InvalidInputError, match=r"trained on other inputs: image_size \[64, 64\] \(the recipe: \[100, 100\]\)"):
        check_teacher(load_model(young_teacher), PreprocessConfig(image_size=(100, 100)))
