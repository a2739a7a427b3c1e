"""Pure array transforms from a decoded radiograph to the model's input, each tested against closed-form
results: ``to_grayscale``, ``check_usable``, ``normalize_intensity``, ``resize_image``, ``working_image`` and
``to_model_input`` (standardisation with the mean and SD stored in the config). :mod:`.pipeline` composes
them, as a model's :class:`~boneage.preprocess.config.PreprocessConfig` says.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError, UnusableImageError
from .config import (
    HAND_WORK_SIDE,
    MIN_IMAGE_SIDE,
    NORMALIZATIONS,
    RESIZE_POLICIES,
    PreprocessConfig,
)

__all__ = [
    "check_usable",
    "chroma",
    "reduce_long_side",
    "working_side",
    "normalize_intensity",
    "resize_image",
    "to_grayscale",
    "to_model_input",
    "working_image",
]


def to_grayscale(pixels: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 from grayscale, gray+alpha, RGB or RGBA (ITU-R 601 luma).

    Alpha is composited onto black, so a transparent background reads as background, not as its
    (often white) stored colour.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        return pixels.astype(np.float32, copy=False)
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4):
        channels = pixels.shape[2]
        if channels in (1, 2):
            gray = pixels[..., 0].astype(np.float32)
        else:
            gray = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if channels in (2, 4):
            alpha = pixels[..., -1].astype(np.float32)
            full = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, float(alpha.max()) or 1.0)
            gray *= alpha / full
        return gray
    raise InvalidInputError(f"cannot convert an array of shape {pixels.shape} to grayscale")


def chroma(pixels: np.ndarray) -> np.ndarray | None:
    """How coloured each pixel of decoded pixels is, ``max(R, G, B) - min(R, G, B)`` in [0, 1]; None for a
    grayscale image (what :func:`to_grayscale` drops)."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        return None
    rgb = pixels[..., :3].astype(np.float32)
    full = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, max(float(rgb.max()), 1.0))
    return (rgb.max(axis=2) - rgb.min(axis=2)) / full


def normalize_intensity(
    image: np.ndarray, method: str = "percentile", percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Map intensities to [0, 1]: clip to the given percentiles (or min/max) and rescale linearly.

    A constant image maps to all zeros. The percentile version ignores a few saturated pixels
    (burnt-in text, markers), which the bit depth of the file does not predict.
    """
    image = np.asarray(image, dtype=np.float32)
    finite_mask = np.isfinite(image)
    all_finite = bool(finite_mask.all())
    finite = image.ravel() if all_finite else image[finite_mask]
    if finite.size == 0:
        return np.zeros_like(image, dtype=np.float32)
    low, high = float(finite.min()), float(finite.max())
    if method == "percentile":
        # Percentiles on a subsample: exact enough and O(1) in the image size.
        sample = finite if finite.size <= 1_000_000 else finite[:: finite.size // 1_000_000 + 1]
        p_low, p_high = np.percentile(sample, percentiles)
        if p_high > p_low:  # else (e.g. a small bright object on a uniform field) keep min/max
            low, high = float(p_low), float(p_high)
    elif method != "minmax":
        raise InvalidInputError(f"normalization {method!r} unknown; choose from {NORMALIZATIONS}")
    if not high > low:
        return np.zeros_like(image, dtype=np.float32)
    out = image - low if all_finite else np.nan_to_num(image, nan=low, posinf=high, neginf=low) - low
    out *= 1.0 / (high - low)
    return np.clip(out, 0.0, 1.0, out=out)


def check_usable(image: np.ndarray, source: str = "image") -> None:
    """Refuse images that hold nothing to assess: smaller than 32 px or of a single intensity."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise UnusableImageError(
            f"{source}: image is {width}x{height} px, too small to assess (needs at least {MIN_IMAGE_SIDE} px a side)"
        )
    finite = image[np.isfinite(image)] if not np.isfinite(image).all() else image
    if finite.size == 0 or float(finite.max()) == float(finite.min()):
        raise UnusableImageError(f"{source}: image is blank (every pixel has the same value); is this a radiograph?")


def resize_image(image: np.ndarray, size: tuple[int, int], policy: str = "stretch") -> np.ndarray:
    """Resize a float ``(H, W)`` image to ``size = (height, width)``.

    ``stretch`` scales each axis independently; ``pad`` keeps the aspect ratio, scales the long side
    to fit and centres the result on zeros. Downsampling is antialiased (Pillow's area-aware filter).
    """
    from PIL import Image

    if policy not in RESIZE_POLICIES:
        raise InvalidInputError(f"resize policy {policy!r} unknown; choose from {RESIZE_POLICIES}")
    height, width = int(size[0]), int(size[1])
    image = np.asarray(image, dtype=np.float32)
    src_h, src_w = image.shape
    if policy == "stretch":
        target = (height, width)
    else:
        scale = min(height / src_h, width / src_w)
        target = (max(1, round(src_h * scale)), max(1, round(src_w * scale)))
    if (src_h, src_w) == target:
        resized = image.copy()
    else:
        resized = np.asarray(
            Image.fromarray(image, mode="F").resize((target[1], target[0]), Image.Resampling.BILINEAR),
            dtype=np.float32,
        )
    if policy == "stretch":
        return resized
    out = np.zeros((height, width), dtype=np.float32)
    top, left = (height - target[0]) // 2, (width - target[1]) // 2
    out[top : top + target[0], left : left + target[1]] = resized
    return out


def reduce_long_side(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` with its long side reduced to ``side`` px (aspect kept); smaller images are returned as they are."""
    height, width = image.shape
    scale = side / max(height, width)
    if scale >= 1:
        return image
    return resize_image(image, (max(1, round(height * scale)), max(1, round(width * scale))))


def working_side(config: PreprocessConfig) -> int:
    """The long side at which the hand is segmented and cropped: ``max(HAND_WORK_SIDE, 2 x the input size)``."""
    return max(HAND_WORK_SIDE, 2 * max(config.image_size))


def working_image(image01: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """``image01`` reduced to :func:`working_side` (smaller images unchanged)."""
    return reduce_long_side(image01, working_side(config))


def to_model_input(batch, config: PreprocessConfig):
    """Standardise ``[0, 1]`` images (numpy or torch, any shape) with the config's mean and SD."""
    return (batch - config.mean) / config.std
