"""The U-Net hand segmenter and its artefact (``model.safetensors`` + ``config.json``).

:class:`HandSegmenter` is a small MONAI ``UNet`` (2-D, one input and one output channel, residual
units) at a fixed input size, as the segmentation stage of the four-stage bone age pipeline, plus
the steps around it that turn any radiograph into a hand mask at the image's own size::

    pixels -> grayscale -> percentile normalisation -> stretch to the input size -> standardise
           -> U-Net -> sigmoid -> resize the probabilities back -> > threshold
           -> postprocess_mask (largest component, holes filled, optional smoothing)
           -> check_hand_found (NoHandFoundError when the mask is empty or too small)

and the "is there a hand at all" check (:meth:`HandSegmenter.check_hand`, on the U-Net's own grid):
the mask must cover ``min_fraction`` of the image; it must not be a convex block (solidity above
``max_solidity``: a collimated field, a plate, a rectangle, never a hand with its fingers); the
U-Net must be sure of its pixels (mean ``|2p - 1|`` at least ``min_confidence``); and what it
outlines must be brighter than the background around it (:func:`edge_contrast` at least
``min_contrast``: not noise or an empty plate with a marker; clearly darker suggests an inverted
image, and the message says so). The limits were set on the shipped segmenter's output for every
hand image in ``../shared/data`` (11,611 RSNA 100 px, 40 RSNA 512 px, 133 DHA): there solidity is at
most 0.947, confidence at least 0.78, and 9 of the 11,784 (0.08%) are refused by the contrast test
(RSNA images with a bright frame or a dark field inside a grey surround, where the mask takes the
frame). It is a check for images with nothing hand-like, not a hand recogniser: a smooth bright blob
or a bright rectangle passes it.

The probabilities, not the binary mask, are resized back, so the outline at a large image's size is
smooth rather than blocky. Everything this needs is stored in the artefact's ``config.json`` (the
architecture, the preprocessing, the post-processing) with the training summary and the mask-quality
metrics; weights are read with safetensors only (no pickle), which is the weights-only guarantee.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..artifacts import (
    SEGMENTER_FORMAT,
    default_artifact_path,
    read_artifact,
    write_artifact,
)
from ..errors import InvalidInputError, ModelLoadError, UnusableImageError
from ..preprocess import (
    PreprocessConfig,
    build_preprocessing,
    resize_image,
    to_model_input,
)
from ..preprocess.masks import (
    NoHandFoundError,
    check_hand_found,
    is_inverted,
    mask_solidity,
    postprocess_mask,
)
from ..utils import DictConfig, LoadedOnce, evaluating

__all__ = [
    "SEGMENTER_FORMAT",
    "HandSegmenter",
    "SegmenterSettings",
    "cached_segmenter",
    "default_preprocess",
    "default_segmenter_path",
    "edge_contrast",
    "export_segmenter",
    "load_segmenter",
]



@dataclasses.dataclass
class SegmenterSettings(DictConfig):
    """Architecture, input and post-processing of a :class:`HandSegmenter` (all stored in its config)."""

    input_size: tuple[int, int] = (128, 128)  # (height, width); images are stretched to it
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    threshold: float = 0.5  # on the sigmoid
    min_fraction: float = 0.02  # a mask covering less of the image is "no hand found"
    smooth_fraction: float = 0.0  # opening + closing radius as a fraction of the short side (0: none)
    max_solidity: float = 0.95  # a mask more convex than this is a field or a block, not a hand
    min_confidence: float = 0.76  # mean |2p - 1| of the U-Net's output below this: no hand
    min_contrast: float = 0.035  # edge_contrast ([0, 1] image) below this: no hand (at or below minus this: inverted?)

    def __post_init__(self):
        self.input_size = tuple(int(v) for v in self.input_size)
        self.channels = tuple(int(v) for v in self.channels)
        self.strides = tuple(int(v) for v in self.strides)
        if len(self.channels) != len(self.strides) + 1:
            raise InvalidInputError(
                f"a U-Net needs one more channel count than strides, got channels {self.channels} and strides {self.strides}"
            )
        factor = int(np.prod(self.strides))
        if len(self.input_size) != 2 or min(self.input_size) < 8 or any(v % factor for v in self.input_size):
            raise InvalidInputError(
                f"segmenter input size must be two sides of at least 8 px divisible by {factor} "
                f"(the U-Net's total stride), got {self.input_size}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise InvalidInputError(f"threshold must be between 0 and 1, got {self.threshold}")
        if not 0.0 <= self.min_fraction < 1.0 or not 0.0 <= self.smooth_fraction < 0.5:
            raise InvalidInputError("min_fraction must be in [0, 1) and smooth_fraction in [0, 0.5)")



def default_preprocess(settings: SegmenterSettings) -> PreprocessConfig:
    """The preprocessing a new segmenter is trained with: percentile windowing, stretched to its input."""
    return PreprocessConfig(image_size=settings.input_size, resize="stretch", normalization="percentile",
                            percentiles=(0.5, 99.5), mean=0.5, std=0.25)


class HandSegmenter(nn.Module):
    """A U-Net predicting the hand mask of a radiograph (see the module docstring for the steps).

    ``forward`` maps standardised ``(N, 1, H, W)`` inputs at ``settings.input_size`` to logits;
    :meth:`predict_mask` does the whole job on decoded pixels of any size. ``preprocess`` is the
    preprocessing it was trained with (read back from a loaded artefact's config); ``info`` holds the
    rest of that config (name, version, training summary, metrics).
    """

    def __init__(self, settings: SegmenterSettings | None = None, preprocess: PreprocessConfig | None = None,
                 **kwargs):
        super().__init__()
        from monai.networks.nets import UNet

        if settings is None:
            settings = SegmenterSettings(**kwargs)
        elif kwargs:
            raise InvalidInputError("pass either settings or keyword arguments, not both")
        self.settings = settings
        self.preprocess = preprocess or default_preprocess(settings)
        if tuple(self.preprocess.image_size) != tuple(settings.input_size):
            raise InvalidInputError(f"the segmenter's preprocessing size {self.preprocess.image_size} differs from "
                                    f"its input size {settings.input_size}")
        self._prepare = build_preprocessing(self.preprocess)
        self.unet = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=settings.channels,
            strides=settings.strides,
            num_res_units=settings.num_res_units,
        )
        self.info: dict = {}
        self.session = None  # an onnxruntime session of the U-Net (with_onnxruntime), else PyTorch runs it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    def onnx_bytes(self) -> bytes:
        """The U-Net as ONNX (input ``image`` (N, 1, H, W) standardised at ``settings.input_size``, output ``logits``)
        with the segmenter's settings, preprocessing and version as the metadata property ``boneage_segmenter``
        (``boneage export --segmenter``)."""
        import json

        from ..runtime import onnx_bytes

        config = {**{k: v for k, v in self.info.items() if k != "source"}, "settings": self.settings.to_dict(),
                  "preprocess": self.preprocess.to_dict()}
        return onnx_bytes(self.unet, (torch.rand(1, 1, *self.settings.input_size),), ["image"], ["logits"],
                          {"boneage_segmenter": json.dumps(config, default=str)})

    def with_onnxruntime(self, threads: int | None = None) -> "HandSegmenter":
        """A copy of this segmenter whose U-Net runs in onnxruntime (exported once and cached,
        :func:`boneage.runtime.cached_session`); this one is left as it is."""
        import copy

        from ..runtime import cached_session

        size = tuple(self.settings.input_size)
        clone = copy.copy(self)
        clone.session = cached_session(self.unet, (torch.rand(1, 1, *size),), ["image"], ["logits"],
                                       extra={"segmenter": self.info.get("version"), "size": size}, threads=threads)
        return clone

    def prepare(self, pixels: np.ndarray, source: str = "image") -> np.ndarray:
        """Decoded pixels (or a [0, 1] image) -> float32 [0, 1] image at the input size, by its own
        preprocessing (raises UnusableImageError for blank or tiny images)."""
        return self._prepare(pixels, source).image

    @torch.no_grad()
    def prepared_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Hand probabilities of an image already :meth:`prepare`-d (``settings.input_size``, [0, 1])."""
        batch = to_model_input(torch.tensor(np.asarray(image, dtype=np.float32))[None, None], self.preprocess)
        if self.session is not None:
            logits = self.session.run(None, {"image": batch.float().numpy()})[0][0, 0]
            return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
        with evaluating(self):
            logits = self(batch.to(next(self.parameters()).device))[0, 0].float()
        return torch.sigmoid(logits).cpu().numpy()

    def predict_probabilities(self, pixels: np.ndarray, source: str = "image") -> np.ndarray:
        """Hand probability per pixel, float32 at the image's own ``(H, W)``."""
        height, width = np.asarray(pixels).shape[:2]
        return resize_image(self.prepared_probabilities(self.prepare(pixels, source)), (height, width))

    def mask_from_probabilities(self, probabilities: np.ndarray, size: tuple[int, int], source: str = "image",
                                smooth_radius: int | None = None) -> np.ndarray:
        """The post-processed mask (one component, no holes) at ``size`` from probabilities on the U-Net's
        grid; :class:`NoHandFoundError` when it covers less than ``settings.min_fraction``."""
        probabilities = resize_image(probabilities, tuple(size))
        if smooth_radius is None:
            smooth_radius = round(self.settings.smooth_fraction * min(probabilities.shape))
        mask = postprocess_mask(probabilities > self.settings.threshold, self.settings.min_fraction, int(smooth_radius))
        check_hand_found(mask, self.settings.min_fraction, source)
        return mask

    def check_hand(self, pixels: np.ndarray, source: str = "image", *, allow_inverted: bool = True) -> dict:
        """Refuse an image that shows no hand (:class:`NoHandFoundError`, one line naming ``source``).

        Returns the evidence (``fraction``, ``solidity``, ``confidence``, ``contrast``) when there is
        a hand. See the module docstring for the tests and where their limits come from, and
        :meth:`check_prepared` for ``allow_inverted``.
        """
        return self.check_prepared(self.prepare(pixels, source), source, allow_inverted=allow_inverted)

    def check_prepared(self, image: np.ndarray, source: str = "image", probabilities: np.ndarray | None = None,
                       *, allow_inverted: bool = True) -> dict:
        """:meth:`check_hand` of an image already :meth:`prepare`-d: the one "is there a hand" policy.

        With ``allow_inverted=False`` (a model that was not trained to undo inversion) an image with a
        bright background whose inverse shows a hand more clearly is refused as inverted
        (:class:`UnusableImageError` saying so), since either reading would give a number that means nothing.
        """
        if probabilities is None:
            probabilities = self.prepared_probabilities(image)
        try:
            found, error = self._measure(image, probabilities, source), None
        except NoHandFoundError as err:
            found, error = None, err
        if not allow_inverted and is_inverted(image):
            try:
                flipped = self._measure(1.0 - image, self.prepared_probabilities(1.0 - image), source)
            except NoHandFoundError:
                flipped = None
            if flipped is not None and (found is None or flipped["contrast"] > found["contrast"]):
                raise UnusableImageError(
                    f"{source}: the image looks inverted (white background, dark bones), which this model was not "
                    "trained on; invert it back, or use a model trained with --fix-inversion"
                )
        if error is not None:
            raise error
        return found

    def _measure(self, image: np.ndarray, probabilities: np.ndarray, source: str) -> dict:
        """The four tests of the module docstring on one orientation; raises NoHandFoundError."""
        settings = self.settings
        mask = postprocess_mask(probabilities > settings.threshold, settings.min_fraction)
        check_hand_found(mask, settings.min_fraction, source)
        solidity = mask_solidity(mask)
        if solidity > settings.max_solidity:
            raise NoHandFoundError(
                f"{source}: no hand found (the only object is a convex block, solidity {solidity:.2f} > "
                f"{settings.max_solidity:.2f}, like a collimated field or a plate, not a hand); is this a hand radiograph?"
            )
        confidence = float(np.mean(np.abs(2.0 * probabilities - 1.0)))
        if confidence < settings.min_confidence:
            raise NoHandFoundError(
                f"{source}: no hand found (the segmenter cannot tell a hand from the background: confidence "
                f"{confidence:.2f} < {settings.min_confidence:.2f}); is this a hand radiograph?"
            )
        contrast = edge_contrast(image, mask)
        if contrast <= -settings.min_contrast:
            raise NoHandFoundError(
                f"{source}: no hand found (what the segmenter outlines is darker than the background around it: "
                f"contrast {contrast:.3f}); if the image is inverted (white background, dark bones), invert it back"
            )
        if contrast < settings.min_contrast:
            raise NoHandFoundError(
                f"{source}: no hand found (what the segmenter outlines is no brighter than the background around it: "
                f"contrast {contrast:.3f} < {settings.min_contrast:.3f}); is this a hand radiograph?"
            )
        return {"fraction": float(mask.mean()), "solidity": solidity, "confidence": confidence, "contrast": contrast}

    def predict_mask(self, pixels: np.ndarray, source: str = "image", smooth_radius: int | None = None,
                     check: bool = False) -> np.ndarray:
        """Boolean hand mask at the image's own size, post-processed (one component, no holes).

        ``smooth_radius`` (px) overrides the stored ``smooth_fraction``. Raises
        :class:`~boneage.preprocess.masks.NoHandFoundError` (one line, naming ``source``) when the
        mask covers less than ``settings.min_fraction``, and (with ``check``) when :meth:`check_hand`
        finds no hand.
        """
        height, width = np.asarray(pixels).shape[:2]
        image = self.prepare(pixels, source)
        probabilities = self.prepared_probabilities(image)
        if check:
            self.check_prepared(image, source, probabilities)
        return self.mask_from_probabilities(probabilities, (height, width), source, smooth_radius)


def edge_contrast(image: np.ndarray, mask: np.ndarray, ring_fraction: float = 0.03) -> float:
    """Median intensity inside ``mask`` minus the median of the ring just outside it (``ring_fraction``
    of the short side wide): how much brighter the outlined object is than its own surround.

    Local, so a hand in a dark collimated field inside a grey surround is still brighter than what
    touches it; noise or an empty plate, where the "mask" is arbitrary, gives about 0; an inverted
    hand gives a negative value.
    """
    from scipy import ndimage

    radius = max(1, round(ring_fraction * min(mask.shape)))
    ring = ndimage.binary_dilation(mask, iterations=radius) & ~mask
    if not ring.any() or not mask.any():
        return 0.0
    return float(np.median(image[mask]) - np.median(image[ring]))


# ------------------------------------------------------------------------------------------ artefact
def default_segmenter_path() -> Path:
    """The folder of the segmenter shipped inside the package (``boneage/weights/segmenter``)."""
    return default_artifact_path(SEGMENTER_FORMAT)


def export_segmenter(out_dir: str | Path, segmenter: HandSegmenter, config: dict | None = None,
                     split: dict | None = None) -> Path:
    """Write the segmenter as a ``boneage-segmenter`` artefact (float32, + ``split.json`` when given).

    ``config`` adds keys (``name``, ``version``, ``training``, ``metrics``, ...) beside the architecture,
    the settings and the preprocessing, which are always taken from ``segmenter`` itself.
    """
    import monai

    full = {
        "name": "hand-unet",
        "version": "unversioned",
        **(config or {}),
        "architecture": {"family": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1},
        "settings": segmenter.settings.to_dict(),
        "preprocess": segmenter.preprocess.to_dict(),
        "inputs": {"shape": ["N", 1, *segmenter.settings.input_size], "dtype": "float32",
                   "meaning": "percentile-normalised grayscale stretched to the input size, (x - 0.5) / 0.25"},
        "outputs": {"shape": ["N", 1, *segmenter.settings.input_size], "meaning": "hand logits (sigmoid > threshold = hand)"},
        "library_versions": {"torch": torch.__version__.split("+")[0], "monai": monai.__version__},
    }
    return write_artifact(out_dir, segmenter.state_dict(), full, format=SEGMENTER_FORMAT, split=split)


def load_segmenter(spec: str | Path | None = None) -> HandSegmenter:
    """Load a segmenter (eval mode, CPU, float32) from ``None``/``'default'`` (the shipped one), an
    exported folder, or its ``model.safetensors`` with ``config.json`` beside it. Its preprocessing is
    the one stored in its config."""
    artifact = read_artifact(spec, SEGMENTER_FORMAT)
    config = artifact.config
    try:
        segmenter = HandSegmenter(SegmenterSettings.from_dict(config.data.get("settings", {})), config.preprocess)
    except Exception as err:
        raise ModelLoadError(f"{artifact.source}: cannot rebuild the segmenter ({err})") from None
    try:
        segmenter.load_state_dict({k: v.float() for k, v in artifact.state_dict.items()}, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelLoadError(f"{artifact.source}: weights do not match the segmenter's architecture ({first[:160]})") from None
    segmenter.info = dict(config.data)
    segmenter.info["source"] = artifact.source
    return segmenter.eval()


_LOADED = LoadedOnce(load_segmenter)


def cached_segmenter(spec: str | Path | None = "default") -> HandSegmenter:
    """:func:`load_segmenter`, loaded once per process and shared (it is only ever run in eval mode)."""
    return _LOADED.get(spec)
