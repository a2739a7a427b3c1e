"""A model's preprocessing as composed steps, in the manner of MONAI's ``Compose`` of array transforms.

``build_preprocessing(config, hand_step)`` turns a stored :class:`PreprocessConfig` into one callable::

    pixels -> grayscale -> CheckUsable -> NormalizeIntensity -> (FixInversion) -> (WorkingResolution)
           -> (the hand step) -> Resize  =  Prepared (the model input and where it came from)

Each step takes and returns a :class:`Prepared`, which carries the current image with its geometry: the
part of the decoded radiograph it shows (``region``, moved by a crop) and, after :class:`Resize`, where that
part lies inside the model input (``content``). So anything found on the model input (a box, a heat map)
can be mapped back onto the radiograph at its own resolution (:meth:`Prepared.input_to_original`).

The hand step (find the hand, check it, mask and crop) belongs to :mod:`boneage.segmentation`, which
passes it in (:func:`boneage.segmentation.model_preprocessing`); this package never imports it. A
config that needs a hand mask refuses to be built without one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from ..errors import InvalidInputError
from .config import HAND_WORK_SIDE, PreprocessConfig
from .transforms import (
    check_usable,
    chroma,
    normalize_intensity,
    reduce_long_side,
    resize_image,
    to_grayscale,
    working_side,
)

__all__ = [
    "CheckUsable",
    "Compose",
    "FixInversion",
    "NormalizeIntensity",
    "Prepared",
    "Resize",
    "WorkingResolution",
    "build_preprocessing",
    "preprocess_image",
    "preprocessing_steps",
]

Step = Callable[["Prepared"], "Prepared"]


@dataclasses.dataclass
class Prepared:
    """One radiograph on its way through a model's preprocessing.

    ``image`` is the current float32 ``(H, W)`` image in [0, 1] (the model input once :class:`Resize`
    ran); ``region`` = ``(y0, y1, x0, x1)`` the part of the decoded image (``original_hw``) it shows, in
    that image's pixels; ``content`` = ``(top, left, height, width)`` where that part lies inside the
    model input (set by :class:`Resize`). ``inverted``: the intensities were inverted back;
    ``mask``: the hand mask on the working image (before a crop); ``hand``: what the hand check measured;
    ``chroma``: how coloured the decoded image was, per pixel (None for grayscale).
    """

    image: np.ndarray
    source: str
    original_hw: tuple[int, int]
    region: tuple[float, float, float, float]
    content: tuple[int, int, int, int] | None = None
    inverted: bool = False
    mask: np.ndarray | None = dataclasses.field(default=None, repr=False)
    hand: dict | None = None
    chroma: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, source: str = "image") -> Prepared:
        """The start of the pipeline: decoded pixels (any dtype, gray or colour) as float32 grayscale, with
        the colour that grayscale drops kept as ``chroma`` (None for a grayscale image)."""
        gray = to_grayscale(pixels)
        height, width = gray.shape
        return cls(image=gray, source=source, original_hw=(height, width), region=(0.0, float(height), 0.0, float(width)),
                   chroma=chroma(pixels))

    def cropped(self, image: np.ndarray, box: tuple[int, int, int, int]) -> Prepared:
        """The state after cropping the current image to ``box`` = ``(y0, y1, x0, x1)`` (its pixels)."""
        height, width = self.image.shape
        y0, y1, x0, x1 = self.region
        sy, sx = (y1 - y0) / height, (x1 - x0) / width
        region = (y0 + box[0] * sy, y0 + box[1] * sy, x0 + box[2] * sx, x0 + box[3] * sx)
        return dataclasses.replace(self, image=image, region=region)

    def to_uint8(self) -> np.ndarray:
        """The image quantised to 8 bits exactly as the training cache stores it."""
        return np.round(self.image * 255.0).astype(np.uint8)

    def input_to_original(self, xy: np.ndarray) -> np.ndarray:
        """Points ``(..., 2)`` as ``(x, y)`` in model-input pixels -> the same points in the decoded
        image's pixels (boxes ``(x0, y0, x1, y1)``: pass them as ``(..., 2, 2)``)."""
        if self.content is None:
            raise InvalidInputError("the image has not been resized to the model input yet")
        top, left, height, width = self.content
        y0, y1, x0, x1 = self.region
        xy = np.asarray(xy, dtype=np.float64)
        x = x0 + (xy[..., 0] - left) * (x1 - x0) / width
        y = y0 + (xy[..., 1] - top) * (y1 - y0) / height
        return np.stack([x, y], axis=-1)

    def original_to_input(self, xy: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`input_to_original`."""
        if self.content is None:
            raise InvalidInputError("the image has not been resized to the model input yet")
        top, left, height, width = self.content
        y0, y1, x0, x1 = self.region
        xy = np.asarray(xy, dtype=np.float64)
        u = left + (xy[..., 0] - x0) * width / (x1 - x0)
        v = top + (xy[..., 1] - y0) * height / (y1 - y0)
        return np.stack([u, v], axis=-1)


# ------------------------------------------------------------------------------------------- steps
class CheckUsable:
    """Refuse blank and tiny images (:func:`~boneage.preprocess.transforms.check_usable`)."""

    def __call__(self, state: Prepared) -> Prepared:
        check_usable(state.image, state.source)
        return state

    def __repr__(self) -> str:
        return "CheckUsable()"


@dataclasses.dataclass
class NormalizeIntensity:
    """Percentile (or min/max) windowing to [0, 1]."""

    method: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __call__(self, state: Prepared) -> Prepared:
        return dataclasses.replace(state, image=normalize_intensity(state.image, self.method, self.percentiles))


class FixInversion:
    """Invert a white-background radiograph back (:func:`~boneage.preprocess.masks.fix_inversion`)."""

    def __call__(self, state: Prepared) -> Prepared:
        from .masks import fix_inversion

        image, inverted = fix_inversion(state.image)
        return dataclasses.replace(state, image=image, inverted=state.inverted != inverted)

    def __repr__(self) -> str:
        return "FixInversion()"


@dataclasses.dataclass
class WorkingResolution:
    """Reduce the long side to ``side`` px at most (aspect kept): where the hand is found and cropped."""

    side: int = HAND_WORK_SIDE

    def __call__(self, state: Prepared) -> Prepared:
        return dataclasses.replace(state, image=reduce_long_side(state.image, self.side))


@dataclasses.dataclass
class Resize:
    """To the model's input size: ``stretch`` each axis, or ``pad`` (aspect kept, centred on zeros)."""

    size: tuple[int, int]
    policy: str = "stretch"

    def __call__(self, state: Prepared) -> Prepared:
        height, width = int(self.size[0]), int(self.size[1])
        src_h, src_w = state.image.shape
        if self.policy == "pad":
            scale = min(height / src_h, width / src_w)
            target = (max(1, round(src_h * scale)), max(1, round(src_w * scale)))
            content = ((height - target[0]) // 2, (width - target[1]) // 2, *target)
        else:
            content = (0, 0, height, width)
        image = resize_image(state.image, (height, width), self.policy)
        return dataclasses.replace(state, image=image, content=content)


class Compose:
    """Steps applied in order to a :class:`Prepared`; called on decoded pixels it starts one."""

    def __init__(self, steps: Sequence[Step]):
        self.steps = list(steps)

    def __call__(self, pixels: np.ndarray | Prepared, source: str = "image") -> Prepared:
        state = pixels if isinstance(pixels, Prepared) else Prepared.from_pixels(pixels, source)
        for step in self.steps:
            state = step(state)
        return state

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.steps))})"


