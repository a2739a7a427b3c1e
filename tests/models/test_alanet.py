"""ALA-Net: keypoint boxes, ROI selection, the variants' outputs, the combined loss and its gradients."""

from __future__ import annotations

import pytest
import torch

from boneage.errors import InvalidInputError
from boneage.models import create_model
from boneage.models.alanet import ALANet, keypoint_boxes

SIZE = 64


def _model(name="alanet18", **kw) -> ALANet:
    torch.manual_seed(0)
    model = create_model(name, width=0.25, max_pool=False, **kw)
    model.init_from_labels(torch.linspace(0, 228, 50))
    return model


def _keypoints(batch: int, annotated=(0,)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(17, 2, generator=g) * (SIZE - 8) + 4 if i in annotated else torch.zeros(0, 2) for i in range(batch)]


def test_keypoint_boxes_are_fixed_squares_clipped_to_the_image():
    points = torch.tensor([[10.0, 20.0], [1.0, 1.0], [70.0, 5.0], [-2.0, 3.0]])
    boxes = keypoint_boxes(points, 8.0, (64, 64))
    # the two points outside the 64 x 64 image are dropped, the corner box is clipped
    assert boxes.tolist() == [[6.0, 16.0, 14.0, 24.0], [0.0, 0.0, 5.0, 5.0]]


def test_box_size_scales_with_the_input():
    model = _model()
    assert model.box_size((512, 400)) == pytest.approx(64.0)  # the paper's 64 px at a 512 px long side
    assert model.box_size((100, 100)) == pytest.approx(12.5)


@pytest.mark.parametrize("name,local,patch", [("alanet18", True, True), ("alanet18_local", True, False),
                                              ("alanet18_patch", False, True)])
def test_variants_outputs_and_combined_loss(name, local, patch):
    model = _model(name)
    assert (model.local_features, model.patch_training) == (local, patch)
    x, male = torch.randn(3, 1, SIZE, SIZE), torch.tensor([1.0, 0.0, 1.0])
    months = torch.tensor([20.0, 100.0, 200.0])
    out = model(x, male, keypoints=_keypoints(3))
    assert out.bone_age_months.shape == (3,)
    assert out.rois.shape == (3, 17, 4) and out.roi_scores.shape == (3, 17)
    rois = out.rois
    assert (rois[..., 0] >= 0).all() and (rois[..., 2] <= SIZE).all() and (rois[..., 2] >= rois[..., 0]).all()
    assert ("patch" in out.extras) == patch and (out.extras["patch"]["logits"].shape[0] == 3 * 17 if patch else True)
    parts = model.compute_loss(out, {"bone_age_months": months})
    expected = parts["ordinal"] + parts["rpn"] + (parts["patch"] if patch else 0.0)
    assert float(parts["loss"].detach()) == pytest.approx(float(expected), rel=1e-6)
    # the ordinal part is exactly the head's BCE on the final logits
    assert float(parts["ordinal"]) == pytest.approx(float(model.head.loss(out.extras["head"], months).detach()), rel=1e-6)
    parts["loss"].backward()
    for module in [model.backbone.conv1, model.rpn.head.cls_logits, model.rpn.head.bbox_pred, model.roi_head.fc[0]]:
        grad = next(module.parameters()).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    if patch:
        assert model.patch_head.fc.weight.grad.abs().sum() > 0


def test_patch_loss_is_the_ordinal_loss_over_every_roi():
    model = _model("alanet18")
    out = model(torch.randn(2, 1, SIZE, SIZE), torch.ones(2), keypoints=_keypoints(2))
    months = torch.tensor([30.0, 150.0])
    parts = model.compute_loss(out, {"bone_age_months": months})
    per_roi = model.patch_head.loss(out.extras["patch"], months.repeat_interleave(17)).detach()
    assert float(parts["patch"]) == pytest.approx(float(per_roi))
    # 17 ROIs of the first image carry the first label: changing only the second label changes the loss
    other = model.patch_head.loss(out.extras["patch"], torch.tensor([30.0, 10.0]).repeat_interleave(17)).detach()
    assert float(other) != pytest.approx(float(per_roi))


def test_unannotated_batch_adds_zero_rpn_loss_but_keeps_the_graph():
    model = _model("alanet18_local")
    out = model(torch.randn(2, 1, SIZE, SIZE), torch.ones(2), keypoints=_keypoints(2, annotated=()))
    parts = model.compute_loss(out, {"bone_age_months": torch.tensor([50.0, 60.0])})
    assert float(parts["rpn"]) == 0.0
    parts["loss"].backward()
    assert model.rpn.head.cls_logits.weight.grad is not None  # zero but connected (DDP needs it)


def test_eval_mode_gives_rois_without_patch_outputs_and_is_deterministic():
    model = _model("alanet18").eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        a, b = model(x, torch.ones(2)), model(x, torch.ones(2))
    assert "patch" not in a.extras and not a.losses
    assert torch.equal(a.rois, b.rois) and torch.equal(a.bone_age_months, b.bone_age_months)


def test_local_features_change_the_prediction():
    model = _model("alanet18_local").eval()
    x = torch.randn(1, 1, SIZE, SIZE)
    with torch.no_grad():
        before = model(x, torch.ones(1)).bone_age_months
        model.roi_head.fc[0].bias.add_(5.0)  # only the local branch changes
        after = model(x, torch.ones(1)).bone_age_months
    assert not torch.allclose(before, after)


def test_global_variant_has_no_rpn_and_matches_the_global_baseline_shape():
    model = _model("alanet18_global")
    assert not model.uses_rpn and not hasattr(model, "rpn") and model.capabilities.evidence == ("gradcam",)
    out = model(torch.randn(2, 1, SIZE, SIZE), torch.ones(2))
    assert out.rois is None and out.bone_age_months.shape == (2,)


def test_detection_only_trains_the_rpn_alone():
    model = _model("alanet18_rpn")
    out = model(torch.randn(2, 1, SIZE, SIZE), torch.ones(2), keypoints=_keypoints(2))
    parts = model.compute_loss(out, {"bone_age_months": torch.tensor([1.0, 2.0])})
    assert set(parts) == {"loss", "rpn"}
    with pytest.raises(ValueError, match="keypoints"):
        model.compute_loss(model(torch.randn(1, 1, SIZE, SIZE), torch.ones(1)), {"bone_age_months": torch.ones(1)})


def test_fewer_proposals_than_rois_are_padded():
    model = _model("alanet18")
    boxes, scores = model._fixed_count([torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.zeros(0, 4)],
                                       [torch.tensor([0.9]), torch.zeros(0)], (64, 64))
    assert boxes.shape == (2, 17, 4) and (boxes[0] == torch.tensor([1.0, 2.0, 3.0, 4.0])).all()
    assert boxes[1].tolist()[0] == [0.0, 0.0, 64.0, 64.0] and float(scores[1].sum()) == 0.0


def test_bad_options_are_clear_errors():
    with pytest.raises(InvalidInputError, match="rpn_level"):
        create_model("alanet18", rpn_level="c5")
    with pytest.raises(InvalidInputError, match="box_fraction"):
        create_model("alanet18", box_fraction=1.5)


def test_c4_level_works_as_published():
    model = _model("alanet18", rpn_level="c4")
    assert model.feature_stride == 16  # no stem max pool: the 4th block is at stride 16
    out = model(torch.randn(1, 1, SIZE, SIZE), torch.ones(1), keypoints=_keypoints(1))
    assert out.rois.shape == (1, 17, 4)
