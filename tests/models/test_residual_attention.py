"""Residual attention network: the attention module's shapes and arithmetic, the variants' outputs,
gradients and sex input."""

from __future__ import annotations

import pytest
import torch

from boneage.models import create_model
from boneage.models.residual_attention import AttentionModule, ResidualAttentionNet

VARIANTS = ["residual_attention", "residual_attention_no_att3_23", "residual_attention_nosex"]


def _module(channels=8, down_steps=2) -> AttentionModule:
    torch.manual_seed(0)
    return AttentionModule(channels, down_steps).eval()


def _model(name="residual_attention", **kw) -> ResidualAttentionNet:
    torch.manual_seed(0)
    model = create_model(name, width=0.125, **kw)
    model.init_from_labels(torch.linspace(0, 228, 50))
    return model


@pytest.mark.parametrize("size,down_steps", [(25, 3), (13, 2), (7, 1), (13, 3), (8, 2), (1, 1)])
def test_attention_module_keeps_the_shape_for_odd_sizes(size, down_steps):
    module = _module(8, down_steps)
    x = torch.randn(2, 8, size, size + 2)
    assert module(x).shape == x.shape
    assert module.last_mask.shape == x.shape and not module.last_mask.requires_grad
    assert module.last_mask.min() > 0 and module.last_mask.max() < 1  # a sigmoid


def test_attention_module_is_its_trunk_when_the_mask_is_zero():
    module = _module(8, 3)
    module.use_mask = False
    x = torch.randn(2, 8, 25, 25)
    with torch.no_grad():
        h = module.pre(x)
        assert torch.equal(module.mask(h), torch.zeros_like(h))
        assert torch.equal(module.attend(h), module.trunk(h))
        assert torch.equal(module(x), module.post(module.trunk(module.pre(x))))
    assert torch.equal(module.last_mask, torch.zeros_like(h))


def test_attention_residual_learning_is_trunk_times_one_plus_mask():
    module = _module(8, 2)
    x = torch.randn(3, 8, 13, 13)
    with torch.no_grad():
        h = module.pre(x)
        trunk, mask = module.trunk(h), module.mask(h)
        expected = module.post(trunk * (1 + mask))
        out = module(x)
    assert mask.std() > 0  # a real, non-constant mask
    assert torch.allclose(out, expected, atol=0, rtol=0)
    assert torch.equal(module.last_mask, mask)


def test_module_counts_and_names():
    six, four = _model("residual_attention"), _model("residual_attention_no_att3_23")
    assert len(six.attention_modules()) == 6 and len(four.attention_modules()) == 4
    assert six.attention_names() == ["Att1_1", "Att2_1", "Att2_2", "Att3_1", "Att3_2", "Att3_3"]
    assert four.attention_names() == ["Att1_1", "Att2_1", "Att2_2", "Att3_1"]
    assert [m.down_steps for m in six.attention_modules()] == [3, 2, 2, 1, 1, 1]


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward_and_attention_maps(name):
    model = _model(name).train()
    images, male = torch.randn(2, 1, 100, 100), torch.tensor([0.0, 1.0])
    outputs = model(images, male)
    assert outputs.bone_age_months.shape == (2,) and torch.isfinite(outputs.bone_age_months).all()
    # 100 px: stem 50, stages 25, 13 and 7 px
    sides = {"1": 25, "2": 13, "3": 7}
    maps = outputs.attention_maps
    assert len(maps) == len(model.attention_names()) == (4 if name.endswith("att3_23") else 6)
    for attention_name, attention_map in zip(model.attention_names(), maps):
        side = sides[attention_name[3]]
        assert attention_map.shape == (2, side, side) and not attention_map.requires_grad
        assert ((attention_map > 0) & (attention_map < 1)).all()
    losses = model.compute_loss(outputs, {"bone_age_months": torch.tensor([50.0, 150.0]), "male": male})
    assert set(losses) == {"loss", "regression"}  # the paper's L1 loss
    losses["loss"].backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"


def test_ordinal_head_and_max_pool_are_options():
    model = _model(head="ordinal", max_pool=True).eval()
    outputs = model(torch.randn(1, 1, 100, 100), torch.tensor([1.0]))
    assert "logits" in outputs.extras["head"] and [m.shape[-1] for m in outputs.attention_maps] == [13, 7, 7, 4, 4, 4]


@pytest.mark.parametrize("name,changes", [("residual_attention", True), ("residual_attention_nosex", False)])
def test_sex_input(name, changes):
    model = _model(name).eval()
    images = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        female, male = (model(images, torch.tensor([sex])).bone_age_months for sex in (0.0, 1.0))
    assert bool(female != male) is changes
    assert model.uses_sex is changes and (model.sex_fc is not None) is changes


def test_bad_stages_are_clear_errors():
    from boneage.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="stages"):
        create_model("residual_attention", stages=(1, 2))
