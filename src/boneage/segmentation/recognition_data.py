"""What the hand-radiograph recogniser learns from and is judged on: real hands, real images that are not
hand radiographs, and synthetic negatives, each of a named *kind*.

Every image becomes the recogniser's two-channel input (:func:`recogniser_input`): the grayscale image,
percentile-windowed and stretched to the input size, and its chroma (how coloured each pixel is; 0 for a
grayscale file), so that a radiograph and a colour photograph of the same shapes differ.

Kinds and classes (:data:`CLASSES`): a hand radiograph is class 0; every negative kind belongs to one of the
other classes, which is what a refusal names ("it looks like a CT slice").

* real, from ``../shared/data/non-hand`` (by sub-folder), and, for testing only, the ``pydicom-data``
  package's files and pydicom's own test files (:func:`pydicom_negatives`);
* synthetic (:data:`SYNTHETIC_KINDS`, drawn by :func:`synthetic_image` from a seeded generator):
  gradients, shapes (a smooth bright blob, a bright rectangle), noise, smooth colour pictures, text
  documents, an empty plate with a marker, hands cut into pieces (a jigsaw of a real hand, a zoomed part of
  one), crude radiograph phantoms of other body parts (long bones meeting at a knee-like joint, a
  spine, a pelvis), and cross-section phantoms (a head CT slice with its bright skull and the table, an MR
  slice: a textured oval on black);
* :data:`HELD_OUT_KINDS` are never trained on: they measure how the recogniser generalises.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..io import read_image
from ..preprocess import chroma, normalize_intensity, resize_image, to_grayscale

__all__ = [
    "CLASSES",
    "HELD_OUT_KINDS",
    "KIND_CLASS",
    "REAL_KINDS",
    "SYNTHETIC_KINDS",
    "LabelledImage",
    "chroma",
    "load_non_hand",
    "pydicom_negatives",
    "recogniser_input",
    "synthetic_image",
]

CLASSES = ("hand radiograph", "chest radiograph", "radiograph of another body part", "part of a hand",
           "CT slice", "MRI slice", "ultrasound image", "photograph", "document", "graphic or noise")
KIND_CLASS = {
    # real (../shared/data/non-hand sub-folders, pydicom-data files)
    "chest_xray": 1, "dental_panoramic": 2, "skull_cephalometric": 2, "extremity_cr": 2, "knee_xray": 2,
    "ct_slice": 4, "mri_slice": 5, "ultrasound": 6, "fundus": 7, "nuclear_medicine": 2, "face_photo": 7,
    # synthetic
    "gradient": 9, "shapes": 9, "noise": 9, "colour_shapes": 9, "colour_picture": 7, "document": 8,
    "plate_marker": 9, "hand_jigsaw": 3, "hand_part": 3, "limb_phantom": 2, "spine_phantom": 2,
    "pelvis_phantom": 2, "head_ct_phantom": 4, "mr_slice_phantom": 5,
}
REAL_KINDS = ("chest_xray", "ct_slice", "ultrasound", "fundus", "dental_panoramic", "mri_slice", "skull_cephalometric")
SYNTHETIC_KINDS = ("gradient", "shapes", "noise", "colour_shapes", "colour_picture", "document", "plate_marker",
                   "hand_jigsaw", "hand_part", "limb_phantom", "spine_phantom", "pelvis_phantom", "head_ct_phantom",
                   "mr_slice_phantom")
# never trained on: real kinds of other sources and modalities, and synthetic kinds unlike the trained ones
HELD_OUT_KINDS = ("dental_panoramic", "mri_slice", "skull_cephalometric", "fundus", "colour_picture", "spine_phantom")


@dataclasses.dataclass
class LabelledImage:
    """A decoded image (gray ``(H, W)`` or colour ``(H, W, 3)``, any dtype) of a named kind."""

    pixels: np.ndarray
    kind: str
    source: str


def recogniser_input(image01: np.ndarray, colour: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """The recogniser's ``(2, H, W)`` float32 input: a [0, 1] grayscale image (already windowed) and its
    chroma map (zeros when None), both stretched to ``size``."""
    gray = resize_image(np.asarray(image01, dtype=np.float32), size)
    tint = np.zeros(size, np.float32) if colour is None else resize_image(np.asarray(colour, np.float32), size)
    return np.stack([np.clip(gray, 0, 1), np.clip(tint, 0, 1)]).astype(np.float32)


def load_non_hand(folder: str | Path, kinds=REAL_KINDS, max_side: int = 256) -> list[LabelledImage]:
    """The real non-hand images of ``folder`` (``../shared/data/non-hand``: one sub-folder per kind), reduced
    to ``max_side`` px at most."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: non-hand image folder not found")
    found = []
    for kind in kinds:
        for path in sorted((folder / kind).glob("*.png")):
            found.append(LabelledImage(_reduced(read_image(path).pixels, max_side), kind, str(path)))
    return found


