"""Detection primitives for ALA-Net's anatomical local extraction (pure PyTorch).

ALA-Net (Wang et al., "Improve bone age assessment by learning from anatomical local regions") finds
the anatomical local regions of a hand with a Faster R-CNN style Region Proposal Network on a ResNet's
4th-block feature map, keeps the top 17 proposals after NMS as ROIs, and pools their features with
ROIAlign. This module provides the pieces, written from scratch:

* box utilities: :func:`box_area`, :func:`box_iou`, and the Faster R-CNN ``(dx, dy, dw, dh)`` box
  parametrisation :func:`encode_boxes` / :func:`decode_boxes`;
* :func:`nms` (greedy non-maximum suppression) and :func:`batched_nms` (per-class NMS in one call);
* :class:`AnchorGenerator`, :func:`match_anchors` (fg/bg/ignore labelling of anchors against ground
  truth) and :func:`sample_labels` (balanced anchor subsampling);
* :class:`RPNHead` and :class:`RegionProposalNetwork`, a single-level RPN that returns proposals,
  their scores and, given ground-truth boxes, its objectness and box-regression losses;
* :func:`roi_align`, a vectorised ROIAlign with Detectron2's sampling and border semantics.

Boxes are float tensors ``(N, 4)`` of ``(x1, y1, x2, y2)`` in pixel coordinates of the input image;
widths are ``x2 - x1`` (no ``+ 1``). Images without keypoint annotations are passed to the RPN as an
empty ``(0, 4)`` target and contribute no RPN loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "AnchorGenerator",
    "RPNHead",
    "RegionProposalNetwork",
    "batched_nms",
    "box_area",
    "box_iou",
    "decode_boxes",
    "encode_boxes",
    "match_anchors",
    "nms",
    "roi_align",
    "sample_labels",
]

# Largest log-scale change applied when decoding, so that exp() cannot overflow.
BBOX_DWH_CLAMP = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` boxes -> ``(N,)`` areas."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every box in ``a`` ``(N, 4)`` with every box in ``b`` ``(M, 4)`` -> ``(N, M)``."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, 4)`` corners -> centre x, centre y, width, height (each ``(N,)``)."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def encode_boxes(
    reference: torch.Tensor, proposals: torch.Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Regression targets ``(N, 4)`` that turn ``proposals`` (e.g. anchors) into ``reference`` (e.g. gt).

    ``dx = wx * (gx - px) / pw``, ``dy = wy * (gy - py) / ph``, ``dw = ww * log(gw / pw)``,
    ``dh = wh * log(gh / ph)``, with centres ``(x, y)`` and sizes ``(w, h)``.
    """
    wx, wy, ww, wh = weights
    px, py, pw, ph = _centre_size(proposals)
    gx, gy, gw, gh = _centre_size(reference)
    return torch.stack(
        (wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)), dim=1
    )


