"""Mixup (boneage train --mixup ALPHA): images mixed with a partner of the same sex, the loss mixed alike."""

import json
import math

import pytest
import torch

from boneage.data import write_phantom_dataset
from boneage.errors import InvalidInputError
from boneage.preprocess import PreprocessConfig
from boneage.training import TrainConfig, train
from boneage.training.steps import mix_batch, mixup_partners


def test_partners_are_a_permutation_within_each_sex():
    male = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    for seed in range(5):
        partner = mixup_partners(male, torch.Generator().manual_seed(seed))
        assert sorted(partner.tolist()) == list(range(len(male)))
        assert torch.equal(male[partner], male)
    lone = mixup_partners(torch.tensor([1.0, 0.0, 0.0]), torch.Generator().manual_seed(0))
    assert lone[0] == 0  # the only boy is his own partner


def test_mixed_images_are_the_weighted_sum_of_the_pair():
    n = 8
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    male = torch.tensor([0.0, 1.0] * 4)
    mixed, partner, lam = mix_batch(images, male, 0.4, torch.Generator().manual_seed(3))
    assert 0.5 <= lam <= 1.0
    expected = lam * torch.arange(n, dtype=torch.float32) + (1 - lam) * partner.float()
    assert torch.allclose(mixed[:, 0, 0, 0], expected)
    again, partner2, lam2 = mix_batch(images, male, 0.4, torch.Generator().manual_seed(3))
    assert lam2 == lam and torch.equal(partner2, partner) and torch.equal(again, mixed)  # seeded by the run's generator


def test_lambda_follows_the_beta_distribution():
    generator = torch.Generator().manual_seed(0)
    images, male = torch.zeros(4, 1, 2, 2), torch.zeros(4)
    lams = torch.tensor([mix_batch(images, male, 1.0, generator)[2] for _ in range(400)])
    # Beta(1, 1) folded to [0.5, 1] is uniform there: mean 0.75, SD 0.144
    assert abs(float(lams.mean()) - 0.75) < 0.03 and abs(float(lams.std()) - 0.144) < 0.03
    sharp = torch.tensor([mix_batch(images, male, 0.05, generator)[2] for _ in range(200)])
    assert float(sharp.mean()) > 0.9  # a small alpha barely mixes


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("mixup_phantoms"), 48, size=64, seed=2)


def _config(data, out_dir, **overrides):
    image_dir, labels = data
    values = dict(out_dir=str(out_dir), images=str(image_dir), labels=str(labels), model="global_resnet18", head="ordinal",
                  width=0.25, model_kwargs={"max_pool": True}, epochs=2, batch_size=16, lr=1e-2, progress=False, seed=0,
                  preprocess=PreprocessConfig(image_size=(64, 64)), val_fraction=0.25, tta="none", ema_decay=0.0)
    values.update(overrides)
    return TrainConfig(**values)


def test_training_with_mixup_records_it_and_mixes_the_loss(phantoms, tmp_path, monkeypatch):
    import boneage.training.trainer as trainer

    seen = []

    def recording(images, male, alpha, generator):
        out = mix_batch(images, male, alpha, generator)
        seen.append(out[2])
        return out

    monkeypatch.setattr(trainer, "mix_batch", recording)
    summary = train(_config(phantoms, tmp_path / "mixup", mixup=0.4))
    assert seen and all(0.5 <= lam <= 1 for lam in seen) and len(set(seen)) > 1
    history = json.loads((tmp_path / "mixup" / "history.json").read_text())
    assert all(math.isfinite(epoch["train_loss"]) for epoch in history)
    recipe = json.loads((tmp_path / "mixup" / "model" / "config.json").read_text())["training"]["recipe"]
    assert recipe["mixup"] == 0.4 and summary is not None


def test_the_step_loss_is_the_mixed_loss_of_both_label_sets(phantoms, tmp_path, monkeypatch):
    """One step with lam 0.25 and partners in reverse order: the step's loss is 0.25 x the loss on the batch's
    labels + 0.75 x the loss on the partners' labels (the reversed batch)."""
    import boneage.training.trainer as trainer
    from boneage.models.global_resnet import GlobalResNet

    calls = []
    original = GlobalResNet.compute_loss

    def recording(self, outputs, batch):
        parts = original(self, outputs, batch)
        calls.append((batch["bone_age_months"].clone(), float(parts["loss"].detach())))
        return parts

    def reverse(images, male, alpha, generator):
        partner = torch.arange(images.shape[0] - 1, -1, -1)
        return 0.25 * images + 0.75 * images[partner], partner, 0.25

    monkeypatch.setattr(GlobalResNet, "compute_loss", recording)
    monkeypatch.setattr(trainer, "mix_batch", reverse)
    train(_config(phantoms, tmp_path / "step", mixup=1.0, epochs=1, max_steps=1, val_every=10))
    (labels, own), (partner_labels, theirs) = calls[:2]
    assert torch.equal(partner_labels, labels.flip(0)) and own != theirs
    history = json.loads((tmp_path / "step" / "history.json").read_text())
    assert history[0]["train_loss"] == pytest.approx(0.25 * own + 0.75 * theirs, rel=1e-4)


def test_bad_mixup_is_refused(phantoms, tmp_path):
    with pytest.raises(InvalidInputError, match="--mixup"):
        train(_config(phantoms, tmp_path / "bad", mixup=-1.0))
