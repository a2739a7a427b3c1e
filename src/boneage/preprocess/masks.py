"""Classical (non-learned) hand masks: post-processing, inversion, thresholding, cropping.

Everything here is a pure function of numpy arrays: images are float ``(H, W)`` arrays in [0, 1]
(as :func:`~boneage.preprocess.transforms.preprocess_image` gives them) and masks are boolean
``(H, W)`` arrays, True on the hand.

* ``postprocess_mask`` = ``keep_largest_component`` -> ``fill_holes`` -> optional ``smooth_mask``:
  the clean-up for any hand mask, learned or classical.
* ``is_inverted`` / ``fix_inversion`` find and undo a white background (bones dark).
* ``classical_hand_mask`` finds the hand with Otsu's threshold and edges on a histogram-normalised
  image, then morphology, in the spirit of the training masks of the residual-attention bone age
  network; it is the unsupervised baseline (and a source of training masks) for a learned segmenter.
* ``crop_to_mask``, ``apply_mask`` and ``check_hand_found`` use a mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from ..errors import InvalidInputError, UnusableImageError
from .config import CONTRASTS, HAND_MODES
from .transforms import normalize_intensity, resize_image

__all__ = [
    "NoHandFoundError",
    "apply_mask",
    "check_hand_found",
    "classical_hand_mask",
    "clean_up_hand",
    "crop_to_mask",
    "fill_holes",
    "fix_inversion",
    "is_inverted",
    "keep_largest_component",
    "keypoint_coverage",
    "mask_solidity",
    "otsu_thresholds",
    "postprocess_mask",
    "smooth_mask",
]

HISTOGRAM_BINS = 256
# Distances from the border as fractions of the image height/width ("insets"). The central box
# (CORE_INSET) is mostly palm; the ring is mostly background around the fingers and the wrist.
RING_INSET = (0.15, 0.25)
CORE_INSET = 0.30
SEED_INSET = 0.20  # classical_hand_mask takes its Otsu threshold from pixels at least this far in
GRADIENT_SIGMA = 0.01  # Gaussian smoothing before the gradient, fraction of the short side
BACKGROUND_PERCENTILE = 5.0  # the darkest central pixels seed the background
FIELD_SOLIDITY = 0.92  # a mask this convex is a collimated field, not a hand
FIELD_ROUNDS = 3  # nested fields (a bright field inside a brighter surround) searched at most


class NoHandFoundError(UnusableImageError):
    """The hand mask of an image is (nearly) empty: no hand to assess."""


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InvalidInputError(f"a mask must be a 2-D array, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise InvalidInputError(f"expected a grayscale (H, W) image, got shape {image.shape}; use to_grayscale first")
    return image


def _disk(radius: int) -> np.ndarray:
    """Boolean disk of the given radius (``2 * radius + 1`` square), the structuring element."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius**2


def _inset(shape: tuple[int, int]) -> np.ndarray:
    """Each pixel's distance from the nearest border as a fraction of the height/width (0 to 0.5)."""
    height, width = shape
    inset_y = np.minimum(np.arange(height), np.arange(height)[::-1]) / max(height - 1, 1)
    inset_x = np.minimum(np.arange(width), np.arange(width)[::-1]) / max(width - 1, 1)
    return np.minimum(inset_y[:, None], inset_x[None, :])


def _most_central_component(mask: np.ndarray, core: np.ndarray) -> np.ndarray:
    """The component (8-neighbours) of ``mask`` with most pixels in ``core``; the largest if none is there."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask
    overlap = np.bincount(labels[core], minlength=count + 1)[1:]
    if overlap.max() == 0:
        overlap = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels == int(np.argmax(overlap)) + 1


def mask_solidity(mask: np.ndarray) -> float:
    """Area of a non-empty mask over the area of the convex hull of its pixels' corners (1 for a
    rectangle; a spread hand is about 0.4-0.9)."""
    rows, cols = np.nonzero(mask)
    corners = np.concatenate([np.stack([rows + dy, cols + dx], axis=1) for dy in (0, 1) for dx in (0, 1)])
    return float(mask.sum() / ConvexHull(corners).volume)  # in 2-D the hull's "volume" is its area


def keep_largest_component(mask: np.ndarray, connectivity: int = 2) -> np.ndarray:
    """The largest connected component of ``mask`` (an empty mask stays empty).

    ``connectivity`` 1 joins pixels sharing an edge (4-neighbours), 2 also those sharing a corner
    (8-neighbours). Of components of equal size the first in raster order is kept.
    """
    mask = _as_mask(mask)
    if connectivity not in (1, 2):
        raise InvalidInputError(f"connectivity must be 1 (4-neighbours) or 2 (8-neighbours), got {connectivity}")
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(2, connectivity))
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes set: background regions not connected (4-neighbours) to the image border."""
    return ndimage.binary_fill_holes(_as_mask(mask))