PYDICOM_FILES = {  # the pydicom-data package's images (and pydicom's own) that are not hand radiographs
    "RG1_UNCR.dcm": "chest_xray", "RG3_UNCR.dcm": "extremity_cr", "US1_UNCR.dcm": "ultrasound",
    "MR2_UNCR.dcm": "mri_slice", "693_UNCR.dcm": "ct_slice", "OBXXXX1A.dcm": "ultrasound",
    "color3d_jpeg_baseline.dcm": "ultrasound", "gdcm-US-ALOKA-16.dcm": "ultrasound",
    "MR-SIEMENS-DICOM-WithOverlays.dcm": "mri_slice", "eCT_Supplemental.dcm": "ct_slice",
    "JPEG2000_UNC.dcm": "nuclear_medicine", "OT-PAL-8-face.dcm": "face_photo",
    "CT_small.dcm": "ct_slice", "MR_small.dcm": "mri_slice",
}


def pydicom_negatives(max_side: int = 256) -> list[LabelledImage]:
    """The non-hand images of the ``pydicom-data`` package and of pydicom's test files that can be read
    here (a file whose decoder is missing is left out); empty when the package is not installed."""
    from pydicom.data import get_testdata_file

    found = []
    for name, kind in PYDICOM_FILES.items():
        try:
            path = get_testdata_file(name, download=False)
            if path is None:
                continue
            found.append(LabelledImage(_reduced(read_image(path).pixels, max_side), kind, f"pydicom-data/{name}"))
        except Exception:  # noqa: BLE001 - not installed, or no decoder for its transfer syntax
            continue
    return found


