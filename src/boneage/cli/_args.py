"""argparse types: each turns one command-line value into a checked value or a one-line usage error.

They call the same validators the rest of boneage uses (:mod:`boneage.api.inputs`, the clinical limits,
the DICOM node's AE titles and ports), so a command line and an HTTP form are refused for the same reasons.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InvalidInputError


def _checked(validate, value):
    """``validate(value)``, with its one-line InvalidInputError as an argparse error."""
    try:
        return validate(value)
    except InvalidInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def sex(value: str) -> str:
    from ..io import normalize_sex

    return _checked(normalize_sex, value)


def age(value: str) -> float:
    from ..clinical import parse_age

    return _checked(parse_age, value)


def height(value: str) -> float:
    from ..clinical.reference import HEIGHT_RANGE_CM

    low, high = HEIGHT_RANGE_CM
    return float_arg(lambda v: low <= v <= high, f"a height between {low:g} and {high:g} cm")(value)


def int_arg(minimum: int):
    """A whole number of at least ``minimum``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


positive_int = int_arg(1)
non_negative_int = int_arg(0)


def float_arg(check, requirement: str):
    """A float for which ``check`` holds, else an error saying ``requirement``."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        if not check(number):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return number

    return parse


positive_float = float_arg(lambda v: v > 0, "greater than 0")
fraction = float_arg(lambda v: 0 <= v < 1, "at least 0 and below 1")


def segmenter_size(value: str) -> int:
    number = positive_int(value)
    if number < 16 or number % 8:
        raise argparse.ArgumentTypeError(
            f"must be a multiple of 8 of at least 16 (the U-Net halves it three times), got {number}")
    return number


def image_size(value: str) -> tuple[int, int]:
    parts = value.lower().replace("x", ",").split(",")
    try:
        sizes = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {value!r}") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 8:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with sides of at least 8, got {value!r}")
    return sizes[0], sizes[1]


def float_pair(value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers as LOW,HIGH, got {value!r}") from None
    if not low < high:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {value!r}")
    return low, high


def output_file(value: str) -> str:
    """An output path whose folder exists and is writable (checked before any work is done)."""
    folder = Path(value).expanduser().resolve().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {folder} is not writable")
    return value


def report_file(value: str) -> str:
    """A report path ending in .pdf or .html in a writable folder (checked before any work is done)."""
    from ..clinical import report_format

    _checked(report_format, value)
    return output_file(value)


def output_dir(value: str) -> str:
    """A folder for output files: created if missing (its parent must exist), and writable."""
    folder = Path(value).expanduser()
    try:
        folder.mkdir(exist_ok=True)
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot create folder {folder} ({err.strerror})") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{folder} is not a writable folder")
    return value


def port(value: str) -> int:
    from ..service.dicom_node import validate_port

    return _checked(validate_port, value)


def ae_title(value: str) -> str:
    from ..service.dicom_node import validate_ae_title

    return _checked(validate_ae_title, value)


def destination(value: str):
    from ..service.dicom_node import parse_destination

    return _checked(parse_destination, value)


def name_list(value: str) -> list[str]:
    """Comma-separated names: ``detector,stages`` -> ``['detector', 'stages']``."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {value!r}")
    return names


def key_value(value: str) -> tuple[str, object]:
    """``KEY=VALUE`` with the value read as JSON when it parses (``cascade=2``, ``attention=false``), else text."""
    import json

    key, sep, text = value.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python name, got {value!r}")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return key.strip(), parsed


def degradation(value: str):
    from ..preprocess.degrade import parse_degradation

    return _checked(parse_degradation, value)