# ----------------------------------------------------------------------------------------- building
def preprocessing_steps(config: PreprocessConfig, hand_step: Step | None = None) -> list[Step]:
    """The steps ``config`` asks for, with ``hand_step`` (finding, checking and cleaning up the hand)
    after the working resolution when the config uses a hand mask, else right after normalisation."""
    steps: list[Step] = [CheckUsable(), NormalizeIntensity(config.normalization, config.percentiles)]
    if config.fix_inversion:
        steps.append(FixInversion())
    if config.uses_segmenter:
        if hand_step is None:
            raise InvalidInputError(
                f"this preprocessing (hand={config.hand!r}, contrast={config.contrast!r}) needs a hand segmenter; "
                "build it with boneage.segmentation.model_preprocessing(config)"
            )
        steps.append(WorkingResolution(working_side(config)))
    if hand_step is not None:
        steps.append(hand_step)
    steps.append(Resize(config.image_size, config.resize))
    return steps


def build_preprocessing(config: PreprocessConfig, hand_step: Step | None = None) -> Compose:
    """The composed preprocessing of ``config`` (see :func:`preprocessing_steps`)."""
    return Compose(preprocessing_steps(config, hand_step))


def preprocess_image(pixels: np.ndarray, config: PreprocessConfig, source: str = "image",
                     hand_step: Step | None = None) -> np.ndarray:
    """Decoded pixels -> float32 ``(H, W)`` in [0, 1] at ``config.image_size`` (the image of
    :func:`build_preprocessing`'s result). Raises :class:`~boneage.errors.UnusableImageError` (naming
    ``source``) for blank or tiny images, and, through the hand step, images with no hand."""
    return build_preprocessing(config, hand_step)(pixels, source).image