def smooth_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening then closing with a disk of ``radius`` px (0 returns a copy).

    Opening removes spurs and bridges thinner than the disk, closing fills notches narrower than it.
    The image is extended by its edge values first, so a mask running off the border (the forearm)
    stays attached to it.
    """
    mask = _as_mask(mask)
    radius = int(radius)
    if radius < 0:
        raise InvalidInputError(f"smoothing radius must be >= 0, got {radius}")
    if radius == 0:
        return mask.copy()
    disk = _disk(radius)
    padded = np.pad(mask, 2 * radius, mode="edge")
    padded = ndimage.binary_opening(padded, disk)
    padded = ndimage.binary_closing(padded, disk)
    return padded[2 * radius : -2 * radius, 2 * radius : -2 * radius]


def postprocess_mask(mask: np.ndarray, min_fraction: float = 0.02, smooth_radius: int = 0) -> np.ndarray:
    """Clean a hand mask: largest component -> fill holes -> optional smoothing.

    After smoothing (which can split or pierce a mask) the largest component is taken and filled
    again, so the result is always one component without holes, or empty: a largest component
    covering less than ``min_fraction`` of the image is no hand, and an empty mask is returned.
    """
    mask = fill_holes(keep_largest_component(mask))
    if smooth_radius:
        mask = fill_holes(keep_largest_component(smooth_mask(mask, smooth_radius)))
    if mask.sum() < min_fraction * mask.size:
        return np.zeros(mask.shape, dtype=bool)
    return mask


def is_inverted(image01: np.ndarray) -> bool:
    """True when the background is brighter than the hand (a white-background radiograph).

    Rule: a radiograph is centred on the hand, so its central box (pixels at least 30% of the
    height/width from every border) is mostly palm, while a ring 15-25% from the border is mostly
    the background between and beside the fingers and the wrist. The image is inverted when the
    ring's mean is brighter than the central box's mean. The outermost border is deliberately not
    used: it often lies outside the collimated field, which can be bright while the field is dark.
    On the 11,611 RSNA training images at 100 px (none of them inverted) this calls 21 inverted, all
    small dark fields inside a bright surround; of their inversions it misses 21.
    """
    image = _as_image(image01)
    height, width = image.shape
    inset = _inset(image.shape)
    ring = (inset >= RING_INSET[0]) & (inset < RING_INSET[1])
    core = inset >= CORE_INSET
    if not ring.any() or not core.any():
        raise InvalidInputError(f"image is {width}x{height} px, too small to judge its polarity")
    return bool(image[ring].mean() > image[core].mean())


def fix_inversion(image01: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(image, was_inverted)``: the image with a dark background (``1 - image`` if it was inverted)."""
    image = _as_image(image01)
    inverted = is_inverted(image)
    return (1.0 - image if inverted else image.copy()), inverted