def decode_boxes(
    deltas: torch.Tensor, reference: torch.Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Apply ``(N, 4)`` deltas to ``(N, 4)`` reference boxes (inverse of :func:`encode_boxes`).

    ``dw`` and ``dh`` are clamped at ``log(1000 / 16)`` to avoid overflow.
    """
    wx, wy, ww, wh = weights
    rx, ry, rw, rh = _centre_size(reference.to(deltas.dtype))
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=BBOX_DWH_CLAMP)
    dh = (deltas[:, 3] / wh).clamp(max=BBOX_DWH_CLAMP)
    cx, cy = rx + dx * rw, ry + dy * rh
    half_w, half_h = 0.5 * rw * torch.exp(dw), 0.5 * rh * torch.exp(dh)
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_output: int | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Returns the indices (int64) of the kept boxes, sorted by decreasing score: a box is dropped when its
    IoU with a higher-scoring kept box exceeds ``iou_threshold``. The IoU matrix is computed once; the
    loop runs once per kept box, and stops after ``max_output`` boxes when given (the same first
    ``max_output`` boxes as a full run).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold
    remaining = torch.arange(order.numel(), device=boxes.device)
    kept = []
    while remaining.numel() > 0 and (max_output is None or len(kept) < max_output):
        best, rest = remaining[0], remaining[1:]
        kept.append(best)
        remaining = rest[~overlaps[best, rest]]
    return order[torch.stack(kept)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS applied independently per category ``idxs`` ``(N,)``; kept indices sorted by decreasing score.

    Boxes of different categories are shifted apart by more than the coordinate range, so that they
    never overlap, and one :func:`nms` call handles all categories.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    offsets = idxs.to(boxes.dtype) * span
    return nms(boxes + offsets[:, None], scores, iou_threshold)


class AnchorGenerator:
    """Anchors for one feature level of stride ``stride``.

    At every feature-map position there are ``len(sizes) * len(aspect_ratios)`` anchors (size-major,
    then aspect ratio), of area ``size ** 2`` and ``height / width == aspect_ratio``, centred at
    ``((x + 0.5) * stride, (y + 0.5) * stride)``. Anchors are ordered position-major (row by row), then
    anchor, matching an ``(N, A * k, H, W)`` head output reshaped by ``permute(0, 2, 3, 1)``.
    """

    def __init__(
        self,
        sizes: Sequence[float] = (32.0, 64.0, 128.0),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        stride: int = 32,
    ):
        if not sizes or not aspect_ratios:
            raise ValueError("sizes and aspect_ratios must be non-empty")
        self.sizes = tuple(float(s) for s in sizes)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.stride = int(stride)
        templates = []
        for size in self.sizes:
            for ratio in self.aspect_ratios:
                w, h = size / math.sqrt(ratio), size * math.sqrt(ratio)
                templates.append((-w / 2, -h / 2, w / 2, h / 2))
        self.cell_anchors = torch.tensor(templates, dtype=torch.float32)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map position."""
        return self.cell_anchors.shape[0]

    def __call__(
        self, feature_hw: tuple[int, int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Anchors ``(H * W * A, 4)`` for a feature map of size ``(H, W)``."""
        height, width = feature_hw
        ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * self.stride
        xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * self.stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack((cx, cy, cx, cy), dim=-1).reshape(-1, 1, 4)
        return (centres + self.cell_anchors.to(device=device, dtype=dtype)[None]).reshape(-1, 4)


def match_anchors(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    fg_iou: float = 0.7,
    bg_iou: float = 0.3,
    allow_low_quality: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label ``(A, 4)`` anchors against ``(G, 4)`` ground-truth boxes with the Faster R-CNN rules.

    Returns ``labels`` ``(A,)`` int64 (1 foreground: best IoU >= ``fg_iou``; 0 background: best IoU <
    ``bg_iou``; -1 ignored otherwise) and ``matched`` ``(A,)`` int64, the index of each anchor's
    best-overlapping gt box (-1 when there is no gt box). With ``allow_low_quality``, for every gt box
    the anchors reaching that box's highest IoU also become foreground (when that IoU is > 0).
    With no gt box every anchor is background.
    """
    num_anchors = anchors.shape[0]
    if gt_boxes.shape[0] == 0:
        labels = torch.zeros(num_anchors, dtype=torch.int64, device=anchors.device)
        return labels, torch.full_like(labels, -1)
    iou = box_iou(gt_boxes.to(anchors.dtype), anchors)  # (G, A)
    best_iou, matched = iou.max(dim=0)
    labels = torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
    labels[best_iou < bg_iou] = 0
    labels[best_iou >= fg_iou] = 1
    if allow_low_quality:
        best_per_gt = iou.max(dim=1, keepdim=True).values
        low_quality = ((iou == best_per_gt) & (best_per_gt > 0)).any(dim=0)
        labels[low_quality] = 1
    return labels, matched


def sample_labels(
    labels: torch.Tensor,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random balanced subset of labelled anchors -> boolean mask ``(A,)``.

    At most ``int(batch_size_per_image * positive_fraction)`` positives (label 1) are drawn, and
    negatives (label 0) fill the rest up to ``batch_size_per_image``; ignored anchors (-1) are never
    sampled.
    """
    device = generator.device if generator is not None else labels.device

    def pick(candidates: torch.Tensor, count: int) -> torch.Tensor:
        order = torch.randperm(candidates.numel(), generator=generator, device=device).to(labels.device)
        return candidates[order[:count]]

    positives = torch.nonzero(labels == 1).flatten()
    negatives = torch.nonzero(labels == 0).flatten()
    num_pos = min(int(batch_size_per_image * positive_fraction), positives.numel())
    num_neg = min(batch_size_per_image - num_pos, negatives.numel())
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[pick(positives, num_pos)] = True
    mask[pick(negatives, num_neg)] = True
    return mask


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared by a 1x1 objectness conv (A logits) and a 1x1 box-delta conv (A * 4)."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C, H, W)`` -> objectness logits ``(N, A, H, W)`` and box deltas ``(N, A * 4, H, W)``."""
        hidden = F.relu(self.conv(features))
        return self.cls_logits(hidden), self.bbox_pred(hidden)


class RegionProposalNetwork(nn.Module):
    """Single-level Faster R-CNN Region Proposal Network.

    ``forward`` returns, per image, up to ``post_nms_top_n`` proposals sorted by objectness (decoded
    from the ``pre_nms_top_n`` best anchors, clipped to the image, boxes narrower or shorter than
    ``min_size`` removed, NMS at ``nms_thresh``) with their sigmoid scores, both without gradient.
    Given targets it also returns the objectness and box-regression losses, computed over annotated
    images only.
    """

    def __init__(
        self,
        in_channels: int,
        stride: int = 32,
        anchor_sizes: Sequence[float] = (32.0, 64.0, 128.0),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        pre_nms_top_n: int = 1000,
        post_nms_top_n: int = 17,
        nms_thresh: float = 0.7,
        fg_iou: float = 0.7,
        bg_iou: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        min_size: float = 1e-3,
    ):
        super().__init__()
        self.anchor_generator = AnchorGenerator(anchor_sizes, aspect_ratios, stride)
        self.head = RPNHead(in_channels, self.anchor_generator.num_anchors)
        self.pre_nms_top_n = int(pre_nms_top_n)
        self.post_nms_top_n = int(post_nms_top_n)
        self.nms_thresh = float(nms_thresh)
        self.fg_iou, self.bg_iou = float(fg_iou), float(bg_iou)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.min_size = float(min_size)

    def forward(
        self,
        features: torch.Tensor,
        image_size: tuple[int, int],
        targets: list[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, torch.Tensor]]:
        """Proposals for ``(N, C, H, W)`` features of images of size ``image_size`` = ``(height, width)``.

        ``targets`` is a list of ``(G_i, 4)`` gt boxes per image; an empty ``(0, 4)`` tensor marks an
        unannotated image, which contributes no loss. Returns ``(proposals, scores, losses)``:
        ``(K_i, 4)`` boxes and ``(K_i,)`` scores per image, and ``{'rpn_objectness', 'rpn_box'}`` (an
        empty dict without targets).
        """
        batch = features.shape[0]
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(tuple(features.shape[-2:]), device=features.device)
        # (N, A, H, W) -> (N, H*W*A) and (N, A*4, H, W) -> (N, H*W*A, 4): the anchors' order.
        objectness = logits.permute(0, 2, 3, 1).reshape(batch, -1).float()
        box_deltas = deltas.permute(0, 2, 3, 1).reshape(batch, -1, 4).float()
        proposals, scores = self._propose(objectness.detach(), box_deltas.detach(), anchors, image_size)
        losses: dict[str, torch.Tensor] = {}
        if targets is not None:
            if len(targets) != batch:
                raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
            losses = self._losses(objectness, box_deltas, anchors, targets)
        return proposals, scores, losses

    @torch.no_grad()
    def _propose(
        self, objectness: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor, image_size: tuple[int, int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-image top-k, decode, clip, small-box removal, NMS and final top-k."""
        height, width = image_size
        top_n = min(self.pre_nms_top_n, anchors.shape[0])
        proposals, scores = [], []
        for image_logits, image_deltas in zip(objectness, box_deltas):
            top_logits, top_idx = image_logits.topk(top_n)
            boxes = decode_boxes(image_deltas[top_idx], anchors[top_idx])
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            large = ((boxes[:, 2] - boxes[:, 0]) >= self.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_size)
            boxes, top_logits = boxes[large], top_logits[large]
            keep = nms(boxes, top_logits, self.nms_thresh, max_output=self.post_nms_top_n)
            proposals.append(boxes[keep])
            scores.append(torch.sigmoid(top_logits[keep]))
        return proposals, scores

    def _losses(
        self, objectness: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor, targets: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """BCE over sampled anchors and smooth-L1 over positives / number sampled, annotated images only."""
        annotated = [i for i, gt in enumerate(targets) if gt.shape[0] > 0]
        if not annotated:
            # Zero, but connected to every RPN parameter so that backward and DDP see them used.
            return {"rpn_objectness": objectness.sum() * 0.0, "rpn_box": box_deltas.sum() * 0.0}
        sampled_logits, sampled_labels, positive_deltas, positive_targets = [], [], [], []
        for i in annotated:
            gt = targets[i].to(anchors)
            labels, matched = match_anchors(anchors, gt, self.fg_iou, self.bg_iou)
            sampled = sample_labels(labels, self.batch_size_per_image, self.positive_fraction)
            positive = sampled & (labels == 1)
            sampled_logits.append(objectness[i][sampled])
            sampled_labels.append(labels[sampled].to(objectness.dtype))
            positive_deltas.append(box_deltas[i][positive])
            positive_targets.append(encode_boxes(gt[matched[positive]], anchors[positive]))
        logits = torch.cat(sampled_logits)
        num_sampled = max(logits.numel(), 1)
        box_loss = F.smooth_l1_loss(
            torch.cat(positive_deltas), torch.cat(positive_targets), beta=1.0 / 9, reduction="sum"
        )
        return {
            "rpn_objectness": F.binary_cross_entropy_with_logits(logits, torch.cat(sampled_labels), reduction="sum")
            / num_sampled,
            "rpn_box": box_loss / num_sampled,
        }


def _bilinear_axis(
    coords: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detectron2 bilinear indices and weights along one axis.

    ``coords`` ``(R, P)`` -> low/high indices and their weights (zero for points outside ``[-1, size]``;
    coordinates in ``[-1, 0)`` clamp to 0, those at or past ``size - 1`` to the last pixel).
    """
    valid = (coords >= -1.0) & (coords <= size)
    coords = coords.clamp(min=0.0)
    low = coords.floor().long()
    at_edge = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coords), coords - low.to(coords.dtype))
    valid = valid.to(coords.dtype)
    return low, high, (1.0 - frac) * valid, frac * valid


def roi_align(
    features: torch.Tensor,
    boxes: list[torch.Tensor],
    output_size: tuple[int, int] = (7, 7),
    spatial_scale: float = 1.0 / 32,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> torch.Tensor:
    """ROIAlign: ``(N, C, H, W)`` features and per-image ``(K_i, 4)`` boxes -> ``(sum K_i, C, oh, ow)``.

    Each output bin is the mean of ``sampling_ratio x sampling_ratio`` bilinear samples at the bin's
    regular sub-grid. Box coordinates are multiplied by ``spatial_scale`` (``1 / stride``) and, with
    ``aligned``, shifted by -0.5 pixel; without it ROIs are at least one feature pixel wide. Samples
    outside ``[-1, H] x [-1, W]`` contribute 0. Bilinear weights are separable, so each ROI is two
    matrix products (interpolation matrices along y and x); differentiable with respect to features.
    """
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be positive, got {sampling_ratio}")
    if len(boxes) != features.shape[0]:
        raise ValueError(f"got boxes for {len(boxes)} images and features for {features.shape[0]}")
    out_h, out_w = output_size
    _, channels, height, width = features.shape
    device = features.device
    counts = [int(b.shape[0]) for b in boxes]
    rois = torch.cat([b.to(device=device, dtype=torch.float32) for b in boxes]).reshape(-1, 4)
    rois = rois * spatial_scale - (0.5 if aligned else 0.0)
    roi_w, roi_h = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    # Sample k along an axis sits at (k + 0.5) / sampling_ratio bins from the ROI start.
    steps_y = (torch.arange(out_h * sampling_ratio, device=device, dtype=torch.float32) + 0.5) / sampling_ratio
    steps_x = (torch.arange(out_w * sampling_ratio, device=device, dtype=torch.float32) + 0.5) / sampling_ratio
    ys = rois[:, 1:2] + steps_y[None] * (roi_h / out_h)[:, None]  # (R, Py)
    xs = rois[:, 0:1] + steps_x[None] * (roi_w / out_w)[:, None]  # (R, Px)
    dtype = features.dtype
    weights_y = _axis_weights(ys, height, out_h, sampling_ratio).to(dtype)  # (R, oh, H)
    weights_x = _axis_weights(xs, width, out_w, sampling_ratio).to(dtype)  # (R, ow, W)
    # Bilinear sampling is separable and each bin averages a separable grid of samples, so a bin is
    # (weights along y) x features x (weights along x): two small matrix products per image.
    outputs = []
    for image, (wy, wx) in enumerate(zip(weights_y.split(counts), weights_x.split(counts))):
        if wy.shape[0] == 0:
            continue
        rows = torch.matmul(wy[:, None], features[image][None])  # (K, C, oh, W)
        outputs.append(torch.matmul(rows, wx[:, None].transpose(-1, -2)))  # (K, C, oh, ow)
    if not outputs:
        return features.new_zeros((0, channels, out_h, out_w))
    return torch.cat(outputs)


def _axis_weights(coords: torch.Tensor, size: int, bins: int, sampling_ratio: int) -> torch.Tensor:
    """``(R, bins * sampling_ratio)`` sample coordinates -> ``(R, bins, size)`` interpolation matrix:
    row ``i`` averages the bilinear weights of bin ``i``'s samples over the ``size`` pixels."""
    low, high, w_low, w_high = _bilinear_axis(coords, size)
    matrix = F.one_hot(low, size).to(coords.dtype) * w_low[..., None] + F.one_hot(high, size).to(coords.dtype) * w_high[..., None]
    return matrix.view(coords.shape[0], bins, sampling_ratio, size).mean(dim=2)
