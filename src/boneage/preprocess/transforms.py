"""Array transforms from a decoded radiograph to the model's input.

``preprocess_image(pixels, config)`` = ``to_grayscale`` -> ``normalize_intensity`` -> ``resize_image``,
giving a float32 ``(H, W)`` array in [0, 1]. ``to_model_input`` standardises a batch of those with the
mean and SD stored in the same config. Each function is pure and tested against closed-form results.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._dictconfig import DictConfig
from ..errors import InvalidInputError, UnusableImageError

__all__ = [
    "PreprocessConfig",
    "HAND_MODES",
    "check_usable",
    "normalize_intensity",
    "preprocess_image",
    "resize_image",
    "to_grayscale",
    "to_model_input",
    "working_image",
]

MIN_IMAGE_SIDE = 32  # px; smaller images hold no assessable anatomy
RESIZE_POLICIES = ("stretch", "pad")
NORMALIZATIONS = ("percentile", "minmax")
HAND_MODES = ("none", "mask", "crop", "crop_mask")  # what the hand mask is used for
CONTRASTS = ("image", "hand")  # intensity percentiles taken over the whole image or over the hand
HAND_WORK_SIDE = 512  # px; the long side an image is reduced to (at most) before it is segmented


@dataclasses.dataclass
class PreprocessConfig(DictConfig):
    """Everything inference needs to turn pixels into the tensor the model was trained on."""

    image_size: tuple[int, int] = (128, 128)  # (height, width)
    resize: str = "stretch"  # "stretch" to the size, or "pad" (keep aspect ratio, pad with zeros)
    normalization: str = "percentile"  # "percentile" (clip to low/high percentiles) or "minmax"
    percentiles: tuple[float, float] = (0.5, 99.5)
    mean: float = 0.5  # standardisation of the [0, 1] image before the network
    std: float = 0.25
    # Clean-up with a hand mask (the segmenter named below): "mask" sets everything outside the hand
    # to 0 (letters, markers, rulers), "crop" crops to the hand's box grown by crop_margin, "crop_mask"
    # does both. "none" (and the defaults below) is the plain pipeline of models trained before.
    hand: str = "none"
    crop_margin: float = 0.05  # fraction of the hand box's height/width added on each side
    fix_inversion: bool = False  # detect a white background and invert the image back
    contrast: str = "image"  # "hand": percentile normalisation over the hand's pixels only
    segmenter: str = "default"  # the segmenter folder, or "default" (the one shipped in the package)
    segmenter_version: str | None = None  # the version trained with; another one is refused

    def __post_init__(self):
        self.image_size = tuple(int(v) for v in self.image_size)
        self.percentiles = tuple(float(v) for v in self.percentiles)
        if self.hand not in HAND_MODES:
            raise InvalidInputError(f"hand clean-up {self.hand!r} unknown; choose from {HAND_MODES}")
        if self.contrast not in CONTRASTS:
            raise InvalidInputError(f"contrast {self.contrast!r} unknown; choose from {CONTRASTS}")
        if not 0.0 <= float(self.crop_margin) <= 1.0:
            raise InvalidInputError(f"crop_margin must be between 0 and 1, got {self.crop_margin}")
        self.crop_margin = float(self.crop_margin)
        self.fix_inversion = bool(self.fix_inversion)
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise InvalidInputError(f"image_size must be two sizes of at least 8 px, got {self.image_size}")
        if self.resize not in RESIZE_POLICIES:
            raise InvalidInputError(f"resize policy {self.resize!r} unknown; choose from {RESIZE_POLICIES}")
        if self.normalization not in NORMALIZATIONS:
            raise InvalidInputError(
                f"normalization {self.normalization!r} unknown; choose from {NORMALIZATIONS}"
            )

    @property
    def uses_segmenter(self) -> bool:
        """True when preprocessing needs a hand mask (clean-up or hand contrast)."""
        return self.hand != "none" or self.contrast == "hand"



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


def working_image(image01: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """``image01`` with its long side reduced to ``max(HAND_WORK_SIDE, 2 x the input size)`` (aspect
    kept; smaller images unchanged): the resolution at which the hand is segmented and cropped."""
    side = max(HAND_WORK_SIDE, 2 * max(config.image_size))
    height, width = image01.shape
    scale = side / max(height, width)
    if scale >= 1:
        return image01
    return resize_image(image01, (max(1, round(height * scale)), max(1, round(width * scale))))


def preprocess_image(pixels: np.ndarray, config: PreprocessConfig, source: str = "image",
                     hand_mask=None) -> np.ndarray:
    """Decoded pixels -> float32 ``(H, W)`` in [0, 1] at ``config.image_size``.

    grayscale -> refuse blank/tiny images -> percentile normalisation -> (``fix_inversion``) ->
    (hand clean-up) -> resize. The hand clean-up (``config.uses_segmenter``) works on
    :func:`working_image` and needs ``hand_mask``, a callable ``(image01, source) -> bool mask`` of
    the same size that raises :class:`~boneage.preprocess.masks.NoHandFoundError` when there is no
    hand (:func:`boneage.segmentation.hand_masker` builds it from the config); see
    :func:`~boneage.preprocess.masks.clean_up_hand` for the steps.

    Raises :class:`UnusableImageError` (naming ``source``) for blank or tiny images and images with no hand.
    """
    gray = to_grayscale(pixels)
    check_usable(gray, source)
    norm = normalize_intensity(gray, config.normalization, config.percentiles)
    if config.fix_inversion:
        from .masks import fix_inversion

        norm, _ = fix_inversion(norm)
    if config.uses_segmenter:
        from .masks import clean_up_hand

        if hand_mask is None:
            raise InvalidInputError(
                f"this preprocessing (hand={config.hand!r}, contrast={config.contrast!r}) needs a hand segmenter; "
                "build the mask function with boneage.segmentation.hand_masker(config)"
            )
        work = working_image(norm, config)
        norm = clean_up_hand(work, hand_mask(work, source), config.hand, config.crop_margin, config.contrast,
                             config.percentiles)
    return resize_image(norm, config.image_size, config.resize)


def to_model_input(batch, config: PreprocessConfig):
    """Standardise ``[0, 1]`` images (numpy or torch, any shape) with the config's mean and SD."""
    return (batch - config.mean) / config.std