def otsu_thresholds(values01: np.ndarray, classes: int = 2, bins: int = HISTOGRAM_BINS) -> tuple[float, ...]:
    """Otsu's thresholds of intensities in [0, 1] (an image or any array), by exhaustive search.

    Returns the ``classes - 1`` (1 or 2) cuts ``t1 < t2`` between bins of a ``bins``-bin histogram
    that maximise the between-class variance; the classes are ``values < t1``, ``t1 <= values < t2``
    and ``values >= t2`` (so the foreground of a two-class split is ``values >= t1``). Constant input
    has no split: every threshold is one bin width above its value.
    """
    if classes not in (2, 3):
        raise InvalidInputError(f"Otsu thresholding supports 2 or 3 classes, got {classes}")
    values = np.clip(np.asarray(values01, dtype=np.float64).ravel(), 0.0, 1.0)
    if values.size == 0:
        raise InvalidInputError("cannot threshold an empty set of values")
    if values.min() == values.max():
        return tuple(float(values[0]) + 1.0 / bins for _ in range(classes - 1))
    counts = np.bincount(np.minimum((values * bins).astype(np.int64), bins - 1), minlength=bins)
    # weight[k], total[k]: pixel count and intensity sum of bins below k. With the overall mean
    # fixed, maximising the between-class variance = maximising sum over classes of total^2 / weight.
    weight = np.concatenate([[0.0], np.cumsum(counts)])
    total = np.concatenate([[0.0], np.cumsum(counts * (np.arange(bins) + 0.5) / bins)])

    def score(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        w = weight[hi] - weight[lo]
        return np.divide((total[hi] - total[lo]) ** 2, w, out=np.zeros(np.broadcast(lo, hi).shape), where=w > 0)

    cuts = np.arange(1, bins)
    if classes == 2:
        best = int(np.argmax(score(0, cuts) + score(cuts, bins)))
        return (float(cuts[best] / bins),)
    low, high = cuts[:, None], cuts[None, :]
    scores = np.where(high > low, score(0, low) + score(low, high) + score(high, bins), -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(cuts[i] / bins), float(cuts[j] / bins)


def classical_hand_mask(
    image01: np.ndarray,
    open_fraction: float = 0.01,
    close_fraction: float = 0.02,
    min_fraction: float = 0.02,
    smooth_radius: int = 0,
    work_size: int = 256,
) -> np.ndarray:
    """Hand mask without learning, from thresholds and edges, then morphology and :func:`postprocess_mask`.

    The image must have a dark background (see :func:`fix_inversion`). Steps, on a copy whose short
    side is at most ``work_size`` px (the mask is scaled back to the input's size):

    1. Histogram normalisation: clip to the 1st/99th percentiles and stretch to [0, 1].
    2. Otsu thresholds (three classes: background, soft tissue, bone) of the central part of the
       image (pixels at least 20% of the side from the border, so that a surround outside the
       collimated field does not set them); pixels above the lower one, opened to cut thin tags and
       bridges, form blobs, and the one overlapping the image centre most is the hand seed. Letters
       and markers elsewhere are separate blobs and are dropped here.
    3. Marker-controlled watershed on the gradient magnitude (edges): the seed grows to the hand's
       outline against background seeded by the image frame and the darkest 5% of the central
       pixels; then a closing and :func:`postprocess_mask` (largest component, holes filled).
    4. A result as convex as a rectangle (solidity >= 0.92; a spread hand is ~0.6-0.85) is a
       collimated field brighter than its surround, not a hand: steps 2-3 are repeated inside it.

    Morphology radii are fractions of the working short side (at least 1 px). Returns an empty mask
    when nothing covering ``min_fraction`` of the image is found (see :func:`check_hand_found`).
    """
    image = _as_image(image01)
    height, width = image.shape
    scale = work_size / min(height, width)
    if scale < 1:
        image = resize_image(image, (max(1, round(height * scale)), max(1, round(width * scale))))
    image = normalize_intensity(image, "percentile", (1.0, 99.0))
    side = min(image.shape)
    open_radius = max(1, round(open_fraction * side))
    close_radius = max(1, round(close_fraction * side))
    smoothed = ndimage.gaussian_filter(image, max(0.5, GRADIENT_SIGMA * side))
    gradient = np.hypot(ndimage.sobel(smoothed, 0), ndimage.sobel(smoothed, 1))
    gradient = np.round(gradient * (255.0 / max(float(gradient.max()), 1e-12))).astype(np.uint8)
    inset = _inset(image.shape)
    core = inset >= CORE_INSET

    def grow(allowed: np.ndarray, stats: np.ndarray) -> np.ndarray:
        values = image[stats]
        seeds = (image >= otsu_thresholds(values, classes=3)[0]) & allowed
        seeds = ndimage.binary_opening(seeds, _disk(open_radius))
        seeds = _most_central_component(seeds, core)
        background = (image <= np.percentile(values, BACKGROUND_PERCENTILE)) | ~allowed
        background[[0, -1], :] = True
        background[:, [0, -1]] = True
        markers = np.where(seeds, 2, np.where(background, 1, 0)).astype(np.int16)
        hand = ndimage.watershed_ift(gradient, markers) == 2
        hand = ndimage.binary_closing(np.pad(hand, close_radius, mode="edge"), _disk(close_radius))
        return postprocess_mask(hand[close_radius:-close_radius, close_radius:-close_radius], min_fraction)

    mask = grow(np.ones(image.shape, dtype=bool), inset >= SEED_INSET)
    for _ in range(FIELD_ROUNDS):
        if not mask.any() or mask_solidity(mask) < FIELD_SOLIDITY:
            break
        field = ndimage.binary_erosion(mask, _disk(close_radius))
        inner = grow(field, field) if field.any() else field
        if not inner.any():
            break
        mask = inner
    if mask.shape != (height, width):
        mask = resize_image(mask.astype(np.float32), (height, width)) >= 0.5
    return postprocess_mask(mask, min_fraction, smooth_radius)


def keypoint_coverage(mask: np.ndarray, points_xy: np.ndarray) -> float:
    """Fraction of points ``(x, y)`` (pixel coordinates of ``mask``, pixel ``i`` spans ``[i, i+1)``) inside the mask.

    Points outside the image count as not covered; no points give NaN.
    """
    mask = _as_mask(mask)
    points = np.asarray(points_xy, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise InvalidInputError(f"points must be an (N, 2) array of (x, y), got shape {points.shape}")
    if len(points) == 0:
        return float("nan")
    cols, rows = np.floor(points[:, 0]).astype(np.int64), np.floor(points[:, 1]).astype(np.int64)
    inside = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
    covered = np.zeros(len(points), dtype=bool)
    covered[inside] = mask[rows[inside], cols[inside]]
    return float(covered.mean())


def crop_to_mask(
    image: np.ndarray, mask: np.ndarray, margin: float = 0.05
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Crop ``image`` to the mask's bounding box grown by ``margin`` x its height/width on each side.

    Returns ``(cropped, (y0, y1, x0, x1))`` with ``cropped = image[y0:y1, x0:x1]``, the box clipped
    to the image. An empty mask raises :class:`NoHandFoundError`.
    """
    mask = _as_mask(mask)
    image = np.asarray(image)
    if image.shape[:2] != mask.shape:
        raise InvalidInputError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    if margin < 0:
        raise InvalidInputError(f"crop margin must be >= 0, got {margin}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise NoHandFoundError("cannot crop to an empty hand mask; no hand was found in the image")
    pad_y = int(round(margin * (rows[-1] + 1 - rows[0])))
    pad_x = int(round(margin * (cols[-1] + 1 - cols[0])))
    y0, y1 = max(0, rows[0] - pad_y), min(mask.shape[0], rows[-1] + 1 + pad_y)
    x0, x1 = max(0, cols[0] - pad_x), min(mask.shape[1], cols[-1] + 1 + pad_x)
    return image[y0:y1, x0:x1].copy(), (int(y0), int(y1), int(x0), int(x1))


def apply_mask(image: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """``image`` with every pixel outside ``mask`` set to ``fill`` (removes tags, letters, background)."""
    mask = _as_mask(mask)
    image = np.asarray(image)
    if image.shape[:2] != mask.shape:
        raise InvalidInputError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    out = image.copy()
    out[~mask] = fill
    return out


def check_hand_found(mask: np.ndarray, min_fraction: float = 0.02, source: str = "image") -> None:
    """Raise :class:`NoHandFoundError` when ``mask`` covers less than ``min_fraction`` of the image."""
    mask = _as_mask(mask)
    fraction = float(mask.mean()) if mask.size else 0.0
    if fraction < min_fraction:
        raise NoHandFoundError(
            f"{source}: no hand found (the hand mask covers {fraction:.1%} of the image, "
            f"needs at least {min_fraction:.1%}); is this a hand radiograph?"
        )


def clean_up_hand(image01: np.ndarray, mask: np.ndarray, mode: str = "crop_mask", margin: float = 0.05,
                  contrast: str = "image", percentiles: tuple[float, float] = (0.5, 99.5),
                  ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The clean-up of a [0, 1] image with its hand mask, as the segmentation bone age papers do it
    -> ``(image, (y0, y1, x0, x1))``, the box being the part of ``image01`` kept (all of it unless cropped).

    1. ``contrast='hand'``: re-stretch intensities to the ``percentiles`` of the hand's pixels, so
       that bright letters, rulers and a grey background do not set the contrast of the bones;
    2. ``mode`` ``'mask'`` or ``'crop_mask'``: every pixel outside the hand is set to 0;
    3. ``mode`` ``'crop'`` or ``'crop_mask'``: crop to the hand's box grown by ``margin`` (see
       :func:`crop_to_mask`).

    ``mode='none'`` with ``contrast='image'`` returns the image unchanged. An empty mask raises
    :class:`NoHandFoundError`.
    """
    image = _as_image(image01)
    mask = _as_mask(mask)
    if image.shape != mask.shape:
        raise InvalidInputError(f"image {image.shape} and mask {mask.shape} differ in size")
    if mode not in HAND_MODES:
        raise InvalidInputError(f"hand clean-up {mode!r} unknown; choose from {HAND_MODES}")
    if contrast not in CONTRASTS:
        raise InvalidInputError(f"contrast {contrast!r} unknown; choose from {CONTRASTS}")
    box = (0, image.shape[0], 0, image.shape[1])
    if mode == "none" and contrast == "image":
        return image, box
    if not mask.any():
        raise NoHandFoundError("no hand found in the image (the hand mask is empty); is this a hand radiograph?")
    if contrast == "hand":
        low, high = np.percentile(image[mask], percentiles)
        if high > low:
            image = np.clip((image - low) * (1.0 / (high - low)), 0.0, 1.0).astype(np.float32)
    if mode in ("mask", "crop_mask"):
        image = apply_mask(image, mask)
    if mode in ("crop", "crop_mask"):
        image, box = crop_to_mask(image, mask, margin)
    return image, box
