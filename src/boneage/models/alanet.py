"""ALA-Net: Anatomical Local-Aware Network (Wang et al., "Improve bone age assessment by learning from
anatomical local regions").

* Global branch: a ResNet (18/34/50, from scratch) whose 4th block is average-pooled.
* Anatomical local extraction: a Region Proposal Network over the backbone proposes ROIs; the top 17
  after NMS (one per anatomical keypoint) are pooled with ROIAlign, transformed by a shared ROI head
  (4 convolutions + 1 fully connected layer) and max-pooled across ROIs into the local feature.
* Sex features; global + local + sex -> MLP -> ordinal regression (K-1 sigmoids, BCE over ranks).
* Anatomical patch training: during training an MLP predicts the bone age from every ROI's feature
  with the same ordinal loss.
* The RPN is supervised by fixed-size boxes centred on the keypoints (64 x 64 at a 512 px long side,
  i.e. ``box_fraction = 0.125`` of the input's long side); images without keypoints add no RPN loss.
  Loss = L_ord + L_ord^patch + L_RPN.

Resolution. The paper works at 512 px, where the 4th block (stride 32) is a 16 x 16 grid and a ROI box
spans two of its cells. At our 100 px the 4th block is a 7 x 7 grid (stride 16, no stem max pool) with
cells wider than the 11 px between neighbouring joints, so by default (``rpn_level='p3'``) the RPN and
ROIAlign use the 4th block's output brought to stride 8 by a top-down merge with the 3rd block (one
feature-pyramid level): a box then spans 1.6 cells, as in the paper. ``rpn_level='c4'`` puts them on
the 4th block itself, exactly as published, for inputs large enough for it.

Variants for the paper's Table 1: ``local_features`` (use the ROI features in the prediction) and
``patch_training`` (the per-ROI loss); both off is the global baseline, built by the same code.

ROIAlign gives 5 x 5 bins per ROI by default (a keypoint box spans 1.6 cells of the stride-8 map, so
5 x 5 bilinear bins already oversample it; the usual 7 x 7 is ``roi_size=7``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .base import BoneAgeModel, Capabilities, ModelOutput
from .detection import AnchorGenerator, RegionProposalNetwork, roi_align
from .global_resnet import build_resnet_backbone
from .heads import create_head

__all__ = ["ALANet", "keypoint_boxes"]

RPN_LEVELS = ("p3", "c4")


def keypoint_boxes(points: torch.Tensor, box_size: float, image_hw: tuple[int, int]) -> torch.Tensor:
    """``(K, 2)`` keypoint centres (input pixels) -> ``(K', 4)`` square boxes of side ``box_size``,
    clipped to the image; keypoints that fell outside the image (after augmentation) are dropped."""
    height, width = image_hw
    points = points.reshape(-1, 2).float()
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    points = points[inside]
    half = box_size / 2.0
    boxes = torch.cat([points - half, points + half], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


class ROIHead(nn.Module):
    """The shared ROI head: four 3x3 convolutions (ReLU) and one fully connected layer.

    No normalisation, as in Faster R-CNN's conv heads: on a CPU, BatchNorm over the 17 x batch ROIs
    cost as much as the convolutions themselves."""

    def __init__(self, in_channels: int, channels: int, roi_size: int, out_features: int):
        super().__init__()
        layers = []
        for i in range(4):
            conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(channels * roi_size * roi_size, out_features), nn.ReLU(inplace=True))

    def forward(self, rois: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(rois).flatten(1))


class ALANet(BoneAgeModel):
    """Global ResNet + RPN-selected anatomical ROIs (ROIAlign, shared ROI head, max pool) + sex -> ordinal."""

    def __init__(
        self,
        depth: int = 18,
        width: float = 1.0,
        head: str = "ordinal",
        label_range: tuple[float, float] = (0.0, 228.0),
        sex_features: int = 32,
        hidden: int = 256,
        dropout: float = 0.2,
        in_channels: int = 1,
        max_pool: bool = True,
        local_features: bool = True,
        patch_training: bool = True,
        detection_only: bool = False,
        num_rois: int = 17,
        rpn_level: str = "p3",
        box_fraction: float = 0.125,
        roi_size: int = 5,
        roi_channels: int | None = None,
        roi_features: int = 256,
        rpn_pre_nms_top_n: int = 300,
        rpn_nms_thresh: float = 0.7,
        rpn_batch_size_per_image: int = 128,
    ):
        super().__init__()
        if rpn_level not in RPN_LEVELS:
            raise ValueError(f"rpn_level must be one of {RPN_LEVELS}, got {rpn_level!r}")
        if not 0 < box_fraction < 1:
            raise ValueError(f"box_fraction must be between 0 and 1, got {box_fraction}")
        self.backbone, self.num_features = build_resnet_backbone(depth, width, in_channels, max_pool)
        self.local_features, self.patch_training = bool(local_features), bool(patch_training)
        self.detection_only = bool(detection_only)
        self.uses_rpn = self.local_features or self.patch_training or self.detection_only
        self.num_rois, self.box_fraction, self.roi_size = int(num_rois), float(box_fraction), int(roi_size)
        self.rpn_level = rpn_level
        c4_stride = 32 if max_pool else 16
        self.sex_fc = nn.Sequential(nn.Linear(1, sex_features), nn.ReLU(inplace=True))
        local_dim = 0
        if self.uses_rpn:
            last3 = self.backbone.layer3[-1]
            c3_channels = (last3.conv3 if hasattr(last3, "conv3") else last3.conv2).out_channels
            if rpn_level == "p3":
                self.feature_channels, self.feature_stride = c3_channels, c4_stride // 2
                self.lateral3 = nn.Conv2d(c3_channels, c3_channels, 1)
                self.lateral4 = nn.Conv2d(self.num_features, c3_channels, 1)
                self.smooth = nn.Sequential(nn.Conv2d(c3_channels, c3_channels, 3, padding=1), nn.ReLU(inplace=True))
            else:
                self.feature_channels, self.feature_stride = self.num_features, c4_stride
            # Anchors are set per input size (see _anchors): box sizes are a fraction of the image.
            self.rpn = RegionProposalNetwork(
                self.feature_channels, stride=self.feature_stride, anchor_sizes=(1.0, 2.0, 4.0),
                pre_nms_top_n=rpn_pre_nms_top_n, post_nms_top_n=self.num_rois, nms_thresh=rpn_nms_thresh,
                batch_size_per_image=rpn_batch_size_per_image,
            )
            self._anchor_key: tuple[int, int] | None = None
            if self.local_features or self.patch_training:
                channels = roi_channels or max(16, int(round(128 * width)))
                self.roi_head = ROIHead(self.feature_channels, channels, self.roi_size, roi_features)
            if self.local_features:
                local_dim = roi_features
            if self.patch_training:
                self.patch_mlp = nn.Sequential(
                    nn.Linear(roi_features + sex_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
                )
                self.patch_head = create_head(head, hidden, tuple(label_range))
        self.mlp = nn.Sequential(
            nn.Linear(self.num_features + local_dim + sex_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.head = create_head(head, hidden, tuple(label_range))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(evidence=("rois", "gradcam") if self.uses_rpn else ("gradcam",),
                            needs_keypoints=self.uses_rpn, partial_loss=self.detection_only)

    def cam_layers(self) -> list[nn.Module]:
        return [self.backbone.layer4]

    # ------------------------------------------------------------------------------ pieces
    def box_size(self, image_hw: tuple[int, int]) -> float:
        """Side of a keypoint box for an input of this size (64 px at a 512 px long side)."""
        return self.box_fraction * max(image_hw)

    def keypoint_box_size(self, image_hw: tuple[int, int]) -> float | None:
        return self.box_size(image_hw) if self.uses_rpn else None

    def _anchors(self, image_hw: tuple[int, int]) -> None:
        """Anchors of 0.5x, 1x and 2x the keypoint box, at three aspect ratios, for this input size."""
        key = (int(image_hw[0]), int(image_hw[1]))
        if key != self._anchor_key:
            size = self.box_size(key)
            self.rpn.anchor_generator = AnchorGenerator((size / 2, size, size * 2), (0.5, 1.0, 2.0), self.feature_stride)
            self._anchor_key = key

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the 4th block's feature map."""
        return self.backbone_maps(images)[1]

    def backbone_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C, H, W)`` -> the 3rd and 4th blocks' feature maps."""
        b = self.backbone
        x = b.act(b.bn1(b.conv1(images)))
        if not b.no_max_pool:
            x = b.maxpool(x)
        c3 = b.layer3(b.layer2(b.layer1(x)))
        return c3, b.layer4(c3)

    def detection_features(self, c3: torch.Tensor, c4: torch.Tensor) -> torch.Tensor:
        """The map the RPN and ROIAlign work on (stride ``feature_stride``)."""
        if self.rpn_level == "c4":
            return c4
        top_down = F.interpolate(self.lateral4(c4), size=c3.shape[-2:], mode="nearest")
        return self.smooth(self.lateral3(c3) + top_down)

    def _fixed_count(self, proposals: list[torch.Tensor], scores: list[torch.Tensor],
                     image_hw) -> tuple[torch.Tensor, torch.Tensor]:
        """Exactly ``num_rois`` boxes per image: the rare image with fewer proposals repeats its last
        one (or gets the whole image, score 0)."""
        boxes, kept = [], []
        whole = torch.tensor([0.0, 0.0, float(image_hw[1]), float(image_hw[0])])
        for p, s in zip(proposals, scores):
            if p.shape[0] == 0:
                p, s = whole.to(p)[None], torch.zeros(1, device=s.device, dtype=s.dtype)
            missing = self.num_rois - p.shape[0]
            if missing > 0:
                p = torch.cat([p, p[-1:].expand(missing, 4)])
                s = torch.cat([s, s[-1:].expand(missing)])
            boxes.append(p[: self.num_rois])
            kept.append(s[: self.num_rois])
        return torch.stack(boxes), torch.stack(kept)

    # ------------------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, male: torch.Tensor, keypoints: list[torch.Tensor] | None = None) -> ModelOutput:
        """Bone age and, with the RPN, the ROIs (``rois`` ``(N, 17, 4)`` in input pixels, ``roi_scores``).
        ``keypoints`` (training): per image ``(K, 2)`` keypoint centres in input pixels, ``(0, 2)`` for an
        unannotated image; they add the RPN losses to ``losses``."""
        c3, c4 = self.backbone_maps(images)
        pooled = c4.mean(dim=(2, 3))
        sex = self.sex_fc(male.view(-1, 1).to(pooled.dtype))
        parts, out = [pooled], {}
        if self.uses_rpn:
            out = self._local(images, c3, c4, sex, keypoints)
            if "local" in out:
                parts.append(out.pop("local"))
        head = self.head(self.mlp(torch.cat(parts + [sex.to(pooled.dtype)], dim=1)))
        extras = {"head": head, **({"patch": out["patch"]} if "patch" in out else {})}
        return ModelOutput(bone_age_months=head["bone_age_months"], rois=out.get("rois"),
                           roi_scores=out.get("roi_scores"), extras=extras, losses=out.get("losses", {}))

    def _local(self, images, c3, c4, sex, keypoints) -> dict:
        """The RPN's ROIs (and its losses with ``keypoints``), the local feature and the patch outputs."""
        image_hw = tuple(images.shape[-2:])
        features = self.detection_features(c3, c4)
        self._anchors(image_hw)
        targets = None
        if keypoints is not None:
            size = self.box_size(image_hw)
            targets = [keypoint_boxes(k.to(images.device), size, image_hw) for k in keypoints]
        proposals, scores, rpn_losses = self.rpn(features, image_hw, targets)
        rois, roi_scores = self._fixed_count(proposals, scores, image_hw)
        out = {"rois": rois, "roi_scores": roi_scores, "losses": rpn_losses}
        if self.local_features or (self.patch_training and self.training):
            pooled_rois = roi_align(features, list(rois), (self.roi_size, self.roi_size), 1.0 / self.feature_stride)
            roi_features = self.roi_head(pooled_rois).view(images.shape[0], self.num_rois, -1)
            if self.local_features:
                out["local"] = roi_features.max(dim=1).values
            if self.patch_training and self.training:
                per_roi_sex = sex[:, None, :].expand(-1, self.num_rois, -1)
                patch_in = torch.cat([roi_features, per_roi_sex.to(roi_features.dtype)], dim=2).flatten(0, 1)
                out["patch"] = self.patch_head(self.patch_mlp(patch_in))
        return out

    def compute_loss(self, outputs: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        """L_ord + L_ord^patch + L_RPN (objectness + box regression); only L_RPN with ``detection_only``."""
        months = batch["bone_age_months"]
        parts: dict[str, torch.Tensor] = {}
        total = 0.0
        if not self.detection_only:
            parts["ordinal"] = self.head.loss(outputs.extras["head"], months)
            total = total + parts["ordinal"]
            if "patch" in outputs.extras:
                parts["patch"] = self.patch_head.loss(outputs.extras["patch"], months.repeat_interleave(self.num_rois))
                total = total + parts["patch"]
        if "rpn_objectness" in outputs.losses:
            parts["rpn"] = outputs.losses["rpn_objectness"] + outputs.losses["rpn_box"]
            total = total + parts["rpn"]
        if not torch.is_tensor(total):
            raise ValueError("a detection-only ALA-Net needs keypoints for its RPN loss")
        return {"loss": total, **{k: v.detach() for k, v in parts.items()}}

    def init_from_labels(self, months: torch.Tensor) -> None:
        self.head.init_from_labels(months)
        if self.patch_training:
            self.patch_head.init_from_labels(months)


def _alanet(depth: int, **kwargs) -> ALANet:
    return ALANet(depth=depth, **kwargs)


@register_model
def alanet18(**kwargs) -> ALANet:
    """ALA-Net on ResNet-18: global + anatomical local extraction (RPN, 17 ROIs) + patch training + sex."""
    return _alanet(18, **kwargs)


@register_model
def alanet34(**kwargs) -> ALANet:
    """ALA-Net on ResNet-34: global + anatomical local extraction (RPN, 17 ROIs) + patch training + sex."""
    return _alanet(34, **kwargs)


@register_model
def alanet50(**kwargs) -> ALANet:
    """ALA-Net on ResNet-50 (the paper's backbone): global + local extraction + patch training + sex."""
    return _alanet(50, **kwargs)


@register_model
def alanet18_local(**kwargs) -> ALANet:
    """ALA-Net ablation (ResNet-18): global + anatomical local extraction, no patch training."""
    return _alanet(18, **{"patch_training": False, **kwargs})


@register_model
def alanet18_patch(**kwargs) -> ALANet:
    """ALA-Net ablation (ResNet-18): global prediction + anatomical patch training, no local features."""
    return _alanet(18, **{"local_features": False, **kwargs})


@register_model
def alanet18_global(**kwargs) -> ALANet:
    """ALA-Net ablation (ResNet-18): the global branch + sex only (Table 1's baseline row)."""
    return _alanet(18, **{"local_features": False, "patch_training": False, **kwargs})


@register_model
def alanet18_rpn(**kwargs) -> ALANet:
    """ALA-Net's RPN trained alone on keypoint boxes (ResNet-18; for the detection benchmark)."""
    return _alanet(18, **{"local_features": False, "patch_training": False, "detection_only": True, **kwargs})
