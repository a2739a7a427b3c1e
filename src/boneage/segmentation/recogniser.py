"""The hand-radiograph recogniser: is this image a radiograph of a hand at all?

A small CNN (:class:`HandRecogniser`) looks at the whole image at a low resolution, as two channels
(the windowed grayscale image and its chroma, see :func:`~.recognition_data.recogniser_input`), and
classifies it into :data:`~.recognition_data.CLASSES` (hand radiograph, chest radiograph, radiograph of
another body part, part of a hand, CT, MRI, ultrasound, photograph, document, graphic or noise). An image
is refused when

* the network's probability of "hand radiograph" is below ``min_probability`` (the message names the
  class it found most likely), or
* its features lie far from those of the training hands: the Mahalanobis distance to the hand features
  (their mean and shrunk covariance, stored with the weights) is above ``max_distance``, which catches
  images unlike anything in training (an out-of-distribution score in the manner of Lee et al., 2018).

Both limits are set on hands the network was not trained on (the shipped values and how they were chosen
are in its ``config.json``). The artefact (``boneage-recogniser``: ``model.safetensors`` + ``config.json``)
is read and written by :mod:`boneage.artifacts`; :class:`~.cleanup.HandCleanup` runs the check before the
segmenter's own (mask coverage, convexity, confidence, edge contrast).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..artifacts import RECOGNISER_FORMAT, read_artifact, write_artifact
from ..errors import InvalidInputError, ModelLoadError
from ..preprocess.masks import NoHandFoundError
from ..utils import DictConfig, LoadedOnce, evaluating
from .recognition_data import CLASSES, chroma, recogniser_input

__all__ = ["HandRecogniser", "NotAHandError", "RecogniserSettings", "cached_recogniser", "export_recogniser",
           "load_recogniser"]


class NotAHandError(NoHandFoundError):
    """The image is not a hand radiograph (the recogniser says what it looks like)."""


@dataclasses.dataclass
class RecogniserSettings(DictConfig):
    """Architecture, input and refusal limits of a :class:`HandRecogniser` (all stored in its config)."""

    input_size: tuple[int, int] = (64, 64)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    classes: tuple[str, ...] = CLASSES
    min_probability: float = 0.5  # P(hand radiograph) below this: refused
    max_distance: float = float("inf")  # Mahalanobis distance of the features to the hands' above this: refused

    def __post_init__(self):
        self.input_size = tuple(int(v) for v in self.input_size)
        self.channels = tuple(int(v) for v in self.channels)
        self.classes = tuple(self.classes)
        if not self.classes or self.classes[0] != CLASSES[0]:
            raise InvalidInputError(f"the recogniser's first class must be {CLASSES[0]!r}")


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    layers = []
    for k in range(2):
        layers += [nn.Conv2d(in_channels if k == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class HandRecogniser(nn.Module):
    """CNN classifier of whole images plus the hand features' statistics (see the module docstring)."""

    def __init__(self, settings: RecogniserSettings | None = None):
        super().__init__()
        self.settings = settings or RecogniserSettings()
        channels = self.settings.channels
        blocks, previous = [], 2
        for k, width in enumerate(channels):
            blocks.append(_block(previous, width))
            if k < len(channels) - 1:
                blocks.append(nn.MaxPool2d(2))
            previous = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(previous, len(self.settings.classes)))
        self.register_buffer("hand_mean", torch.zeros(previous))
        self.register_buffer("hand_precision", torch.eye(previous))
        self.info: dict = {}

    @property
    def num_features(self) -> int:
        return self.settings.channels[-1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 2, H, W)`` inputs -> ``(N, F)`` pooled features."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, features)``."""
        features = self.embed(x)
        return self.classifier(features), features

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of features to the training hands' (``(N,)``)."""
        centred = features.float() - self.hand_mean
        return torch.sqrt(torch.clamp((centred @ self.hand_precision * centred).sum(dim=1), min=0.0))

    def fit_hand_statistics(self, features: torch.Tensor, shrinkage: float = 0.1) -> None:
        """Store the mean and the shrunk (towards its diagonal) inverse covariance of hand features."""
        features = features.float()
        mean = features.mean(dim=0)
        covariance = torch.cov((features - mean).T)
        covariance = (1 - shrinkage) * covariance + shrinkage * torch.diag(torch.diag(covariance))
        covariance = covariance + 1e-6 * torch.eye(len(mean)) * covariance.diagonal().mean()
        self.hand_mean.copy_(mean)
        self.hand_precision.copy_(torch.linalg.inv(covariance))

    def prepare(self, image01: np.ndarray, colour: np.ndarray | None = None) -> np.ndarray:
        """A windowed [0, 1] grayscale image (and its chroma) -> the ``(2, H, W)`` input."""
        return recogniser_input(image01, colour, self.settings.input_size)

    @torch.no_grad()
    def scores(self, inputs: np.ndarray) -> dict:
        """``(N, 2, H, W)`` inputs -> ``probabilities (N, C)``, ``distance (N,)`` as numpy arrays."""
        with evaluating(self):
            logits, features = self(torch.as_tensor(np.asarray(inputs, np.float32)))
        return {"probabilities": torch.softmax(logits.float(), dim=1).numpy(), "distance": self.distance(features).numpy()}

    def check_pixels(self, pixels: np.ndarray, source: str = "image") -> dict:
        """:meth:`check` of decoded pixels (any dtype, gray or colour): windowed as a model's preprocessing
        windows them."""
        from ..preprocess import normalize_intensity, to_grayscale

        return self.check(normalize_intensity(to_grayscale(pixels)), chroma(pixels), source)

    def check(self, image01: np.ndarray, colour: np.ndarray | None = None, source: str = "image") -> dict:
        """Refuse an image that is not a hand radiograph (:class:`NotAHandError`, one line naming ``source``
        and what it looks like); returns the evidence (``p_hand``, ``distance``, ``looks_like``) otherwise."""
        found = self.scores(self.prepare(image01, colour)[None])
        probabilities, distance = found["probabilities"][0], float(found["distance"][0])
        best = int(np.argmax(probabilities[1:])) + 1
        evidence = {"p_hand": float(probabilities[0]), "distance": distance,
                    "looks_like": self.settings.classes[best], "p_looks_like": float(probabilities[best])}
        settings = self.settings
        if evidence["p_hand"] < settings.min_probability:
            raise NotAHandError(
                f"{source}: not a hand radiograph (it looks like {_article(evidence['looks_like'])} {evidence['looks_like']}, "
                f"probability {evidence['p_looks_like']:.2f}); boneage assesses radiographs of the hand and wrist")
        if distance > settings.max_distance:
            raise NotAHandError(
                f"{source}: not a hand radiograph (it is unlike every hand radiograph boneage was trained on: "
                f"feature distance {distance:.1f} > {settings.max_distance:.1f}); boneage assesses radiographs "
                "of the hand and wrist")
        return evidence


