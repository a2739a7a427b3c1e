"""Localize-then-regress (Do et al., "Region of interest localization for bone age estimation using
whole-body bone scintigraphy"): find the region that decides the age, then regress the age on that region
cropped from the full-resolution image.

1. **Localizer**: a classifier over age groups (bins, configurable; the paper's four by default) on the
   whole image, reduced to ``localizer_size`` (100 x 100 px).
2. **Grad-CAM** of the class it predicts, on its last convolutional block (:func:`grad_cam`; the same map
   as ``monai.visualize.GradCAM``, a test holds them equal), rectified, upsampled to the localizer's input
   and normalised to [0, 1] per image (MONAI's order; its default normaliser maps the maximum to 0, this one
   to 1). Thresholded at ``gamma`` (M = 1 where H >= gamma), the mask's
   bounding box (:func:`threshold_boxes`), grown to the regressor's aspect ratio and to at least ``min_crop``
   of the image, is cropped from **the image the model is given, at its own resolution** (:func:`crop_regions`):
   the localizer always works at 100 px, but a model given the hand at 512 px (``inference_size`` in its
   preprocessing) crops from 512 px and keeps the detail that reducing the whole image would lose (a regressor
   trained on crops of 100 px images did worse on such sharper crops: the README's "crop source" table). A
   higher gamma gives a smaller region; ``gamma=0`` keeps the whole image (the "whole image" arm of Table 1).
3. **Regressor** on the crop (``crop_size``): a ResNet (the paper: InceptionV3, which needs pretrained
   weights to shine and does not fit 2 CPU cores) whose pooled features are concatenated with sex through its
   own small fully connected branch (``sex_features=32``; 0 leaves sex out), then two fully connected layers
   with dropout and the head (``mse`` by default, as the paper; any of :data:`~boneage.models.heads.HEADS`).
   The regressor's modules carry the names of :class:`~boneage.models.global_resnet.GlobalResNet`'s
   (``backbone``, ``sex_fc``, ``mlp``, ``head``), so ``boneage train --init`` starts it from a global model.

Training is two steps, both ``boneage train --model localize_regress`` (``scripts/train_localize.sh``):
``phase=localizer`` trains the age-group classifier (cross-entropy over the bins; its bone age is the
expected bin centre, so that validation means something), then ``phase=regressor`` with ``--init STEP1``
trains the regressor on the crops; in that phase the localizer is frozen by the model itself (no gradient,
BatchNorm in eval mode), so the crops it trains on are the ones inference will take.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .base import BoneAgeModel, Capabilities, ModelOutput
from .global_resnet import build_resnet_backbone, resnet_features
from .heads import create_head

__all__ = ["AgeGroupLocalizer", "LocalizeRegress", "crop_regions", "grad_cam", "normalize_maps", "square_boxes",
           "threshold_boxes", "upsample_maps"]

PHASES = ("localizer", "regressor")
DEFAULT_BINS = (60.0, 120.0, 180.0)  # months: four age groups, 0-5, 5-10, 10-15 and 15-19 years


# ---------------------------------------------------------------------------------------------- Grad-CAM
def grad_cam(features: torch.Tensor, classify, class_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM (Selvaraju et al.) of ``classify(features) -> (N, K)`` logits on ``features`` ``(N, C, h, w)``:
    each channel weighted by the mean gradient of the class score over the map, summed, rectified (what
    ``monai.visualize.GradCAM.compute_map`` gives image by image; on a batch MONAI scores ``logits[:, class_idx]``,
    which mixes the classes of images predicted differently, so this one is used).

    ``class_index`` ``(N,)``: the class explained per image (default: the predicted one). Returns
    ``(cam, class_index)`` with ``cam`` ``(N, h, w)`` float32 at the features' resolution, not normalised
    (:func:`upsample_maps` then :func:`normalize_maps`, as MONAI does, give the heat map in [0, 1]). Works in
    inference mode and with frozen weights: only ``classify`` is differentiated, on a detached copy of the
    features."""
    with torch.inference_mode(False), torch.enable_grad():
        maps = features.detach().clone().float().requires_grad_(True)
        logits = classify(maps).float()
        if class_index is None:
            class_index = logits.argmax(dim=1)
        score = logits.gather(1, class_index.view(-1, 1).to(logits.device)).sum()
        (grads,) = torch.autograd.grad(score, maps)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * maps.detach()).sum(dim=1)), class_index.detach()


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """``(N, h, w)`` -> each map min-max scaled to [0, 1] (a flat map gives zeros)."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).clamp_min(1e-12)
    scaled = (maps - low.view(-1, 1, 1)) / span.view(-1, 1, 1)
    return torch.where((high - low).view(-1, 1, 1) > 1e-12, scaled, torch.zeros_like(maps))


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, h, w)`` -> ``(N, *size)`` bilinearly (MONAI's default upsampler)."""
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


