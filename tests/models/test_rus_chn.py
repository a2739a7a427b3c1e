"""The RUS-CHN pipeline's parts on tiny synthetic inputs: the SAC layer's switch, the bones' self-attention
(shapes, permutation equivariance), the box geometry on a synthetic hand, the weak-training prior, the
G&P-equivalent map, and the model's outputs, losses and teacher forcing."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from boneage.data import ROI_KEYPOINTS
from boneage.data.rus_chn import BONES, bone_age_years, score_table
from boneage.errors import InvalidInputError
from boneage.models import create_model
from boneage.models.rus_chn import (
    BoneSelfAttention,
    SwitchableAtrousConv,
    bone_boxes,
    create_detector,
    hand_width,
    isotonic_fit,
    list_detectors,
)
from boneage.models.rus_chn.detector import soft_argmax


def synthetic_hand(scale: float = 100.0, origin=(120.0, 140.0)) -> torch.Tensor:
    """17 keypoints of an upright left hand seen PA (thumb on the image's right, fingers up), in pixels."""
    ox, oy = origin
    layout = {"wrist": (-0.3, 1.4), "thumb1": (0.45, 1.0), "thumb2": (0.8, 0.55), "thumb3": (1.0, 0.2), "thumb4": (1.1, -0.1)}
    for name, x in (("forefinger", 0.45), ("middle_finger", 0.0), ("ring_finger", -0.4), ("pinky_finger", -0.75)):
        for k, y in ((1, 0.0), (2, -0.65), (3, -1.05)):
            layout[f"{name}{k}"] = (x, y)
    return torch.tensor([[ox + scale * layout[n][0], oy + scale * layout[n][1]] for n in ROI_KEYPOINTS], dtype=torch.float32)


def _centres(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def test_sac_switch_selects_the_plain_or_the_atrous_convolution():
    torch.manual_seed(0)
    layer = SwitchableAtrousConv(3, 4, dilation=3)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        layer.weight_delta.normal_()
        torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, padding=1))  # starts as the plain conv: S = 1
        layer.switch.bias.fill_(0.0)  # S = 0: only the atrous convolution with w + dw
        torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight + layer.weight_delta, padding=3, dilation=3))
        layer.switch.bias.fill_(0.25)
        mixed = 0.25 * F.conv2d(x, layer.weight, padding=1) + 0.75 * F.conv2d(x, layer.weight + layer.weight_delta,
                                                                              padding=3, dilation=3)
        torch.testing.assert_close(layer(x), mixed)
    strided = SwitchableAtrousConv(3, 4, stride=2)
    assert strided(x).shape == (2, 4, 6, 6)


def test_bone_self_attention_shapes_and_permutation_equivariance():
    torch.manual_seed(0)
    block = BoneSelfAttention(16).eval()
    x = torch.randn(3, 13, 16)
    out, attention = block(x)
    assert out.shape == (3, 13, 16) and attention.shape == (3, 13, 13)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 13))
    perm = torch.randperm(13)
    out_p, attention_p = block(x[:, perm])
    torch.testing.assert_close(out_p, out[:, perm])
    torch.testing.assert_close(attention_p, attention[:, perm][:, :, perm])


def test_boxes_on_a_synthetic_hand_sit_on_their_own_side_of_each_joint():
    points = synthetic_hand()
    boxes = bone_boxes(points)
    assert boxes.shape == (13, 4) and bool((boxes[:, 2:] > boxes[:, :2]).all())
    centre = dict(zip(BONES, _centres(boxes)))
    k = {name: points[i] for i, name in enumerate(ROI_KEYPOINTS)}
    # image y grows downwards: distal (towards the finger tips) is smaller y
    assert centre["PIPThird"][1] < k["middle_finger1"][1] < centre["MCPThird"][1]
    assert centre["PIPFifth"][1] < k["pinky_finger1"][1] < centre["MCPFifth"][1]
    assert centre["MIPThird"][1] < k["middle_finger2"][1] and centre["DIPThird"][1] < k["middle_finger3"][1]
    assert centre["MCPFirst"][1] < k["thumb1"][1] and centre["DIPFirst"][1] < k["thumb3"][1]
    assert centre["Radius"][0] > centre["Ulna"][0]  # the radius on the thumb's side
    assert centre["Radius"][1] > k["middle_finger1"][1] + hand_width(points)  # well below the MCP row
    # each box contains its joint's epiphysis side but is centred a quarter of its side away from the joint
    side = boxes[BONES.index("PIPThird"), 2] - boxes[BONES.index("PIPThird"), 0]
    assert math.isclose(float(k["middle_finger1"][1] - centre["PIPThird"][1]), 0.25 * float(side), rel_tol=1e-4)


