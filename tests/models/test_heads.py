import torch

from boneage.models import OrdinalHead, RegressionHead, ordinal_decode, ordinal_encode


def test_ordinal_round_trip_whole_and_fractional_months():
    months = torch.tensor([0.0, 1.0, 17.0, 120.0, 127.5, 200.25, 228.0])
    targets = ordinal_encode(months, 0.0, 228)
    assert targets.shape == (7, 228)
    torch.testing.assert_close(ordinal_decode(targets, 0.0), months)
    # whole months are hard 0/1 targets, monotone non-increasing over the ranks
    assert set(targets[3].unique().tolist()) == {0.0, 1.0}
    assert bool((targets[:, 1:] <= targets[:, :-1]).all())
    assert targets[3, :120].eq(1).all() and targets[3, 120:].eq(0).all()


def test_ordinal_head_loss_is_low_on_confident_correct_logits():
    head = OrdinalHead(4, (0.0, 10.0))
    months = torch.tensor([3.0, 7.0])
    targets = ordinal_encode(months, 0.0, 10)
    good = {"logits": (targets * 2 - 1) * 20}
    bad = {"logits": -(targets * 2 - 1) * 20}
    assert head.loss(good, months) < 1e-6 < 10 < head.loss(bad, months)
    assert torch.allclose(ordinal_decode(torch.sigmoid(good["logits"]), 0.0), months, atol=1e-4)


def test_ordinal_init_from_labels_starts_at_prior_mean():
    head = OrdinalHead(8, (0.0, 228.0))
    months = torch.tensor([60.0, 120.0, 180.0] * 10)
    head.init_from_labels(months)
    with torch.no_grad():
        head.fc.weight.zero_()
    out = head(torch.randn(5, 8))
    torch.testing.assert_close(out["bone_age_months"], torch.full((5,), 120.0), atol=1.0, rtol=0)


def test_regression_head_scaling_and_losses():
    head = RegressionHead(3, loss="l1")
    head.init_from_labels(torch.tensor([100.0, 140.0]))
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.zero_()
    out = head(torch.randn(2, 3))
    torch.testing.assert_close(out["bone_age_months"], torch.full((2,), 120.0))
    std = float(torch.tensor([100.0, 140.0]).std())
    torch.testing.assert_close(head.loss(out, torch.tensor([100.0, 140.0])), torch.tensor(20.0 / std))
