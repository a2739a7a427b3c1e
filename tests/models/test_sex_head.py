"""The sex head (GlobalResNet(sex_head=True), as Deeplasia predicts the sex): a radiograph of unknown sex gets the
two sexes' bone ages weighted by the predicted probability; the loss adds the sex's cross-entropy; an ensemble
averages its members' probabilities; a model without the head refuses an unknown sex; predict marks the sex it
predicted, through the training loop and the command line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import export_tiny_model

from boneage.cli import main
from boneage.data import hand_phantom, write_phantom_dataset
from boneage.errors import InvalidInputError
from boneage.models import combine_models, create_model, load_model
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train

NAN = float("nan")


def test_an_unknown_sex_weights_the_two_sexes_by_the_predicted_probability():
    torch.manual_seed(0)
    model = create_model("global_resnet18", width=0.25, sex_head=True).eval()
    assert model.capabilities.predicts_sex and not create_model("global_resnet18", width=0.25).capabilities.predicts_sex
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        unknown = model(x, torch.tensor([NAN, NAN, 1.0]))
        boy, girl = model(x, torch.ones(3)), model(x, torch.zeros(3))
    p = unknown.sex_probability
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    expected = p * boy.bone_age_months + (1 - p) * girl.bone_age_months
    torch.testing.assert_close(unknown.bone_age_months[:2], expected[:2])
    torch.testing.assert_close(unknown.bone_age_months[2], boy.bone_age_months[2])  # a known sex is used as given
    torch.testing.assert_close(boy.sex_probability, p)  # the sex input does not change the prediction of the sex


def test_the_loss_adds_the_sex_cross_entropy():
    torch.manual_seed(0)
    model = create_model("global_resnet18", width=0.25, head="l1", sex_head=True, sex_weight=0.5)
    male = torch.tensor([1.0, 0.0])
    out = model(torch.randn(2, 1, 64, 64), male)
    parts = model.compute_loss(out, {"bone_age_months": torch.tensor([50.0, 150.0]), "male": male})
    sex = torch.nn.functional.binary_cross_entropy_with_logits(out.extras["sex_logit"], male)
    torch.testing.assert_close(parts["sex"], sex.detach())
    torch.testing.assert_close(parts["loss"], parts["regression"] + 0.5 * sex)
    parts["loss"].backward()
    assert model.sex_classifier.weight.grad is not None


def test_an_ensemble_averages_the_members_and_a_model_without_the_head_refuses_an_unknown_sex(tmp_path):
    members = [load_model(export_tiny_model(tmp_path / f"m{k}", f"m{k}", "global_resnet18", width=0.25, sex_head=True,
                                            max_pool=False)) for k in range(2)]
    with torch.no_grad():
        members[1].model.sex_classifier.bias.add_(2.0)
    ensemble, _ = combine_models(members)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        out = ensemble(x, torch.tensor([NAN, 0.0]))
        each = [m.model(x, torch.tensor([NAN, 0.0])).sex_probability for m in members]
    assert ensemble.capabilities.predicts_sex
    torch.testing.assert_close(out.sex_probability, (each[0] + each[1]) / 2)
    plain = create_model("global_resnet18", width=0.25)
    with pytest.raises(ValueError, match="needs the sex"):
        plain(x, torch.tensor([NAN, 0.0]))


def test_trained_with_the_bone_age_and_predict_marks_the_predicted_sex(tmp_path, capsys):
    image_dir, labels = write_phantom_dataset(tmp_path / "ph", 32, size=64, seed=4)
    train(TrainConfig(out_dir=str(tmp_path / "run"), images=str(image_dir), labels=str(labels), model="global_resnet18",
                      width=0.25, model_kwargs={"sex_head": True}, epochs=1, batch_size=16, progress=False,
                      preprocess=PreprocessConfig(image_size=(64, 64)), val_fraction=0.25, tta="none"))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "sex" in history[0]["train_loss_parts"]
    capsys.readouterr()  # the training log
    png = tmp_path / "hand.png"
    Image.fromarray(hand_phantom(100, "M", 64, np.random.default_rng(0))).save(png)
    model = str(tmp_path / "run" / "model")
    assert main(["predict", str(png), "--model", model, "--json"]) == 0
    item = json.loads(capsys.readouterr().out)[0]
    assert item["sex_source"] == "predicted" and item["sex"] in ("M", "F") and 0.5 <= item["sex_probability"] <= 1
    assert main(["predict", str(png), "--model", model]) == 0
    assert f"{item['sex']} (predicted, {item['sex_probability']:.2f})" in capsys.readouterr().out
    assert main(["evaluate", "--images", str(image_dir), "--labels", str(labels), "--model", model, "--json"]) == 0
    sex = json.loads(capsys.readouterr().out)["sex_prediction"]
    assert sex["n"] == 32 and 0 <= sex["accuracy"] <= 1 and sex["majority_rate"] >= 0.5
    from boneage.data import load_rsna
    from boneage.inference import Predictor

    samples = load_rsna(image_dir, labels)
    predictor = Predictor(model, check_hand=False)
    prepared = [predictor.prepare(s.path) for s in samples]
    unknown = predictor.run(prepared, [None] * len(samples))
    expected = np.abs(unknown.months - np.array([s.bone_age_months for s in samples])).mean()
    assert sex["mae_months_sex_unknown"] == pytest.approx(expected, abs=1e-3)  # the bone ages without the sex given
    told = predictor.run(prepared, [s.sex for s in samples])
    accuracy = np.mean((told.sex_probability >= 0.5) == np.array([s.sex == "M" for s in samples]))
    assert sex["accuracy"] == pytest.approx(accuracy, abs=1e-3)


def test_the_predictor_refuses_an_unknown_sex_for_a_model_without_the_head(tiny_model_dir, tmp_path):
    from PIL import Image

    from boneage.inference import Predictor

    png = tmp_path / "hand.png"
    Image.fromarray(hand_phantom(100, "M", 64, np.random.default_rng(0))).save(png)
    predictor = Predictor(tiny_model_dir, check_hand=False)
    assert not predictor.predicts_sex
    with pytest.raises(InvalidInputError, match="needs the sex"):
        predictor.run([predictor.prepare(png)], [None])