# ------------------------------------------------------------------------------------------ mask and crop
def threshold_boxes(heat: torch.Tensor, gamma: float) -> torch.Tensor:
    """The bounding box of ``heat >= gamma`` per map: ``heat`` ``(N, H, W)`` in [0, 1] -> ``(N, 4)``
    ``(x0, y0, x1, y1)`` as fractions of the map's width and height (pixel edges, so the whole map is
    ``(0, 0, 1, 1)``). ``gamma <= 0`` gives the whole map; an empty mask (gamma above every value) gives the
    box of the map's maximum."""
    n, height, width = heat.shape
    mask = heat >= gamma
    empty = ~mask.flatten(1).any(dim=1)
    if empty.any():  # the peak alone
        peak = heat.flatten(1).argmax(dim=1)
        fallback = torch.zeros_like(mask.flatten(1))
        fallback[torch.arange(n), peak] = True
        mask = torch.where(empty.view(-1, 1, 1), fallback.view(n, height, width), mask)
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    index_y = torch.arange(height, device=heat.device).expand(n, height)
    index_x = torch.arange(width, device=heat.device).expand(n, width)
    y0 = torch.where(rows, index_y, height).min(dim=1).values
    y1 = torch.where(rows, index_y, -1).max(dim=1).values + 1
    x0 = torch.where(cols, index_x, width).min(dim=1).values
    x1 = torch.where(cols, index_x, -1).max(dim=1).values + 1
    return torch.stack([x0 / width, y0 / height, x1 / width, y1 / height], dim=1).float()


def square_boxes(boxes: torch.Tensor, image_hw: tuple[int, int], aspect: float = 1.0,
                 min_side: float = 0.0) -> torch.Tensor:
    """Grow fractional boxes ``(N, 4)`` of an ``image_hw`` image around their centres to the ``aspect``
    (width / height, in pixels) of the crop they will be resized to, and to at least ``min_side`` of the
    image's shorter side, so that the crop is not distorted. The result may reach past the image (the crop
    pads there)."""
    height, width = image_hw
    px = boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    cx, cy = (px[:, 0] + px[:, 2]) / 2, (px[:, 1] + px[:, 3]) / 2
    w = (px[:, 2] - px[:, 0]).clamp_min(min_side * min(height, width))
    h = (px[:, 3] - px[:, 1]).clamp_min(min_side * min(height, width))
    w, h = torch.maximum(w, h * aspect), torch.maximum(h, w / aspect)
    grown = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    return grown / torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)


def crop_regions(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop fractional boxes ``(N, 4)`` ``(x0, y0, x1, y1)`` from ``images`` ``(N, C, H, W)`` at the images'
    own resolution and resize each crop to ``size`` (bilinear, antialiased when reducing). Beyond the
    image the crop is filled with the image's minimum (its black)."""
    n, channels, height, width = images.shape
    out = images.new_empty((n, channels, *size))
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    for k in range(n):
        x0, y0, x1, y1 = (boxes[k].detach().double().cpu() * scale).tolist()
        left, top = int(round(x0)), int(round(y0))
        right, bottom = max(int(round(x1)), left + 1), max(int(round(y1)), top + 1)
        region = images[k : k + 1, :, max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)]
        pad = (max(-left, 0), max(right - width, 0), max(-top, 0), max(bottom - height, 0))
        if any(pad):
            region = F.pad(region, pad, value=float(images[k].min()))
        reduce = region.shape[-2] > size[0] or region.shape[-1] > size[1]
        out[k] = F.interpolate(region.float(), size=tuple(size), mode="bilinear", align_corners=False,
                               antialias=reduce)[0].to(out.dtype)
    return out


# ----------------------------------------------------------------------------------------------- models
class AgeGroupLocalizer(nn.Module):
    """A ResNet classifier over age groups on the whole image at ``size``; its last block is where
    Grad-CAM looks (16x downsampling without the stem's max pooling: a 7 x 7 map at 100 px)."""

    def __init__(self, num_classes: int, depth: int = 18, width: float = 0.5, size: tuple[int, int] = (100, 100),
                 max_pool: bool = False):
        super().__init__()
        self.size = tuple(int(v) for v in size)
        self.backbone, channels = build_resnet_backbone(depth, width, 1, max_pool)
        self.classifier = nn.Linear(channels, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.size:
            reduce = images.shape[-2] > self.size[0] or images.shape[-1] > self.size[1]
            images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False, antialias=reduce)
        return resnet_features(self.backbone, images)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features.mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images))