def _reduced(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Pixels reduced to ``max_side`` px at most (colour kept as uint8 RGB, gray as [0, 1] float32)."""
    from PIL import Image

    pixels = np.asarray(pixels)
    colour = chroma(pixels)
    if colour is not None:
        rgb = pixels[..., :3]
        if rgb.dtype != np.uint8:
            rgb = np.round(255 * rgb.astype(np.float32) / max(float(rgb.max()), 1.0)).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(rgb))
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return np.asarray(image)
    gray = normalize_intensity(to_grayscale(pixels), "percentile", (0.5, 99.5))
    scale = max_side / max(gray.shape)
    if scale < 1:
        gray = resize_image(gray, (max(1, round(gray.shape[0] * scale)), max(1, round(gray.shape[1] * scale))))
    return gray


# --------------------------------------------------------------------------------------------- synthetic
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.random((size, size)).astype(np.float32), sigma)
    return normalize_intensity(field, "minmax")


def _gradient(rng, size):
    yy, xx = _grid(size)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        value = np.cos(angle) * xx + np.sin(angle) * yy
    else:
        cy, cx = rng.uniform(0, 1, 2)
        value = np.hypot(yy - cy, xx - cx)
    return normalize_intensity(value, "minmax")


def _shapes(rng, size, colour: bool = False):
    yy, xx = _grid(size)
    image = np.full((size, size, 3) if colour else (size, size), rng.uniform(0, 0.4), np.float32)
    for _ in range(int(rng.integers(1, 6))):
        cy, cx, ry, rx = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4)
        kind = rng.integers(3)
        if kind == 0:  # rectangle
            inside = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
            shape = inside.astype(np.float32)
        elif kind == 1:  # ellipse
            shape = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.float32)
        else:  # a smooth bright blob
            shape = np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
        value = rng.uniform(0.3, 1.0, 3 if colour else 1)
        if colour:
            image = image * (1 - shape[..., None]) + value * shape[..., None]
        else:
            image = image * (1 - shape) + value[0] * shape
    return np.clip(image, 0, 1)


def _noise(rng, size):
    choice = rng.integers(3)
    if choice == 0:
        return rng.random((size, size)).astype(np.float32)
    if choice == 1:
        return np.clip(rng.normal(0.5, 0.2, (size, size)), 0, 1).astype(np.float32)
    return _smooth_noise(rng, size, rng.uniform(1, 6))


def _colour_picture(rng, size):
    return np.stack([_smooth_noise(rng, size, rng.uniform(size / 16, size / 4)) for _ in range(3)], axis=2)


def _document(rng, size):
    from PIL import Image, ImageDraw

    page = Image.new("L", (size * 2, size * 2), int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(page)
    y = int(rng.integers(4, 20))
    while y < size * 2 - 10:
        words = " ".join("".join(chr(int(c)) for c in rng.integers(97, 123, int(rng.integers(2, 9))))
                         for _ in range(int(rng.integers(3, 12))))
        draw.text((int(rng.integers(4, 30)), y), words, fill=int(rng.integers(0, 80)))
        if rng.random() < 0.1:
            draw.line([(4, y + 14), (size * 2 - 4, y + 14)], fill=0)
        y += int(rng.integers(12, 22))
    image = np.asarray(page.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
    return 1.0 - image if rng.random() < 0.3 else image


def _plate_marker(rng, size):
    from PIL import Image, ImageDraw

    plate = Image.new("L", (size, size), int(rng.integers(0, 60)))
    draw = ImageDraw.Draw(plate)
    x, y = (int(v) for v in rng.integers(5, size - 20, 2))
    draw.text((x, y), str(rng.choice(["L", "R", "PA", "AP"])), fill=int(rng.integers(180, 256)))
    image = np.asarray(plate, np.float32) / 255.0
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1).astype(np.float32)


def _hand_jigsaw(rng, hand: np.ndarray):
    tiles = int(rng.integers(2, 5))
    side = hand.shape[0] // tiles
    size = side * tiles
    pieces = hand[:size, :size].reshape(tiles, side, tiles, side).swapaxes(1, 2).reshape(tiles * tiles, side, side)
    pieces = pieces[rng.permutation(len(pieces))]
    return pieces.reshape(tiles, tiles, side, side).swapaxes(1, 2).reshape(size, size)


def _hand_part(rng, hand: np.ndarray):
    size = hand.shape[0]
    side = int(size * rng.uniform(0.25, 0.45))
    y, x = (int(v) for v in rng.integers(0, size - side, 2))
    return resize_image(hand[y : y + side, x : x + side], (size, size))


def _bone(yy, xx, x0, x1, y_top, y_bottom, width, flare):
    """A long bone: a shaft with brighter cortex, flaring towards the joint ends."""
    t = np.clip((yy - y_top) / max(y_bottom - y_top, 1e-6), 0, 1)
    centre = x0 + (x1 - x0) * t
    half = width * (1 + flare * (np.exp(-t / 0.12) + np.exp(-(1 - t) / 0.12)))
    distance = np.abs(xx - centre) / half
    inside = (distance < 1) & (yy >= y_top) & (yy <= y_bottom)
    return inside * (0.55 + 0.35 * distance ** 4)


def _limb_phantom(rng, size):
    yy, xx = _grid(size)
    centre = rng.uniform(0.4, 0.6)
    image = 0.05 + 0.25 * (np.abs(xx - centre) < rng.uniform(0.2, 0.35))
    joint = rng.uniform(0.35, 0.65)
    gap = rng.uniform(0.02, 0.05)
    image = np.maximum(image, _bone(yy, xx, centre, centre, -0.1, joint - gap, rng.uniform(0.05, 0.09), 0.8))
    image = np.maximum(image, _bone(yy, xx, centre, centre, joint + gap, 1.1, rng.uniform(0.05, 0.08), 0.8))
    if rng.random() < 0.6:  # a second, thinner bone (fibula, ulna)
        side = centre + rng.choice([-1, 1]) * rng.uniform(0.08, 0.12)
        image = np.maximum(image, _bone(yy, xx, side, side, joint + 2 * gap, 1.1, 0.02, 0.5))
    return _blurred(rng, image)


def _spine_phantom(rng, size):
    yy, xx = _grid(size)
    image = 0.08 + 0.2 * (np.abs(xx - 0.5) < 0.35)
    height = rng.uniform(0.08, 0.14)
    for top in np.arange(rng.uniform(-0.05, 0.05), 1.0, height * 1.3):
        body = (np.abs(xx - 0.5) < rng.uniform(0.1, 0.16)) & (yy > top) & (yy < top + height)
        image = np.where(body, 0.65 + 0.1 * rng.random(), image)
    return _blurred(rng, image)


def _pelvis_phantom(rng, size):
    yy, xx = _grid(size)
    image = 0.1 + 0.2 * (np.abs(xx - 0.5) < 0.45)
    for side in (-1, 1):
        ring = np.hypot((yy - 0.4) / 0.3, (xx - 0.5 - side * 0.2) / 0.18)
        image = np.where((ring > 0.8) & (ring < 1.0), 0.7, image)
        head = np.hypot(yy - 0.75, xx - 0.5 - side * 0.3) < 0.07
        image = np.where(head, 0.75, image)
    return _blurred(rng, image)


def _cross_section(rng, size, rim: bool):
    """An oval body or head on black with a textured inside; with ``rim`` a bright skull and the CT table."""
    yy, xx = _grid(size)
    cy, cx = rng.uniform(0.4, 0.6, 2)
    ry, rx = rng.uniform(0.25, 0.45, 2)
    radius = np.hypot((yy - cy) / ry, (xx - cx) / rx)
    texture = 0.25 + 0.35 * _smooth_noise(rng, size, rng.uniform(1, 4))
    image = np.where(radius < 1, texture, 0.0)
    for _ in range(int(rng.integers(0, 4))):  # organs, ventricles, a lesion
        by, bx, br = cy + rng.uniform(-0.5, 0.5) * ry, cx + rng.uniform(-0.5, 0.5) * rx, rng.uniform(0.03, 0.12)
        image = np.where(np.hypot(yy - by, xx - bx) < br, rng.uniform(0.05, 0.9), image)
    if rim:
        image = np.where((radius >= 0.92) & (radius < 1.0 + rng.uniform(0.03, 0.08)), rng.uniform(0.8, 1.0), image)
        table = np.abs(np.hypot(yy - cy + 0.2, (xx - cx) / 1.3) - (ry + 0.32)) < 0.008
        image = np.where(table & (yy > cy), 0.7, image)
    return _blurred(rng, image)


def _blurred(rng, image):
    from scipy import ndimage

    image = ndimage.gaussian_filter(image.astype(np.float32), rng.uniform(0.5, 1.5))
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1).astype(np.float32)


_GENERATORS = {
    "gradient": _gradient, "shapes": _shapes, "noise": _noise, "colour_picture": _colour_picture,
    "colour_shapes": lambda rng, size: _shapes(rng, size, colour=True), "document": _document,
    "plate_marker": _plate_marker, "limb_phantom": _limb_phantom, "spine_phantom": _spine_phantom,
    "pelvis_phantom": _pelvis_phantom, "head_ct_phantom": lambda rng, size: _cross_section(rng, size, rim=True),
    "mr_slice_phantom": lambda rng, size: _cross_section(rng, size, rim=False),
}


def synthetic_image(kind: str, rng: np.random.Generator, size: int = 96, hand: np.ndarray | None = None) -> np.ndarray:
    """One synthetic negative of ``kind`` (gray ``(size, size)`` in [0, 1] or colour ``(size, size, 3)``);
    the hand kinds cut up ``hand`` (a real hand radiograph in [0, 1], ``(size, size)``)."""
    if kind in ("hand_jigsaw", "hand_part"):
        if hand is None:
            raise ValueError(f"synthetic kind {kind} needs a hand image to cut up")
        return (_hand_jigsaw if kind == "hand_jigsaw" else _hand_part)(rng, np.asarray(hand, np.float32))
    if kind not in _GENERATORS:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {SYNTHETIC_KINDS}")
    return _GENERATORS[kind](rng, size).astype(np.float32)
