"""Mask outlines drawn over a radiograph, and the mask files of ``boneage segment`` (``--overlay``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InvalidInputError

__all__ = ["mask_outline", "overlay_mask", "segment_file", "MASK_COLOUR", "REFERENCE_COLOUR", "INSIDE_COLOUR", "OUTSIDE_COLOUR"]

MASK_COLOUR = (60, 230, 60)  # the segmenter's outline
REFERENCE_COLOUR = (255, 140, 0)  # a reference outline (e.g. the classical mask)
INSIDE_COLOUR = (0, 200, 255)  # a keypoint inside the mask
OUTSIDE_COLOUR = (255, 30, 30)  # a keypoint outside it


def mask_outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """The pixels of ``mask`` within ``thickness`` px of its edge (the image border is not an edge)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise InvalidInputError(f"a mask must be a 2-D array, got shape {mask.shape}")
    thickness = max(1, int(thickness))
    padded = np.pad(mask, thickness, mode="edge")
    inner = ndimage.binary_erosion(padded, np.ones((3, 3), dtype=bool), iterations=thickness)
    return mask & ~inner[thickness:-thickness, thickness:-thickness]


def overlay_mask(
    image01: np.ndarray,
    mask: np.ndarray,
    points=None,
    reference: np.ndarray | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``: the [0, 1] grayscale image with the mask's outline (green), an optional
    ``reference`` mask's outline (orange, drawn first, thinner) and optional points ``(x, y)`` as small
    squares, blue when inside the mask and red when outside. ``thickness`` defaults to 1/200 of the
    short side (at least 1 px)."""
    image = np.clip(np.asarray(image01, dtype=np.float32), 0.0, 1.0)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 2 or image.shape != mask.shape:
        raise InvalidInputError(f"image {image.shape} and mask {mask.shape} must be 2-D and of the same size")
    if thickness is None:
        thickness = max(1, round(min(image.shape) / 200))
    rgb = np.repeat((image * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    if reference is not None:
        rgb[mask_outline(reference, max(1, thickness // 2))] = REFERENCE_COLOUR
    rgb[mask_outline(mask, thickness)] = MASK_COLOUR
    if points is not None:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        half = max(1, thickness)
        height, width = mask.shape
        for x, y in points:
            col, row = int(np.floor(x)), int(np.floor(y))
            inside = 0 <= row < height and 0 <= col < width and mask[row, col]
            r0, r1 = max(0, row - half), min(height, row + half + 1)
            c0, c1 = max(0, col - half), min(width, col + half + 1)
            if r0 < r1 and c0 < c1:
                rgb[r0:r1, c0:c1] = INSIDE_COLOUR if inside else OUTSIDE_COLOUR
    return rgb


def segment_file(segmenter, file, out_dir: Path, stem: str, *, overlay: bool = False) -> dict:
    """Segment one image file and write ``<stem>_mask.png`` (255 = hand) and, with ``overlay``,
    ``<stem>_overlay.png`` (the outline over the image) into ``out_dir`` -> ``{'mask', 'fraction',
    'overlay'}``. Raises a one-line BoneAgeError for an unreadable image or one with no hand."""
    from PIL import Image

    from ..io import read_image
    from ..preprocess import normalize_intensity, to_grayscale
    from ..utils import atomic_write

    image = read_image(file)
    mask = segmenter.predict_mask(image.pixels, source=str(file))
    pictures = {"mask": mask.astype(np.uint8) * 255}
    if overlay:
        pictures["overlay"] = overlay_mask(normalize_intensity(to_grayscale(image.pixels)), mask)
    written: dict = {"fraction": float(mask.mean())}
    for kind, array in pictures.items():
        written[kind] = atomic_write(Path(out_dir) / f"{stem}_{kind}.png",
                                     lambda stream, array=array: Image.fromarray(array).save(stream, format="PNG"),
                                     fsync=False)
    return written