class LocalizeRegress(BoneAgeModel):
    """Localize-then-regress: age-group classifier -> Grad-CAM -> threshold crop -> regressor with sex."""

    def __init__(self, depth: int = 18, width: float = 0.5, head: str = "mse", label_range=(0.0, 228.0),
                 phase: str = "regressor", bins=DEFAULT_BINS, gamma: float = 0.5, sex_features: int = 32,
                 hidden: int = 256, dropout: float = 0.3, crop_size=(100, 100), localizer_size=(100, 100),
                 localizer_depth: int = 18, localizer_width: float = 0.5, min_crop: float = 0.25,
                 max_pool: bool = False):
        super().__init__()
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        bins = [float(b) for b in bins]
        if not bins or any(b <= label_range[0] or b >= label_range[1] for b in bins) or sorted(set(bins)) != bins:
            raise ValueError(f"bins must be increasing ages in months inside {tuple(label_range)}, got {bins}")
        if not 0.0 <= float(gamma) < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma}")
        if not 0.0 <= float(min_crop) <= 1.0:
            raise ValueError(f"min_crop must be in [0, 1], got {min_crop}")
        self.phase, self.gamma, self.min_crop = phase, float(gamma), float(min_crop)
        self.crop_size = tuple(int(v) for v in crop_size)
        edges = [float(label_range[0]), *bins, float(label_range[1])]
        self.register_buffer("bin_edges", torch.tensor(bins), persistent=False)
        self.register_buffer("bin_centres", torch.tensor([(a + b) / 2 for a, b in zip(edges, edges[1:])]), persistent=False)
        self.localizer = AgeGroupLocalizer(len(bins) + 1, localizer_depth, localizer_width, localizer_size)
        # the regressor, named as GlobalResNet's modules so that --init loads a global model into it
        self.backbone, self.num_features = build_resnet_backbone(depth, width, 1, max_pool)
        self.sex_features = int(sex_features)
        self.sex_fc = nn.Sequential(nn.Linear(1, self.sex_features), nn.ReLU(inplace=True)) if self.sex_features else None
        self.mlp = nn.Sequential(
            nn.Linear(self.num_features + self.sex_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.head = create_head(head, hidden, tuple(label_range))
        if phase == "regressor":
            self.localizer.requires_grad_(False)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(evidence=("localize",), partial_loss=True)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.phase == "regressor":  # the frozen localizer keeps its BatchNorm statistics
            self.localizer.eval()
        return self

    # ------------------------------------------------------------------------------------- the steps
    def localize(self, images: torch.Tensor, gamma: float | None = None) -> dict[str, torch.Tensor]:
        """Step 1 and 2 on model inputs ``(N, 1, H, W)`` of any size: ``logits`` ``(N, K)`` over the age
        groups, ``age_group`` ``(N,)`` the predicted one, ``heat`` ``(N, h, w)`` its Grad-CAM in [0, 1] at the
        localizer's input size, ``mask_box`` ``(N, 4)`` the bounding box of ``heat >= gamma`` and ``crop_box``
        ``(N, 4)`` the region cropped (grown to the crop's aspect and ``min_crop``), both as fractions of the
        image's width and height."""
        gamma = self.gamma if gamma is None else float(gamma)
        with torch.no_grad():
            features = self.localizer.features(images)
        cam, group = grad_cam(features, self.localizer.classify)
        with torch.no_grad():
            logits = self.localizer.classify(features).float()
        heat = normalize_maps(upsample_maps(cam, self.localizer.size))
        mask_box = threshold_boxes(heat, gamma)
        aspect = self.crop_size[1] / self.crop_size[0]
        crop_box = square_boxes(mask_box, tuple(images.shape[-2:]), aspect, self.min_crop)
        return {"logits": logits, "age_group": group, "heat": heat, "mask_box": mask_box, "crop_box": crop_box}

    def regress(self, crops: torch.Tensor, male: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 3: crops ``(N, 1, *crop_size)`` and sexes -> the head's outputs (``bone_age_months``...)."""
        pooled = self.forward_features(crops).mean(dim=(2, 3))
        parts = [pooled]
        if self.sex_fc is not None:
            parts.append(self.sex_fc(male.view(-1, 1).to(pooled.dtype)))
        return self.head(self.mlp(torch.cat(parts, dim=1)))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The regressor's last feature map for (cropped) inputs."""
        return resnet_features(self.backbone, images)

    def forward(self, images: torch.Tensor, male: torch.Tensor, keypoints=None) -> ModelOutput:
        if self.phase == "localizer":
            logits = self.localizer(images)
            expected = (logits.float().softmax(dim=1) * self.bin_centres).sum(dim=1)
            return ModelOutput(bone_age_months=expected, extras={"logits": logits})
        found = self.localize(images)
        crops = crop_regions(images, found["crop_box"], self.crop_size)
        head = self.regress(crops, male)
        extras = {"head": head, **{key: found[key] for key in ("age_group", "mask_box", "crop_box")}}
        return ModelOutput(bone_age_months=head["bone_age_months"], extras=extras)

    def compute_loss(self, outputs: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        months = batch["bone_age_months"]
        if self.phase == "localizer":
            groups = torch.bucketize(months.float(), self.bin_edges, right=True)
            loss = F.cross_entropy(outputs.extras["logits"].float(), groups)
            accuracy = (outputs.extras["logits"].argmax(dim=1) == groups).float().mean()
            return {"loss": loss, "cross_entropy": loss.detach(), "group_accuracy": accuracy.detach()}
        loss = self.head.loss(outputs.extras["head"], months)
        return {"loss": loss, self.head.kind: loss.detach()}

    def init_from_labels(self, months: torch.Tensor) -> None:
        self.head.init_from_labels(months)


@register_model
def localize_regress(**kwargs) -> LocalizeRegress:
    """Localize-then-regress (Do et al.): age-group classifier, Grad-CAM crop at gamma, ResNet-18 regressor with sex."""
    return LocalizeRegress(**kwargs)


localize_regress.defaults = {"head": "mse"}
