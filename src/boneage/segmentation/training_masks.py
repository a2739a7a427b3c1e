"""Training masks for the hand segmenter: classical masks, refined with the 21 hand keypoints.

No hand masks ship with the data. As in the residual-attention bone age paper, masks come from
thresholds and edges on histogram-normalised images followed by morphology
(:func:`boneage.preprocess.masks.classical_hand_mask`). Those cover 99.2% of the annotated keypoints
of the 568 RSNA ids; the rest are finger tips or thumbs cut off by a threshold. Every keypoint lies
on the hand, so a correct mask holds all of them: :func:`refine_with_keypoints` adds, where a
keypoint is outside, capsules along the finger segments touching it (wrist -> finger 1 -> 2 -> 3 -> 4,
the skeleton of the COCO file read finger by finger) and a disc on the point, with a radius
scaled to the hand, then keeps the connected piece holding the most keypoints and fills its holes.

Points are pixel coordinates ``(x, y)`` of the image (pixel ``i`` spans ``[i, i + 1)``, as in
:func:`boneage.preprocess.masks.keypoint_coverage`), shaped ``(K, 2)`` for one hand or
``(hands, K, 2)``.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..data.keypoints import KEYPOINT_NAMES
from ..errors import InvalidInputError
from ..preprocess.masks import classical_hand_mask, fill_holes

__all__ = [
    "FINGER_CHAINS",
    "SEGMENTS",
    "TrainingMasks",
    "dice_score",
    "iou_score",
    "keypoint_radius",
    "keypoints_inside",
    "refine_with_keypoints",
    "training_masks",
]

# Each finger as a chain of keypoint indices from the wrist to the tip (finger 1 is the joint nearest
# the wrist, 4 the tip: measured on the 568 annotated hands).
FINGER_CHAINS = tuple(
    (0,) + tuple(KEYPOINT_NAMES.index(f"{finger}{k}") for k in (1, 2, 3, 4))
    for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
)
SEGMENTS = tuple((chain[i], chain[i + 1]) for chain in FINGER_CHAINS for i in range(len(chain) - 1))
# Capsule radius as a fraction of the hand's length scale (median wrist -> finger base distance of
# the four fingers): about half a finger's width.
RADIUS_FRACTION = 0.08
RADIUS_IMAGE_FRACTION = 0.015  # without the 21-point skeleton: fraction of the image's short side
_FINGER_BASES = tuple(chain[1] for chain in FINGER_CHAINS[1:])


def _as_mask(mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InvalidInputError(f"a mask must be a 2-D array, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _as_hands(points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[-1] != 2:
        raise InvalidInputError(f"keypoints must be (K, 2) or (hands, K, 2) pixel coordinates, got shape {points.shape}")
    return points


def _as_image01(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise InvalidInputError(f"expected a grayscale (H, W) image, got shape {image.shape}")
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def dice_score(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2|A and B| / (|A| + |B|)`` of two boolean masks (1.0 when both are empty)."""
    a, b = _as_mask(a), _as_mask(b)
    if a.shape != b.shape:
        raise InvalidInputError(f"masks differ in size: {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou_score(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    a, b = _as_mask(a), _as_mask(b)
    if a.shape != b.shape:
        raise InvalidInputError(f"masks differ in size: {a.shape} and {b.shape}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def keypoints_inside(mask: np.ndarray, points) -> np.ndarray:
    """Boolean per point (same leading shape as ``points``): inside the mask; off the image is outside."""
    mask = _as_mask(mask)
    points = np.asarray(points, dtype=np.float64)
    flat = points.reshape(-1, 2)
    cols, rows = np.floor(flat[:, 0]).astype(np.int64), np.floor(flat[:, 1]).astype(np.int64)
    on_image = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
    inside = np.zeros(len(flat), dtype=bool)
    inside[on_image] = mask[rows[on_image], cols[on_image]]
    return inside.reshape(points.shape[:-1])


def keypoint_radius(points, shape: tuple[int, int]) -> float:
    """Capsule radius in px for one hand: 8% of the median wrist -> finger base distance with the 21
    keypoints, else 1.5% of the image's short side; at least 1 px (so a point's own pixel is covered)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape == (len(KEYPOINT_NAMES), 2):
        length = float(np.median(np.linalg.norm(points[list(_FINGER_BASES)] - points[0], axis=1)))
        radius = RADIUS_FRACTION * length
    else:
        radius = RADIUS_IMAGE_FRACTION * min(shape)
    return max(1.0, radius)


def _draw_capsule(canvas: np.ndarray, p0, p1, radius: float) -> None:
    """Set the pixels whose centres lie within ``radius`` of the segment ``p0``-``p1`` (points as (x, y))."""
    height, width = canvas.shape
    (x0, y0), (x1, y1) = p0, p1
    r0 = max(0, int(np.floor(min(y0, y1) - radius)))
    r1 = min(height, int(np.ceil(max(y0, y1) + radius)) + 1)
    c0 = max(0, int(np.floor(min(x0, x1) - radius)))
    c1 = min(width, int(np.ceil(max(x0, x1) + radius)) + 1)
    if r0 >= r1 or c0 >= c1:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.zeros_like(xx) if length2 == 0 else np.clip(((xx - x0) * dx + (yy - y0) * dy) / length2, 0.0, 1.0)
    near = (xx - (x0 + t * dx)) ** 2 + (yy - (y0 + t * dy)) ** 2 <= radius * radius
    canvas[r0:r1, c0:c1] |= near


def refine_with_keypoints(mask: np.ndarray, points, radius: float | None = None) -> tuple[np.ndarray, bool]:
    """``(refined, changed)``: ``mask`` grown until it holds every keypoint.

    Where a keypoint is outside, capsules along the skeleton segments touching it (21-point hands)
    and a disc on it are added; then the connected piece (8-neighbours) holding most keypoints
    (the larger one on a tie) is kept and its holes are filled. A mask that already holds every
    keypoint is returned unchanged. Points off the image are drawn at the nearest border pixel.
    ``radius`` (px) defaults to :func:`keypoint_radius` per hand.
    """
    mask = _as_mask(mask)
    hands = _as_hands(points)
    inside = keypoints_inside(mask, hands)
    if inside.all():
        return mask.copy(), False
    height, width = mask.shape
    added = np.zeros(mask.shape, dtype=bool)
    drawn = hands.copy()
    drawn[..., 0] = np.clip(drawn[..., 0], 0.0, width - 1e-3)
    drawn[..., 1] = np.clip(drawn[..., 1], 0.0, height - 1e-3)
    for hand, hand_inside in zip(drawn, inside):
        r = float(radius) if radius is not None else keypoint_radius(hand, mask.shape)
        if len(hand) == len(KEYPOINT_NAMES):
            for a, b in SEGMENTS:
                if not (hand_inside[a] and hand_inside[b]):
                    _draw_capsule(added, hand[a], hand[b], r)
        for point in hand[~hand_inside]:
            _draw_capsule(added, point, point, r)
    union = mask | added
    labels, count = ndimage.label(union, structure=np.ones((3, 3), dtype=bool))
    cols = np.floor(drawn[..., 0]).astype(np.int64).ravel()
    rows = np.floor(drawn[..., 1]).astype(np.int64).ravel()
    held = np.bincount(labels[rows, cols], minlength=count + 1)[1:]
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    best = max(range(count), key=lambda i: (held[i], sizes[i]))
    return fill_holes(labels == best + 1), True


@dataclasses.dataclass
class TrainingMasks:
    """Training masks of a set of images with their provenance and keypoint coverage."""

    masks: list[np.ndarray]  # the training targets (refined where keypoints were given)
    classical: list[np.ndarray]  # the classical masks they started from
    refined: list[bool]  # whether keypoints changed the classical mask
    coverage_before: list[float]  # share of keypoints inside the classical mask (NaN: no keypoints)
    coverage_after: list[float]  # the same for the training mask

    def report(self) -> dict:
        """Counts and keypoint coverage before/after refinement (over images that have keypoints)."""
        before = np.array(self.coverage_before, dtype=np.float64)
        after = np.array(self.coverage_after, dtype=np.float64)
        annotated = ~np.isnan(before)

        def stats(values: np.ndarray) -> dict:
            values = values[annotated]
            if values.size == 0:
                return {"keypoint_coverage": None, "all_keypoints_inside": None}
            return {"keypoint_coverage": round(float(values.mean()), 4),
                    "all_keypoints_inside": round(float((values == 1.0).mean()), 4)}

        return {
            "n_images": len(self.masks),
            "n_with_keypoints": int(annotated.sum()),
            "n_refined": int(sum(self.refined)),
            "n_empty": int(sum(not m.any() for m in self.masks)),
            "mean_area_fraction": round(float(np.mean([m.mean() for m in self.masks])), 4) if self.masks else None,
            "before": stats(before),
            "after": stats(after),
        }


def training_masks(
    images: Iterable[np.ndarray],
    keypoints: Sequence | None = None,
    *,
    radius: float | None = None,
    min_fraction: float = 0.02,
) -> TrainingMasks:
    """Classical hand masks of ``images``, refined so that every keypoint lies inside.

    ``images`` are grayscale ``(H, W)`` arrays with a dark background: floats in [0, 1], or integers
    (divided by their type's maximum). ``keypoints`` is ``None`` or, per image, ``None`` or that
    image's keypoints in its pixel coordinates (``(K, 2)`` or ``(hands, K, 2)``). See
    :func:`refine_with_keypoints` for the refinement and :meth:`TrainingMasks.report` for the
    coverage before and after it.
    """
    images = list(images)
    if keypoints is not None and len(keypoints) != len(images):
        raise InvalidInputError(f"got keypoints for {len(keypoints)} images but {len(images)} images")
    result = TrainingMasks([], [], [], [], [])
    for i, image in enumerate(images):
        classical = classical_hand_mask(_as_image01(image), min_fraction=min_fraction)
        points = None if keypoints is None else keypoints[i]
        if points is None or np.asarray(points).size == 0:
            mask, changed, before, after = classical, False, float("nan"), float("nan")
        else:
            before = float(keypoints_inside(classical, _as_hands(points)).mean())
            mask, changed = refine_with_keypoints(classical, points, radius)
            after = float(keypoints_inside(mask, _as_hands(points)).mean())
        result.masks.append(mask)
        result.classical.append(classical)
        result.refined.append(changed)
        result.coverage_before.append(before)
        result.coverage_after.append(after)
    return result