def _article(noun: str) -> str:
    """'an' before a vowel sound (an ultrasound image, an MRI slice), else 'a'."""
    return "an" if noun[:1].lower() in "aeiou" or noun.startswith(("MRI", "X-")) else "a"


# ------------------------------------------------------------------------------------------ artefact
def export_recogniser(out_dir: str | Path, recogniser: HandRecogniser, config: dict | None = None) -> Path:
    """Write the recogniser as a ``boneage-recogniser`` artefact (``config`` adds name, version, metrics...)."""
    full = {"name": "hand-recogniser", "version": "unversioned", **(config or {}),
            "settings": recogniser.settings.to_dict(),
            "inputs": {"shape": ["N", 2, *recogniser.settings.input_size], "dtype": "float32",
                       "meaning": "percentile-windowed grayscale and chroma, each stretched to the input size, in [0, 1]"}}
    return write_artifact(out_dir, recogniser.state_dict(), full, format=RECOGNISER_FORMAT)


def load_recogniser(spec: str | Path | None = None) -> HandRecogniser:
    """Load a recogniser (eval mode, CPU) from ``None``/``'default'`` (the shipped one) or a folder."""
    artifact = read_artifact(spec, RECOGNISER_FORMAT)
    try:
        recogniser = HandRecogniser(RecogniserSettings.from_dict(artifact.config.data.get("settings", {})))
        recogniser.load_state_dict({k: v.float() for k, v in artifact.state_dict.items()}, strict=True)
    except Exception as err:  # noqa: BLE001 - a config or weights this version cannot rebuild
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise ModelLoadError(f"{artifact.source}: cannot rebuild the hand recogniser ({reason})") from None
    recogniser.info = {**artifact.config.data, "source": artifact.source}
    return recogniser.eval()


_LOADED = LoadedOnce(load_recogniser)


def cached_recogniser(spec: str | Path | None = "default") -> HandRecogniser:
    """:func:`load_recogniser`, loaded once per process and shared (only ever run in eval mode)."""
    return _LOADED.get(spec)
