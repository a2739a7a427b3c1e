"""Localize-then-regress (boneage.models.localize): Grad-CAM where the answer is known, the threshold crop on
heat maps with a known box, crops that keep full-resolution detail, the two training phases, and the crop on
tall phantoms landing on the hand."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from boneage.data.phantom import tall_phantom
from boneage.errors import InvalidInputError
from boneage.models import create_model
from boneage.models.detection import box_iou
from boneage.models.localize import (
    crop_regions,
    grad_cam,
    normalize_maps,
    square_boxes,
    threshold_boxes,
    upsample_maps,
)


class PatchNet(nn.Module):
    """A toy classifier: is there a bright patch in the image (class 1) or not (class 0)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2),
                                      nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def classify(self, maps):
        return self.head(maps.mean(dim=(2, 3)))

    def forward(self, x):
        return self.classify(self.features(x))


def _patch_images(n, rng, size=32):
    images = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    centres = rng.integers(4, size - 4, (n, 2))
    for k in np.flatnonzero(labels):
        y, x = centres[k]
        images[k, 0, y - 2 : y + 3, x - 2 : x + 3] += 3.0
    return torch.from_numpy(images), torch.from_numpy(labels), centres


@pytest.fixture(scope="module")
def patch_net():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = PatchNet()
    optimiser = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(80):
        x, y, _ = _patch_images(32, rng)
        loss = nn.functional.cross_entropy(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


def test_grad_cam_peaks_on_the_patch_that_decides_the_class(patch_net):
    x, y, centres = _patch_images(64, np.random.default_rng(1))
    with torch.no_grad():
        assert (patch_net(x).argmax(1) == y).float().mean() > 0.95  # the toy network answers right
    cam, predicted = grad_cam(patch_net.features(x), patch_net.classify)
    heat = normalize_maps(upsample_maps(cam, (32, 32)))
    hits = 0
    for k in np.flatnonzero(y.numpy() == 1):
        peak_y, peak_x = np.unravel_index(int(heat[k].argmax()), (32, 32))
        hits += abs(peak_y - centres[k][0]) <= 3 and abs(peak_x - centres[k][1]) <= 3
        assert predicted[k] == 1
    assert hits / int(y.sum()) > 0.9


def test_grad_cam_is_monai_grad_cam(patch_net):
    """Image by image: MONAI scores ``logits[:, class_idx]`` for the whole batch, which mixes the classes of a batch
    whose images are predicted differently; grad_cam explains each image's own class in one batch."""
    from monai.visualize import GradCAM

    x, y, _ = _patch_images(6, np.random.default_rng(2))
    assert 0 < int(y.sum()) < 6  # both classes in the batch
    cam_of = GradCAM(patch_net, target_layers="features", postprocessing=lambda m: m)
    monai_maps = torch.cat([cam_of(x[k : k + 1])[:, 0] for k in range(len(x))])
    cam, _ = grad_cam(patch_net.features(x), patch_net.classify)
    torch.testing.assert_close(normalize_maps(upsample_maps(cam, (32, 32))), normalize_maps(monai_maps), atol=1e-5, rtol=1e-4)


def test_grad_cam_runs_in_inference_mode_on_frozen_weights(patch_net):
    x, _, _ = _patch_images(2, np.random.default_rng(3))
    patch_net.requires_grad_(False)
    try:
        with torch.inference_mode():
            cam, _ = grad_cam(patch_net.features(x), patch_net.classify)
    finally:
        patch_net.requires_grad_(True)
    assert cam.shape == (2, 16, 16) and torch.isfinite(cam).all() and (cam >= 0).all()


def test_threshold_box_of_a_known_box():
    heat = torch.full((1, 100, 100), 0.2)
    heat[0, 20:40, 30:70] = 1.0
    torch.testing.assert_close(threshold_boxes(heat, 0.5), torch.tensor([[0.30, 0.20, 0.70, 0.40]]))
    torch.testing.assert_close(threshold_boxes(heat, 0.0), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    # above every value: the box of the peak alone
    peak = torch.zeros(1, 10, 10)
    peak[0, 3, 7] = 0.4
    torch.testing.assert_close(threshold_boxes(peak, 0.9), torch.tensor([[0.7, 0.3, 0.8, 0.4]]))


def test_higher_gamma_gives_a_smaller_region():
    yy, xx = torch.meshgrid(torch.arange(100.0), torch.arange(100.0), indexing="ij")
    heat = torch.exp(-((yy - 60) ** 2 + (xx - 35) ** 2) / (2 * 15.0**2))[None]
    areas = []
    for gamma in (0.1, 0.3, 0.5, 0.7, 0.9):
        box = threshold_boxes(heat, gamma)[0]
        areas.append(float((box[2] - box[0]) * (box[3] - box[1])))
        assert box[0] < 0.355 < box[2] and box[1] < 0.605 < box[3]  # around the peak
    assert all(a > b for a, b in zip(areas, areas[1:]))


def test_square_boxes_keep_the_centre_and_reach_the_aspect_and_minimum():
    boxes = torch.tensor([[0.4, 0.1, 0.6, 0.5], [0.5, 0.5, 0.52, 0.52]])
    grown = square_boxes(boxes, (300, 100), aspect=1.0, min_side=0.5)
    px = grown * torch.tensor([100, 300, 100, 300])
    width, height = px[:, 2] - px[:, 0], px[:, 3] - px[:, 1]
    torch.testing.assert_close(width, height)
    torch.testing.assert_close(height, torch.tensor([120.0, 50.0]))  # 0.4 x 300 px; the minimum, half of 100 px
    torch.testing.assert_close((grown[:, 0] + grown[:, 2]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2)


def test_a_crop_from_the_full_resolution_image_keeps_detail_the_small_image_lost():
    """A fine checkerboard (2 px squares) in a region of a 512 px image: the crop from 512 px keeps it, the same
    crop from the image reduced to 100 px has averaged it away."""
    image = torch.zeros(1, 1, 512, 512)
    yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    board = (((yy // 2) + (xx // 2)) % 2).float()
    image[0, 0, 128:256, 256:384] = board[128:256, 256:384]
    box = torch.tensor([[0.5, 0.25, 0.75, 0.5]])
    sharp = crop_regions(image, box, (128, 128))
    small = torch.nn.functional.interpolate(image, size=(100, 100), mode="bilinear", antialias=True, align_corners=False)
    blurred = crop_regions(small, box, (128, 128))
    assert sharp.std() > 0.45 and blurred.std() < 0.1
    torch.testing.assert_close(sharp, image[:, :, 128:256, 256:384])  # the region itself, at its own size


def test_a_crop_reaching_past_the_image_is_padded_with_its_black():
    image = torch.full((1, 1, 10, 10), 3.0)
    image[0, 0, 0, 0] = -2.0
    crop = crop_regions(image, torch.tensor([[-0.5, 0.0, 0.5, 1.0]]), (10, 10))
    assert (crop[0, 0, :, :5] == -2.0).all() and (crop[0, 0, 1:, 5:] == 3.0).all()


# ------------------------------------------------------------------------------------------------ the model
def _batch(n=4, size=64):
    return torch.randn(n, 1, size, size), torch.tensor([0.0, 1.0] * (n // 2)), torch.tensor([10.0, 70.0, 130.0, 200.0])[:n]


def test_localizer_phase_trains_the_classifier_only():
    torch.manual_seed(0)
    model = create_model("localize_regress", width=0.25, localizer_width=0.25, phase="localizer").train()
    x, male, months = _batch()
    out = model(x, male)
    losses = model.compute_loss(out, {"bone_age_months": months})
    losses["loss"].backward()
    assert model.localizer.backbone.conv1.weight.grad is not None and model.backbone.conv1.weight.grad is None
    # cross-entropy over the four default age groups: 10, 70, 130, 200 months are groups 0, 1, 2, 3
    expected = torch.nn.functional.cross_entropy(out.extras["logits"], torch.tensor([0, 1, 2, 3]))
    torch.testing.assert_close(losses["cross_entropy"], expected.detach())
    probabilities = out.extras["logits"].softmax(1)
    torch.testing.assert_close(out.bone_age_months, (probabilities * torch.tensor([30.0, 90.0, 150.0, 204.0])).sum(1))


def test_regressor_phase_keeps_the_localizer_frozen_and_in_eval_mode():
    torch.manual_seed(0)
    model = create_model("localize_regress", width=0.25, localizer_width=0.25).train()
    assert not model.localizer.training and model.backbone.training
    assert not any(p.requires_grad for p in model.localizer.parameters())
    running = model.localizer.backbone.bn1.running_mean.clone()
    x, male, months = _batch()
    out = model(x, male)
    model.compute_loss(out, {"bone_age_months": months})["loss"].backward()
    assert model.backbone.conv1.weight.grad is not None and model.sex_fc[0].weight.grad is not None
    torch.testing.assert_close(model.localizer.backbone.bn1.running_mean, running)
    assert out.extras["crop_box"].shape == (4, 4) and out.extras["age_group"].shape == (4,)


def test_the_model_crops_from_inputs_of_any_size_in_inference_mode():
    torch.manual_seed(0)
    model = create_model("localize_regress", width=0.25, localizer_width=0.25).eval()
    for size in (100, 512):
        with torch.inference_mode():
            out = model(torch.randn(2, 1, size, size), torch.tensor([0.0, 1.0]))
        assert out.bone_age_months.shape == (2,) and torch.isfinite(out.bone_age_months).all()
    found = model.localize(torch.randn(2, 1, 512, 512), gamma=0.0)
    torch.testing.assert_close(found["mask_box"], torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert found["heat"].shape == (2, 100, 100)  # the localizer's own size


def test_without_sex_the_regressor_has_no_sex_branch():
    model = create_model("localize_regress", width=0.25, localizer_width=0.25, sex_features=0).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a = model(x, torch.tensor([0.0, 0.0])).bone_age_months
        b = model(x, torch.tensor([1.0, 1.0])).bone_age_months
    assert model.sex_fc is None
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("options, message", [({"bins": [120, 60]}, "bins"), ({"bins": [300]}, "bins"),
                                              ({"gamma": 1.0}, "gamma"), ({"phase": "joint"}, "phase")])
def test_bad_options_get_one_line_errors(options, message):
    with pytest.raises(InvalidInputError, match=message):
        create_model("localize_regress", **options)


def test_regressor_modules_are_named_as_the_global_model_so_init_loads_them(tmp_path):
    from tests.conftest import export_tiny_model

    from boneage.models import load_model
    from boneage.training.transfer import load_matching_weights

    folder = export_tiny_model(tmp_path / "global", "global", "global_resnet18", width=0.25, head="mse", max_pool=False)
    source = load_model(folder).model
    target = create_model("localize_regress", width=0.25, localizer_width=0.25)
    report = load_matching_weights(target, str(folder))
    assert any(name.startswith("backbone.") for name in report.loaded) and "sex_fc.0.weight" in report.loaded
    assert "mlp.0.weight" in report.loaded and not any(name.startswith("localizer.") for name in report.loaded)
    torch.testing.assert_close(target.backbone.conv1.weight, source.backbone.conv1.weight)


# ---------------------------------------------------------------------------------------------- tall phantoms
def test_tall_phantom_puts_the_hand_in_its_box():
    image, box = tall_phantom(120.0, "M", size=(600, 180), rng=np.random.default_rng(0))
    x0, y0, x1, y1 = box
    assert image.shape == (600, 180) and image.dtype == np.uint8
    assert x1 - x0 == y1 - y0 == 180 and x0 == 0 and 0 <= y0 and y1 <= 600  # a band as wide as the image
    with pytest.raises(ValueError, match="hand_side"):
        tall_phantom(120.0, size=(600, 180), hand_side=400)


def _extreme_ages(n, seed, size=(400, 120)):
    """Tall phantoms of 1-year-olds and 17-year-olds (two age groups, each with its own evidence in the hand)."""
    rng = np.random.default_rng(seed)
    ages = np.where(rng.random(n) < 0.5, 12.0, 204.0)
    drawn = [tall_phantom(age, "M", size, rng=rng) for age in ages]
    images = np.stack([image for image, _ in drawn])
    boxes = torch.tensor([box for _, box in drawn], dtype=torch.float64)
    return (torch.from_numpy(images).float()[:, None] / 255.0 - 0.5) / 0.25, ages, boxes


def test_the_crop_lands_on_the_hand_of_tall_phantoms():
    """A small localizer trained on tall phantoms whose only age signal is the hand's band: its Grad-CAM crop
    (clipped to the image) overlaps the band far better than the whole image does (IoU 0.3), and is centred in it,
    at several gammas."""
    torch.manual_seed(0)
    x, ages, _ = _extreme_ages(128, seed=0)
    months = torch.tensor(ages, dtype=torch.float32)
    model = create_model("localize_regress", phase="localizer", bins=[108.0], localizer_size=(160, 48),
                         localizer_width=0.125, width=0.125)
    optimiser = torch.optim.AdamW(model.localizer.parameters(), 3e-3)
    model.train()
    for _ in range(80):
        index = torch.randint(0, len(x), (32,))
        loss = model.compute_loss(model(x[index], torch.zeros(32)), {"bone_age_months": months[index]})["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test, test_ages, truth = _extreme_ages(16, seed=1)
    found = model.localize(test)
    assert (found["age_group"].numpy() == (test_ages > 108)).mean() >= 0.9
    whole = 120 / 400  # IoU of the whole image with a 120 px band
    for gamma in (0.3, 0.5, 0.7):
        crop = square_boxes(threshold_boxes(found["heat"], gamma), (400, 120), 1.0, model.min_crop).clamp(0, 1).double()
        crop = crop * torch.tensor([120.0, 400.0, 120.0, 400.0], dtype=torch.float64)
        iou = torch.diag(box_iou(crop, truth))
        centre = (crop[:, 1] + crop[:, 3]) / 2
        in_band = ((centre >= truth[:, 1]) & (centre < truth[:, 3])).double().mean()
        assert iou.mean() > max(0.42, whole + 0.1) and in_band >= 0.6, (gamma, iou, in_band)
