"""What an assessment is given, read and checked once: the radiograph (a path, the bytes of a file, or an
image already read) and the sex, chronological age and height.

Front ends parse their own forms with these functions (so their messages name the same limits) and pass
the values to :meth:`boneage.api.Assessor.assess`, which checks them here, once, before any work.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from ..clinical import check_height, parse_age
from ..errors import InvalidInputError
from ..io import RadiographImage, normalize_sex, read_file, read_image_bytes

__all__ = ["Inputs", "MissingSexError", "Radiograph", "read_radiograph", "resolve_sex", "validate_inputs"]

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "tiff": "image/tiff", "bmp": "image/bmp",
               "dicom": "application/dicom"}


class MissingSexError(InvalidInputError):
    """The sex was not given and the image does not say (no DICOM PatientSex M or F)."""


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Checked inputs: sex ``'M'``/``'F'`` or None (then the file must say), age in months, height in cm."""

    sex: str | None = None
    age_months: float | None = None
    height_cm: float | None = None


def validate_inputs(sex=None, age=None, height_cm=None) -> Inputs:
    """Check the sex (M, F, male, female; any case), the age (months, or text such as ``'9y4m'``: 0-240
    months) and the height (cm); any problem is one :class:`InvalidInputError` line."""
    return Inputs(
        sex=None if sex is None else normalize_sex(sex),
        age_months=None if age is None else parse_age(age),
        height_cm=check_height(height_cm),
    )


def resolve_sex(given: str | None, image: RadiographImage, name: str, *, predicted: bool = False) -> tuple[str | None, str]:
    """``(sex, source)``: the given sex (``'argument'``) wins, else the DICOM PatientSex (``'dicom'``), else, with
    ``predicted`` (a model that predicts the sex), ``(None, 'predicted')``: the model will say."""
    if given is not None:
        return given, "argument"
    if image.meta.sex in ("M", "F"):
        return image.meta.sex, "dicom"
    if predicted:
        return None, "predicted"
    what = "its DICOM PatientSex is missing or not M/F" if image.meta.format == "dicom" else "the file does not say"
    raise MissingSexError(f"{name}: sex unknown ({what}); give it as M or F")


@dataclasses.dataclass
class Radiograph:
    """A radiograph read once: the image, the name it goes by in messages, records and reports, the
    bytes of its file (None for an image given already read) and their SHA-256."""

    image: RadiographImage
    name: str
    data: bytes | None
    sha256: str

    @property
    def media_type(self) -> str | None:
        return MEDIA_TYPES.get(self.image.meta.format)


def read_radiograph(source: str | Path | bytes | RadiographImage | Radiograph, name: str | None = None) -> Radiograph:
    """Read a radiograph once, from a path, the bytes of a file (an upload, a received DICOM data set) or
    an image already read; ``name`` (default: the path) names it in every message."""
    if isinstance(source, Radiograph):
        return source
    if isinstance(source, RadiographImage):  # its file's bytes when it came from one, else its pixels
        path = Path(source.meta.path or "")
        data = path.read_bytes() if str(path) and path.is_file() else None
        digest = hashlib.sha256(data if data is not None else np.ascontiguousarray(source.pixels).tobytes()).hexdigest()
        return Radiograph(source, name or source.meta.path or "image", data, digest)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "image"
    else:
        name = name or str(source)
        data = read_file(source, name)
    return Radiograph(read_image_bytes(data, name), name, data, hashlib.sha256(data).hexdigest())
