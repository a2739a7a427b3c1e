"""Degradations of a decoded radiograph that reproduce how a user's image differs from the training images:
another resolution and resampling filter (aliasing included), blur, noise, gamma and contrast, JPEG
artefacts, a small rotation, partial collimation, a lead marker and a ruler pasted in.

A degradation is written ``KIND[:PARAM[:PARAM]]`` (:func:`parse_degradation`), e.g. ``resample:64:nearest``,
``blur:1.5``, ``noise:0.05``, ``gamma:1.5``, ``contrast:0.6``, ``jpeg:20``, ``rotate:10``, ``collimate:0.1``,
``marker``. Applied to decoded pixels (any dtype, grayscale or colour) it returns a float32 grayscale image in
[0, 1] (the input min-max scaled first), which the model's own preprocessing then takes as it takes a file.
Random parts (noise) are seeded by the caller, so the same image gets the same degradation every time.
``boneage evaluate --degrade SPEC`` measures a model on degraded copies of a collection.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from ..errors import InvalidInputError
from .transforms import to_grayscale

__all__ = ["DEGRADATIONS", "Degradation", "jpeg_roundtrip", "parse_degradation"]

FILTERS = ("nearest", "box", "bilinear", "bicubic", "lanczos")
# kind -> (parameter names, defaults, one line of help)
DEGRADATIONS = {
    "resample": (("long_side", "filter"), (None, "lanczos"), "the long side resized to N px with a PIL filter (nearest aliases)"),
    "blur": (("sigma",), (1.0,), "Gaussian blur, SD in pixels of the image as given"),
    "noise": (("sd",), (0.03,), "Gaussian noise, SD as a fraction of the intensity range"),
    "gamma": (("gamma",), (1.5,), "intensities raised to this power"),
    "contrast": (("factor",), (0.6,), "contrast scaled about mid-grey"),
    "jpeg": (("quality",), (25,), "JPEG compression at this quality (1-95)"),
    "rotate": (("degrees",), (10.0,), "rotation about the centre, black corners"),
    "collimate": (("fraction",), (0.1,), "collimator shutters: this fraction of the image blacked out at the top and left"),
    "marker": ((), (), "a bright lead letter in the top-left corner and a ruler along the right edge"),
}


@dataclasses.dataclass(frozen=True)
class Degradation:
    """One degradation: ``kind`` (a key of :data:`DEGRADATIONS`) and its parameters."""

    kind: str
    params: tuple = ()

    @property
    def label(self) -> str:
        return ":".join([self.kind, *(f"{p:g}" if isinstance(p, float) else str(p) for p in self.params)])

    def __call__(self, pixels: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        degraded = getattr(self, f"_{self.kind}")(_unit(pixels), rng or np.random.default_rng(0), *self.params)
        return np.clip(degraded, 0, 1).astype(np.float32)

    # ------------------------------------------------------------------------------------------ the kinds
    @staticmethod
    def _resample(image, rng, long_side, filter_name):
        from PIL import Image

        scale = long_side / max(image.shape)
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        resample = getattr(Image.Resampling, filter_name.upper())
        return np.asarray(Image.fromarray(image, mode="F").resize(size, resample), dtype=np.float32)

    @staticmethod
    def _blur(image, rng, sigma):
        from scipy import ndimage

        return ndimage.gaussian_filter(image, sigma)

    @staticmethod
    def _noise(image, rng, sd):
        return image + rng.normal(0.0, sd, image.shape).astype(np.float32)

    @staticmethod
    def _gamma(image, rng, gamma):
        return image**gamma

    @staticmethod
    def _contrast(image, rng, factor):
        return 0.5 + (image - 0.5) * factor

    @staticmethod
    def _jpeg(image, rng, quality):
        return jpeg_roundtrip(image, quality)

    @staticmethod
    def _rotate(image, rng, degrees):
        from PIL import Image

        return np.asarray(Image.fromarray(image, mode="F").rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=0.0),
                          dtype=np.float32)

    @staticmethod
    def _collimate(image, rng, fraction):
        out = image.copy()
        out[: int(round(fraction * image.shape[0]))] = 0.0
        out[:, : int(round(fraction * image.shape[1]))] = 0.0
        return out

    @staticmethod
    def _marker(image, rng):
        from PIL import Image, ImageDraw, ImageFont

        height, width = image.shape
        picture = Image.fromarray(np.round(image * 255).astype(np.uint8))
        draw = ImageDraw.Draw(picture)
        size = max(8, height // 8)
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1
            font = ImageFont.load_default()
        draw.text((width * 0.04, height * 0.03), "L", fill=255, font=font)
        x = width * 0.93
        draw.line([(x, height * 0.1), (x, height * 0.9)], fill=255, width=max(1, width // 100))
        for k in range(11):  # ticks every tenth of the ruler
            y = height * (0.1 + 0.08 * k)
            draw.line([(x - width * (0.03 if k % 5 else 0.05), y), (x, y)], fill=255, width=max(1, width // 150))
        return np.asarray(picture, dtype=np.float32) / 255.0


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """A ``(H, W)`` image in [0, 1] compressed as an 8-bit JPEG at ``quality`` and decoded again -> float32 in [0, 1]."""
    from PIL import Image

    stream = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(stream, format="JPEG", quality=int(quality))
    with Image.open(io.BytesIO(stream.getvalue())) as decoded:
        return np.asarray(decoded.convert("L"), dtype=np.float32) / 255.0


def _unit(pixels: np.ndarray) -> np.ndarray:
    """Grayscale float32 min-max scaled to [0, 1] (a flat image gives zeros)."""
    gray = to_grayscale(np.asarray(pixels)).astype(np.float32)
    low, high = float(np.nanmin(gray)), float(np.nanmax(gray))
    return (gray - low) / (high - low) if high > low else np.zeros_like(gray)


def parse_degradation(spec: str) -> Degradation:
    """``KIND[:PARAM[:PARAM]]`` -> :class:`Degradation`; a one-line InvalidInputError naming the kinds otherwise."""
    kind, *given = [part.strip() for part in str(spec).split(":")]
    if kind not in DEGRADATIONS:
        raise InvalidInputError(f"degradation {spec!r}: unknown kind {kind!r}; choose from {', '.join(DEGRADATIONS)}")
    names, defaults, _ = DEGRADATIONS[kind]
    if len(given) > len(names):
        raise InvalidInputError(f"degradation {spec!r}: {kind} takes {len(names)} parameter(s) ({', '.join(names) or 'none'})")
    values = list(given) + [None] * (len(names) - len(given))
    params = []
    for name, value, default in zip(names, values, defaults):
        if value in (None, ""):
            if default is None:
                raise InvalidInputError(f"degradation {spec!r}: give the {name}, e.g. {kind}:100")
            value = default
        params.append(_parameter(spec, kind, name, value))
    return Degradation(kind, tuple(params))


def _parameter(spec: str, kind: str, name: str, value):
    if name == "filter":
        if str(value).lower() not in FILTERS:
            raise InvalidInputError(f"degradation {spec!r}: filter {value!r} unknown; choose from {', '.join(FILTERS)}")
        return str(value).lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"degradation {spec!r}: {name} must be a number, got {value!r}") from None
    limits = {"long_side": (8, 100000), "quality": (1, 95), "fraction": (0, 0.45), "sigma": (0, 50), "sd": (0, 1),
              "gamma": (0.05, 20), "factor": (0, 10), "degrees": (-180, 180)}[name]
    if not limits[0] <= number <= limits[1]:
        raise InvalidInputError(f"degradation {spec!r}: {name} must be between {limits[0]} and {limits[1]}, got {value}")
    return int(number) if name in ("long_side", "quality") else number
