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
import json
import os
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .._dictconfig import DictConfig
from ..errors import InvalidInputError, ModelLoadError
from ..preprocess import (
    PreprocessConfig,
    preprocess_image,
    resize_image,
    to_model_input,
)
from ..preprocess.masks import NoHandFoundError, check_hand_found, mask_solidity, postprocess_mask

__all__ = [
    "SEGMENTER_FORMAT",
    "HandSegmenter",
    "SegmenterSettings",
    "cached_segmenter",
    "default_segmenter_path",
    "edge_contrast",
    "export_segmenter",
    "hand_masker",
    "load_segmenter",
]

SEGMENTER_FORMAT = "boneage-segmenter"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"


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



class HandSegmenter(nn.Module):
    """A U-Net predicting the hand mask of a radiograph (see the module docstring for the steps).

    ``forward`` maps standardised ``(N, 1, H, W)`` inputs at ``settings.input_size`` to logits;
    :meth:`predict_mask` does the whole job on decoded pixels of any size. ``info`` holds the rest of
    a loaded artefact's config (name, version, training summary, metrics).
    """

    def __init__(self, settings: SegmenterSettings | None = None, **kwargs):
        super().__init__()
        from monai.networks.nets import UNet

        if settings is None:
            settings = SegmenterSettings(**kwargs)
        elif kwargs:
            raise InvalidInputError("pass either settings or keyword arguments, not both")
        self.settings = settings
        self.unet = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=settings.channels,
            strides=settings.strides,
            num_res_units=settings.num_res_units,
        )
        self.info: dict = {}

    @property
    def preprocess(self) -> PreprocessConfig:
        """Pixels -> [0, 1] image at the input size (percentile normalisation, stretch) -> standardised."""
        return PreprocessConfig(image_size=self.settings.input_size, resize="stretch", normalization="percentile",
                                percentiles=(0.5, 99.5), mean=0.5, std=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    def prepare(self, pixels: np.ndarray, source: str = "image") -> np.ndarray:
        """Decoded pixels -> float32 [0, 1] image at the input size (raises UnusableImageError for blank
        or tiny images)."""
        return preprocess_image(pixels, self.preprocess, source)

    def input_probabilities(self, pixels: np.ndarray, source: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """``(image, probabilities)`` on the U-Net's own grid (``settings.input_size``): the prepared
        [0, 1] input and the hand probability of each of its pixels."""
        image = self.prepare(pixels, source)
        return image, self.prepared_probabilities(image)

    @torch.no_grad()
    def prepared_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Hand probabilities of an image already :meth:`prepare`-d (``settings.input_size``, [0, 1])."""
        batch = to_model_input(torch.tensor(np.asarray(image, dtype=np.float32))[None, None], self.preprocess)
        was_training = self.training
        self.eval()
        try:
            logits = self(batch.to(next(self.parameters()).device))[0, 0].float()
        finally:
            self.train(was_training)
        return torch.sigmoid(logits).cpu().numpy()

    def predict_probabilities(self, pixels: np.ndarray, source: str = "image") -> np.ndarray:
        """Hand probability per pixel, float32 at the image's own ``(H, W)``."""
        height, width = np.asarray(pixels).shape[:2]
        return resize_image(self.input_probabilities(pixels, source)[1], (height, width))

    def check_hand(self, pixels: np.ndarray, source: str = "image") -> dict:
        """Refuse an image that shows no hand (:class:`NoHandFoundError`, one line naming ``source``).

        Returns the evidence (``fraction``, ``solidity``, ``confidence``, ``contrast``) when there is
        a hand. See the module docstring for the tests and where their limits come from.
        """
        return self.check_prepared(self.prepare(pixels, source), source)

    def check_prepared(self, image: np.ndarray, source: str = "image", probabilities: np.ndarray | None = None) -> dict:
        """:meth:`check_hand` of an image already :meth:`prepare`-d (and, e.g., inverted back)."""
        if probabilities is None:
            probabilities = self.prepared_probabilities(image)
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
        image, small = self.input_probabilities(pixels, source)
        if check:
            self.check_prepared(image, source, small)
        probabilities = resize_image(small, (height, width))
        if smooth_radius is None:
            smooth_radius = round(self.settings.smooth_fraction * min(probabilities.shape))
        mask = postprocess_mask(probabilities > self.settings.threshold, self.settings.min_fraction, int(smooth_radius))
        check_hand_found(mask, self.settings.min_fraction, source)
        return mask


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
    return Path(str(resources.files("boneage") / "weights" / "segmenter"))


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_segmenter(out_dir: str | Path, segmenter: HandSegmenter, config: dict | None = None,
                     split: dict | None = None) -> Path:
    """Write ``model.safetensors`` (float32) + ``config.json`` (+ ``split.json`` when given) into ``out_dir``.

    ``config`` adds keys (``name``, ``version``, ``training``, ``metrics``, ...) beside the format, the
    architecture and the settings, which are always taken from ``segmenter`` itself.
    """
    import monai
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    state = {k: v.detach().float().contiguous().cpu() for k, v in segmenter.state_dict().items()}
    full = {
        "format": SEGMENTER_FORMAT,
        "format_version": FORMAT_VERSION,
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
    _atomic_write(out_dir / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": SEGMENTER_FORMAT}))
    _atomic_write(out_dir / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(full, indent=2)))
    if split is not None:
        _atomic_write(out_dir / SPLIT_FILE, lambda tmp: tmp.write_text(json.dumps(split, indent=1)))
    return out_dir


def load_segmenter(spec: str | Path | None = None) -> HandSegmenter:
    """Load a segmenter (eval mode, CPU, float32) from ``None``/``'default'`` (the shipped one), an
    exported folder, or its ``model.safetensors`` with ``config.json`` beside it."""
    if spec is None or str(spec) == "default":
        path = default_segmenter_path()
        if not (path / WEIGHTS_FILE).exists() or not (path / CONFIG_FILE).exists():
            raise ModelLoadError(
                f"no hand segmenter is installed in this boneage package ({path}); pass --segmenter PATH "
                "or train one with 'boneage train-segmenter' and copy its model folder there"
            )
    else:
        path = Path(spec)
    if not path.exists():
        raise ModelLoadError(f"{path}: segmenter not found")
    folder = path if path.is_dir() else path.parent
    weights = path if path.suffix == ".safetensors" else folder / WEIGHTS_FILE
    config_file = folder / CONFIG_FILE
    if not weights.exists() or not config_file.exists():
        raise ModelLoadError(f"{path}: not a boneage segmenter folder (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{config_file}: unreadable segmenter config ({type(err).__name__})") from None
    if not isinstance(config, dict) or config.get("format") != SEGMENTER_FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        hint = " (it is a bone age model; pass it as --model)" if found == "boneage-model" else ""
        raise ModelLoadError(f"{config_file}: not a boneage segmenter config{hint}")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelLoadError(f"{config_file}: segmenter format {config.get('format_version')} is newer than this "
                             f"boneage understands ({FORMAT_VERSION}); upgrade boneage")
    try:
        segmenter = HandSegmenter(SegmenterSettings.from_dict(config.get("settings", {})))
    except Exception as err:
        raise ModelLoadError(f"{config_file}: cannot rebuild the segmenter ({err})") from None
    try:
        from safetensors.torch import load_file

        state = load_file(str(weights))
    except Exception as err:
        raise ModelLoadError(f"{weights}: unreadable weights ({type(err).__name__})") from None
    try:
        segmenter.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelLoadError(f"{weights}: weights do not match the segmenter's architecture ({first[:160]})") from None
    segmenter.info = dict(config)
    segmenter.info["source"] = str(path)
    return segmenter.eval()


_CACHE: dict[str, HandSegmenter] = {}
_CACHE_LOCK = threading.Lock()


def cached_segmenter(spec: str | Path | None = "default") -> HandSegmenter:
    """:func:`load_segmenter`, loaded once per process and shared (it is only ever run in eval mode)."""
    key = "default" if spec is None else str(spec)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_segmenter(key)
        return _CACHE[key]


def hand_masker(config: PreprocessConfig, check: bool = True):
    """The ``hand_mask`` callable :func:`~boneage.preprocess.preprocess_image` needs for ``config``
    (``HandSegmenter.predict_mask`` of ``config.segmenter``), or None when it needs none.

    With ``check`` (inference) it refuses images where :meth:`HandSegmenter.check_hand` finds no
    hand; without (building a training set) it only refuses empty masks, as a hand's image that the
    check would refuse still teaches the model.

    A model trained with one segmenter version is refused another (its inputs would differ from the
    ones it learnt from), with a one-line :class:`ModelLoadError`.
    """
    if not config.uses_segmenter:
        return None
    segmenter = cached_segmenter(config.segmenter)
    found = segmenter.info.get("version")
    if config.segmenter_version is not None and found != config.segmenter_version:
        raise ModelLoadError(
            f"this model was trained with hand segmenter version {config.segmenter_version}, but "
            f"{segmenter.info.get('source', config.segmenter)} is version {found}; install the segmenter it was trained with"
        )
    return lambda pixels, source="image": segmenter.predict_mask(pixels, source, check=check)
