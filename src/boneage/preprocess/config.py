"""The preprocessing settings stored with every model (:class:`PreprocessConfig`) and their choices."""

from __future__ import annotations

import dataclasses

from ..errors import InvalidInputError
from ..utils import DictConfig

__all__ = ["CONTRASTS", "HAND_MODES", "HAND_WORK_SIDE", "MIN_IMAGE_SIDE", "NORMALIZATIONS", "RESIZE_POLICIES",
           "PreprocessConfig"]

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
    # The model input's size at inference when it differs from image_size (the training size): a model that
    # takes its detail from the full-resolution image (localize-then-regress crops from it) is given the hand
    # at this size, the same preprocessing otherwise. None: image_size.
    inference_size: tuple[int, int] | None = None

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
        if self.inference_size is not None:
            self.inference_size = tuple(int(v) for v in self.inference_size)
            if len(self.inference_size) != 2 or min(self.inference_size) < 8:
                raise InvalidInputError(f"inference_size must be two sizes of at least 8 px, got {self.inference_size}")
        if self.resize not in RESIZE_POLICIES:
            raise InvalidInputError(f"resize policy {self.resize!r} unknown; choose from {RESIZE_POLICIES}")
        if self.normalization not in NORMALIZATIONS:
            raise InvalidInputError(
                f"normalization {self.normalization!r} unknown; choose from {NORMALIZATIONS}"
            )

    def at_inference(self) -> PreprocessConfig:
        """The config inference prepares images with: ``image_size`` replaced by ``inference_size`` when set."""
        if self.inference_size is None:
            return self
        return dataclasses.replace(self, image_size=self.inference_size, inference_size=None)

    @property
    def uses_segmenter(self) -> bool:
        """True when preprocessing needs a hand mask (clean-up or hand contrast)."""
        return self.hand != "none" or self.contrast == "hand"
