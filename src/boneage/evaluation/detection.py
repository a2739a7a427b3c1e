"""Detection metrics for the anatomical ROIs (ALA-Net's Table 2) and a check against independent boxes.

* :func:`average_precision`: COCO-style, class-agnostic AP of scored boxes against ground-truth boxes
  at one IoU threshold (greedy matching by decreasing score over the whole set, 101-point interpolated
  precision-recall), and :func:`detection_metrics`: AP@[.5:.95] (mean over 0.50, 0.55, ..., 0.95),
  AP50, AP75, plus the recall of the kept ROIs at IoU 0.5.
* :func:`ossification_hits`: for boxes drawn by other readers around ossification areas (DIP, PIP,
  MCP, radius, ulna, wrist; Koitka et al. 2018), the share that contain the centre of at least one
  ROI, by class. Those boxes are not the ROIs' shape or size, so this is a hit rate, not an AP.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.detection import box_iou

__all__ = ["average_precision", "bone_detection_metrics", "detection_metrics", "ossification_hits", "roi_detection_metrics"]

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return box_iou(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)).numpy()


def average_precision(predictions: list[tuple[np.ndarray, np.ndarray]], ground_truth: list[np.ndarray],
                      iou_threshold: float = 0.5) -> float:
    """AP over images: ``predictions`` per image ``(boxes (K, 4), scores (K,))``, ``ground_truth`` per
    image ``(G, 4)``. A detection is a true positive when it overlaps a not yet matched gt box of its
    image by IoU >= ``iou_threshold`` (gt boxes taken best-IoU first); detections are ranked by score
    across all images. Precision is made monotone and sampled at 101 recall points (COCO)."""
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} images")
    total_gt = sum(len(g) for g in ground_truth)
    if total_gt == 0:
        raise ValueError("no ground-truth boxes")
    records = []  # (score, image index, detection index)
    for i, (_, scores) in enumerate(predictions):
        records += [(float(s), i, k) for k, s in enumerate(np.asarray(scores).reshape(-1))]
    records.sort(key=lambda r: -r[0])
    ious = [_iou(np.asarray(p[0]).reshape(-1, 4), np.asarray(g).reshape(-1, 4)) for p, g in zip(predictions, ground_truth)]
    matched = [np.zeros(len(g), dtype=bool) for g in ground_truth]
    hits = np.zeros(len(records))
    for r, (_, i, k) in enumerate(records):
        if ious[i].shape[1] == 0:
            continue
        overlaps = np.where(matched[i], -1.0, ious[i][k])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            matched[i][best] = True
            hits[r] = 1
    tp = np.cumsum(hits)
    recall = tp / total_gt
    precision = tp / np.arange(1, len(records) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    samples = []
    for level in np.linspace(0, 1, 101):
        reached = np.searchsorted(recall, level, side="left")
        samples.append(precision[reached] if reached < len(precision) else 0.0)
    return float(np.mean(samples))


def detection_metrics(predictions: list[tuple[np.ndarray, np.ndarray]], ground_truth: list[np.ndarray]) -> dict:
    """``{'ap', 'ap50', 'ap75', 'recall50', 'n_images', 'n_boxes'}``, AP values in percent."""
    per_threshold = {t: average_precision(predictions, ground_truth, t) for t in IOU_THRESHOLDS}
    found = sum(int((_iou(np.asarray(p[0]).reshape(-1, 4), g).max(axis=0) >= 0.5).sum()) if len(p[0]) else 0
                for p, g in zip(predictions, ground_truth) if len(g))
    total = sum(len(g) for g in ground_truth)
    return {
        "ap": round(100 * float(np.mean(list(per_threshold.values()))), 2),
        "ap50": round(100 * per_threshold[0.5], 2),
        "ap75": round(100 * per_threshold[0.75], 2),
        "recall50": round(100 * found / total, 2),
        "n_images": len(ground_truth),
        "n_boxes": int(total),
    }


def ossification_hits(rois: list[np.ndarray], boxes: list[np.ndarray], labels: list[tuple[str, ...]]) -> dict:
    """Share (percent) of reference boxes containing at least one ROI centre, overall and by class."""
    hit_by: dict[str, list[bool]] = {}
    for image_rois, image_boxes, image_labels in zip(rois, boxes, labels):
        image_rois = np.asarray(image_rois).reshape(-1, 4)
        centres = np.stack([(image_rois[:, 0] + image_rois[:, 2]) / 2, (image_rois[:, 1] + image_rois[:, 3]) / 2], 1)
        for box, label in zip(np.asarray(image_boxes).reshape(-1, 4), image_labels):
            inside = ((centres[:, 0] >= box[0]) & (centres[:, 0] <= box[2]) & (centres[:, 1] >= box[1])
                      & (centres[:, 1] <= box[3]))
            hit_by.setdefault(label, []).append(bool(inside.any()))
    every = [h for hits in hit_by.values() for h in hits]
    return {
        "all": round(100 * float(np.mean(every)), 2) if every else None,
        "n_boxes": len(every),
        "by_class": {label: round(100 * float(np.mean(h)), 2) for label, h in sorted(hit_by.items())},
    }


def roi_detection_metrics(model, images, points: list, males, preprocess, batch_size: int = 64) -> dict:
    """:func:`detection_metrics` of a model's 17 ROIs on the images that have keypoints.

    ``images`` ``(N, H, W)`` (uint8 or [0, 1]), ``points`` per image the ROI keypoints in model-input
    pixels (or None: not annotated, skipped); ground truth is the keypoint boxes the RPN is trained on.
    """
    from ..inference import predict_rois
    from ..models.alanet import keypoint_boxes

    chosen = [i for i, p in enumerate(points) if p is not None]
    if not chosen:
        raise ValueError("no annotated images to measure detection on")
    rois, scores = predict_rois(model, np.asarray(images)[chosen], np.asarray(males, dtype=np.float32)[chosen],
                                preprocess, batch_size=batch_size)
    size = tuple(np.asarray(images).shape[-2:])
    box_size = model.keypoint_box_size(size)
    truth = [keypoint_boxes(torch.as_tensor(points[i]), box_size, size).numpy() for i in chosen]
    return detection_metrics(list(zip(rois, scores)), truth)


def bone_detection_metrics(model, images, points: list, males, preprocess, batch_size: int = 64) -> dict:
    """Per-bone detection of a fine-grained model's 13 RUS boxes on the images that have keypoints.

    Ground truth is the box geometry applied to the annotated keypoints (:func:`boneage.models.rus_chn.bone_boxes`),
    so this measures where the detector puts the keypoints, in the terms of the boxes. Returns
    :func:`detection_metrics` over all bones, ``by_bone`` (AP, AP50, AP75 and mean IoU per bone, in percent),
    ``map50`` (the mean over bones of AP50, the paper's mAP) and ``map`` (mean over bones of AP at 0.5:0.95).
    """
    from ..data.rus_chn import BONES
    from ..inference import predict_bones
    from ..models.rus_chn import bone_boxes

    chosen = [i for i, p in enumerate(points) if p is not None]
    if not chosen:
        raise ValueError("no annotated images to measure detection on")
    found = predict_bones(model, np.asarray(images)[chosen], np.asarray(males, dtype=np.float32)[chosen], preprocess,
                          batch_size=batch_size)
    truth = bone_boxes(torch.as_tensor(np.stack([np.asarray(points[i])[:17] for i in chosen]), dtype=torch.float32)).numpy()
    boxes, scores = found["boxes"], found["box_scores"]
    by_bone = {}
    for b, bone in enumerate(BONES):
        predictions = [(boxes[i, b : b + 1], scores[i, b : b + 1]) for i in range(len(chosen))]
        ground = [truth[i, b : b + 1] for i in range(len(chosen))]
        metrics = detection_metrics(predictions, ground)
        iou = [float(_iou(boxes[i, b : b + 1], truth[i, b : b + 1])[0, 0]) for i in range(len(chosen))]
        by_bone[bone] = {"ap": metrics["ap"], "ap50": metrics["ap50"], "ap75": metrics["ap75"],
                         "mean_iou": round(100 * float(np.mean(iou)), 2)}
    overall = detection_metrics([(boxes[i], scores[i]) for i in range(len(chosen))], [truth[i] for i in range(len(chosen))])
    overall.update(by_bone=by_bone, map50=round(float(np.mean([v["ap50"] for v in by_bone.values()])), 2),
                   map=round(float(np.mean([v["ap"] for v in by_bone.values()])), 2))
    return overall
