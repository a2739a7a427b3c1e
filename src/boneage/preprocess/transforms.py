"""Array transforms from a decoded radiograph to the model's input.

``preprocess_image(pixels, config)`` = ``to_grayscale`` -> ``normalize_intensity`` -> ``resize_image``,
giving a float32 ``(H, W)`` array in [0, 1]. ``to_model_input`` standardises a batch of those with the
mean and SD stored in the same config. Each function is pure and tested against closed-form results.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InvalidInputError, UnusableImageError

__all__ = [
    "PreprocessConfig",
    "check_usable",
    "normalize_intensity",
    "preprocess_image",
    "resize_image",
    "to_grayscale",
    "to_model_input",
]

MIN_IMAGE_SIDE = 32  # px; smaller images hold no assessable anatomy
RESIZE_POLICIES = ("stretch", "pad")
NORMALIZATIONS = ("percentile", "minmax")


@dataclasses.dataclass
class PreprocessConfig:
    """Everything inference needs to turn pixels into the tensor the model was trained on."""

    image_size: tuple[int, int] = (128, 128)  # (height, width)
    resize: str = "stretch"  # "stretch" to the size, or "pad" (keep aspect ratio, pad with zeros)
    normalization: str = "percentile"  # "percentile" (clip to low/high percentiles) or "minmax"
    percentiles: tuple[float, float] = (0.5, 99.5)
    mean: float = 0.5  # standardisation of the [0, 1] image before the network
    std: float = 0.25

    def __post_init__(self):
        self.image_size = tuple(int(v) for v in self.image_size)
        self.percentiles = tuple(float(v) for v in self.percentiles)
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise InvalidInputError(f"image_size must be two sizes of at least 8 px, got {self.image_size}")
        if self.resize not in RESIZE_POLICIES:
            raise InvalidInputError(f"resize policy {self.resize!r} unknown; choose from {RESIZE_POLICIES}")
        if self.normalization not in NORMALIZATIONS:
            raise InvalidInputError(
                f"normalization {self.normalization!r} unknown; choose from {NORMALIZATIONS}"
            )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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


def preprocess_image(pixels: np.ndarray, config: PreprocessConfig, source: str = "image") -> np.ndarray:
    """Decoded pixels -> float32 ``(H, W)`` in [0, 1] at ``config.image_size``.

    Raises :class:`UnusableImageError` (naming ``source``) for blank or tiny images.
    """
    gray = to_grayscale(pixels)
    check_usable(gray, source)
    norm = normalize_intensity(gray, config.normalization, config.percentiles)
    return resize_image(norm, config.image_size, config.resize)


def to_model_input(batch, config: PreprocessConfig):
    """Standardise ``[0, 1]`` images (numpy or torch, any shape) with the config's mean and SD."""
    return (batch - config.mean) / config.std