def test_box_geometry_follows_the_hand_when_it_moves_turns_and_grows():
    points = synthetic_hand()
    boxes = bone_boxes(points)
    angle = math.radians(30)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = (points - 100) @ rotation.T * 1.5 + torch.tensor([300.0, 50.0])
    moved_boxes = bone_boxes(moved)
    expected = (_centres(boxes) - 100) @ rotation.T * 1.5 + torch.tensor([300.0, 50.0])
    torch.testing.assert_close(_centres(moved_boxes), expected, atol=1e-3, rtol=1e-4)
    sizes, moved_sizes = boxes[:, 2:] - boxes[:, :2], moved_boxes[:, 2:] - moved_boxes[:, :2]
    joints = [BONES.index(b) for b in BONES if b not in ("Radius", "Ulna")]  # squares: turning keeps their size
    torch.testing.assert_close(moved_sizes[joints], 1.5 * sizes[joints], rtol=1e-4, atol=1e-3)
    batch = bone_boxes(torch.stack([points, moved]))
    torch.testing.assert_close(batch[1], moved_boxes)


def test_soft_argmax_finds_a_peak_and_the_detectors_are_registered():
    logits = torch.full((1, 2, 8, 8), -30.0)
    logits[0, 0, 2, 5] = 30.0
    logits[0, 1, 6, 1] = 30.0
    cells, prob = soft_argmax(logits)
    torch.testing.assert_close(cells[0], torch.tensor([[5.5, 2.5], [1.5, 6.5]]))
    assert set(list_detectors()) >= {"heatmap", "regression"}
    with pytest.raises(InvalidInputError, match="Available detectors: heatmap, regression"):
        create_detector("yolo")


@pytest.mark.parametrize("options", [{}, {"sac": True}, {"recursive": 2}, {"cascade": 2}])
def test_detector_options_give_keypoints_and_learn(options):
    torch.manual_seed(0)
    detector = create_detector("heatmap", work_size=64, **options)
    images = torch.randn(2, 1, 96, 96)
    target = synthetic_hand(scale=20.0, origin=(48.0, 40.0)).expand(2, -1, -1)
    valid = torch.tensor([True, False])
    out = detector(images)
    assert out["points"].shape == (2, 17, 2) and out["confidence"].shape == (2, 17)
    assert len(out["stages"]) == 1 + options.get("cascade", 0)
    loss = detector.loss(out, target, valid, (96, 96))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in detector.heatmap.parameters())
    only_unannotated = detector.loss(detector(images), target, torch.tensor([False, False]), (96, 96))
    assert float(only_unannotated.detach()) == 0.0


def test_isotonic_fit_pools_adjacent_violators():
    np.testing.assert_allclose(isotonic_fit(np.arange(4), np.array([1.0, 3.0, 2.0, 4.0])), [1.0, 2.5, 2.5, 4.0])
    np.testing.assert_allclose(isotonic_fit(np.array([3, 0, 2, 1]), np.array([9.0, 0.0, 5.0, 7.0])), [0.0, 6.0, 6.0, 9.0])


def _model(**kwargs):
    torch.manual_seed(0)
    return create_model("rus_chn", detector_options={"work_size": 64}, **kwargs)


def test_output_map_is_the_identity_until_fitted_then_monotone_per_sex():
    model = _model().eval()
    raw = torch.tensor([12.0, 100.0, 200.0])
    torch.testing.assert_close(model.output_map(raw, torch.tensor([0.0, 1.0, 1.0])), raw)
    rng = np.random.default_rng(0)
    x = rng.uniform(30, 220, 400)
    male = (np.arange(400) % 2).astype(float)
    y = np.where(male == 1, 0.8 * x + 10, x - 5) + rng.normal(0, 2, 400)
    model.fit_output_map(x, y, male)
    grid = torch.linspace(0, 240, 50)
    for sex, slope, offset in ((1.0, 0.8, 10.0), (0.0, 1.0, -5.0)):
        mapped = model.output_map(grid, torch.full((50,), sex)).numpy()
        assert np.all(np.diff(mapped) >= 0)
        inside = (grid.numpy() > 50) & (grid.numpy() < 200)
        assert np.abs(mapped[inside] - (slope * grid.numpy()[inside] + offset)).max() < 4.0


def test_prior_centres_rise_with_age_for_every_bone():
    model = _model()
    months = torch.arange(0, 229, 12.0)
    for sex in (0.0, 1.0):
        prior = model._prior(months, torch.full_like(months, sex))
        modes = prior.argmax(-1).numpy()  # (ages, 13)
        assert np.all(np.diff(modes, axis=0) >= 0)
        assert modes[0].sum() == 0 and np.all(modes[-1] == model.valid.sum(-1).numpy() - 1)


def test_model_scores_stages_by_the_tables_of_the_sex():
    model = _model().eval()
    male = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        out = model(torch.randn(2, 1, 96, 96), male)
    bones = out.bones
    assert bones["boxes"].shape == (2, 13, 4) and bones["stage"].shape == (2, 13)
    for i, sex in enumerate("FM"):
        scores, valid = score_table(sex)
        stages = bones["stage"][i].numpy()
        assert valid[np.arange(13), stages].all()
        np.testing.assert_allclose(bones["score"][i].numpy(), scores[np.arange(13), stages])
        assert float(bones["total_score"][i]) == pytest.approx(scores[np.arange(13), stages].sum())
        assert float(bones["rus_chn_years"][i]) == pytest.approx(bone_age_years(float(bones["total_score"][i]), sex), abs=1e-3)
        expected_years = bone_age_years(float(bones["expected_total_score"][i]), sex)
        assert float(bones["raw_months"][i]) == pytest.approx(12 * expected_years, abs=1e-2)
    torch.testing.assert_close(out.bone_age_months, bones["raw_months"])  # the map is still the identity


def test_training_forces_annotated_crops_and_a_frozen_detector_gets_no_gradient():
    model = _model().train()
    points = synthetic_hand(scale=20.0, origin=(48.0, 40.0))
    keypoints = [points, torch.zeros(0, 2)]
    male = torch.tensor([1.0, 0.0])
    out = model(torch.randn(2, 1, 96, 96), male, keypoints)
    torch.testing.assert_close(out.rois[0], bone_boxes(points))  # teacher forcing on the annotated image
    assert not torch.allclose(out.rois[1], bone_boxes(points))
    parts = model.compute_loss(out, {"bone_age_months": torch.tensor([120.0, 60.0]), "male": male})
    assert set(parts) == {"age", "prior", "detector", "loss"}
    parts["loss"].backward()
    assert model.stages.heads.grad is not None and model.detector.heatmap.weight.grad is not None

    model.zero_grad()
    for p in model.detector.parameters():
        p.requires_grad_(False)
    model.detector.eval()
    out = model(torch.randn(2, 1, 96, 96), male, keypoints)
    torch.testing.assert_close(out.rois, bone_boxes(out.extras["detected"]["points"]))  # detected boxes for all
    labels = torch.full((2, 13), -1, dtype=torch.long)
    labels[0, :3] = torch.tensor([5, 4, 3])
    parts = model.compute_loss(out, {"bone_age_months": torch.tensor([120.0, 60.0]), "male": male, "stage_labels": labels})
    assert set(parts) == {"age", "prior", "stage", "loss"}
    parts["loss"].backward()
    assert all(p.grad is None for p in model.detector.parameters())


def test_the_pipeline_refuses_another_head():
    with pytest.raises(InvalidInputError, match="stages"):
        create_model("rus_chn", head="ordinal")


def test_recursive_detector_gives_the_same_keypoints_in_training_and_evaluation_statistics():
    """A recursive pyramid whose two backbone passes shared BatchNorm layers learnt in training and failed in
    evaluation (the running statistics mixed both passes): with its BatchNorm statistics settled on a batch,
    evaluation must reproduce training's output on that batch."""
    torch.manual_seed(0)
    detector = create_detector("heatmap", work_size=64, recursive=2)
    for module in detector.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average: after one pass, exactly that batch's statistics
    images = torch.randn(8, 1, 64, 64)
    detector.train()
    with torch.no_grad():
        trained = detector(images)["points"]
        detector.eval()
        evaluated = detector(images)["points"]
    torch.testing.assert_close(evaluated, trained, atol=0.05, rtol=0.01)
