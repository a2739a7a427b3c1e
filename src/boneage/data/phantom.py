"""Synthetic hand phantoms whose skeletal maturity follows a given bone age.

Not anatomy, but the features bone age readers look at, drawn in a way that changes with age:
the hand grows; carpal bones appear one by one (0 at birth, 7 by ~10 years); epiphyses of the
phalanges and metacarpals appear and grow, and the growth-plate gap between epiphysis and shaft
closes in adolescence (fused by 17 years, earlier in girls). Fast enough to draw thousands per
second, so tests can train a model on them and see it learn without any real data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["hand_phantom", "phantom_dataset", "tall_phantom", "tall_phantom_dataset", "write_phantom_dataset"]

# Finger base angles (degrees from vertical, thumb first) and relative lengths of the three segments.
_FINGERS = [(-52, 0.62), (-16, 0.95), (0, 1.0), (14, 0.95), (28, 0.78)]


def _maturity(age_months: float, sex: str) -> float:
    """Skeletal maturity in [0, 1]; girls mature ~1.5 years earlier, as in the G&P tables."""
    shift = 18.0 if sex == "F" else 0.0
    return float(np.clip((age_months + shift) / 216.0, 0.0, 1.0))


def _capsule(yy, xx, p0, p1, radius):
    """Boolean mask of points within ``radius`` of the segment p0-p1 (points as (y, x))."""
    d = np.array(p1, dtype=np.float32) - np.array(p0, dtype=np.float32)
    length2 = float(d @ d) or 1e-6
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / length2, 0.0, 1.0)
    dy, dx = yy - (p0[0] + t * d[0]), xx - (p0[1] + t * d[1])
    return dy * dy + dx * dx <= radius * radius


def _disc(yy, xx, centre, radius):
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius * radius


def hand_phantom(age_months: float, sex: str = "M", size: int = 128, rng: np.random.Generator | None = None) -> np.ndarray:
    """A ``(size, size)`` uint8 radiograph-like image of a left hand at the given bone age."""
    rng = rng or np.random.default_rng()
    m = _maturity(age_months, sex)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    scale = size * (0.55 + 0.35 * m) * rng.uniform(0.95, 1.05)
    wrist = (size * rng.uniform(0.9, 0.95), size * rng.uniform(0.47, 0.53))
    tilt = np.deg2rad(rng.uniform(-8, 8))

    def point(base, angle_deg, distance):
        a = np.deg2rad(angle_deg) + tilt
        return (base[0] - distance * np.cos(a), base[1] + distance * np.sin(a))

    image = np.full((size, size), rng.uniform(0.05, 0.15), dtype=np.float32)
    soft = np.zeros_like(image, dtype=bool)
    bone = np.zeros_like(image, dtype=np.float32)
    palm_centre = point(wrist, 0, 0.32 * scale)
    soft |= ((yy - palm_centre[0]) / (0.22 * scale)) ** 2 + ((xx - palm_centre[1]) / (0.2 * scale)) ** 2 <= 1
    soft |= _capsule(yy, xx, wrist, (size + 5, wrist[1]), 0.14 * scale)  # forearm
    # Radius and ulna with their distal epiphyses.
    for offset, width in ((-0.07, 0.035), (0.06, 0.025)):
        top = (wrist[0] + 0.02 * scale, wrist[1] + offset * scale)
        bone = np.maximum(bone, 0.55 * _capsule(yy, xx, top, (size + 5, top[1]), width * scale))
        epi_r = width * scale * (0.3 + 0.9 * m) if m > 0.05 else 0.0
        gap = 0.03 * scale * max(0.0, 1.0 - max(0.0, m - 0.75) / 0.2)
        if epi_r > 0:
            bone = np.maximum(bone, 0.7 * _disc(yy, xx, (top[0] - gap - epi_r * 0.6, top[1]), epi_r))
    # Carpal bones appear one by one.
    n_carpals = int(np.clip(round(m * 9.0), 0, 7))
    for k in range(n_carpals):
        angle = -50 + 100 * (k + 0.5) / 7
        c = point((wrist[0] - 0.1 * scale, wrist[1]), angle, 0.08 * scale)
        bone = np.maximum(bone, 0.65 * _disc(yy, xx, c, (0.02 + 0.02 * min(1.0, m * 1.4)) * scale))
    # Metacarpals and phalanges with epiphyses.
    for angle, length in _FINGERS:
        base = point(wrist, angle * 0.6, 0.2 * scale)
        seg_lengths = np.array([0.26, 0.16, 0.11, 0.08]) * length * scale
        start = base
        for s, seg in enumerate(seg_lengths):
            end = point(start, angle, seg) if s else point(start, angle * 0.8, seg)
            width = (0.03 - 0.004 * s) * scale
            soft |= _capsule(yy, xx, start, end, width * 2.0)
            gap = 0.012 * scale * max(0.0, 1.0 - max(0.0, m - 0.7) / 0.25) + 1.0
            a = np.arctan2(end[1] - start[1], -(end[0] - start[0]))
            shaft_start = (start[0] - gap * np.cos(a) * 1.5, start[1] + gap * np.sin(a) * 1.5)
            bone = np.maximum(bone, 0.6 * _capsule(yy, xx, shaft_start, end, width))
            if m > 0.08:  # epiphysis at the proximal end of each bone
                epi = (start[0] - 0.2 * gap * np.cos(a), start[1] + 0.2 * gap * np.sin(a))
                bone = np.maximum(bone, 0.75 * _disc(yy, xx, epi, width * min(1.2, 0.3 + 1.2 * m)))
            start = end
    image[soft] += 0.25
    image += bone * 0.55
    image += rng.normal(0, 0.02, size=image.shape).astype(np.float32)
    return np.clip(image * 255.0, 0, 255).astype(np.uint8)


def _ages_and_sexes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """``n`` bone ages uniform in 6-216 months (to 0.1) and sexes, half of each on average."""
    ages = rng.uniform(6.0, 216.0, size=n).round(1)
    return ages, ["M" if rng.random() < 0.5 else "F" for _ in range(n)]


def phantom_dataset(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` phantoms with bone ages uniform in 6-216 months: ``(images uint8 (n,H,W), ages, sexes)``."""
    rng = np.random.default_rng(seed)
    ages, sexes = _ages_and_sexes(n, rng)
    images = np.stack([hand_phantom(a, s, size, rng) for a, s in zip(ages, sexes)])
    return images, ages, sexes


def tall_phantom(age_months: float, sex: str = "M", size: tuple[int, int] = (3000, 900), hand_side: int | None = None,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A tall ``size`` = (height, width) uint8 image, like a whole-body scan, whose age signal is confined to a
    known band: a :func:`hand_phantom` of ``hand_side`` px (default the full width: a band as wide as the
    image) at a random height (and place across, when narrower), over a body of age-independent distractors
    (a column of vertebrae, two long bones, ribs, noise). Returns ``(image, box)`` with ``box`` =
    ``(x0, y0, x1, y1)`` the hand's square in pixels."""
    rng = rng or np.random.default_rng()
    height, width = (int(v) for v in size)
    side = int(hand_side or width)
    if not 8 <= side <= min(height, width):
        raise ValueError(f"hand_side must fit the image ({size}), got {side}")
    image = np.full((height, width), rng.uniform(0.05, 0.15), dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    body = np.zeros_like(image)
    centre = width * rng.uniform(0.45, 0.55)
    step = width * 0.12
    for y in np.arange(rng.uniform(0, step), height, step):  # vertebrae: age-independent
        body = np.maximum(body, rng.uniform(0.3, 0.6) * _disc(yy, xx, (y, centre + rng.normal(0, 2)), width * 0.045))
    for x in (width * 0.25, width * 0.75):  # two long bones
        top = height * rng.uniform(0.45, 0.6)
        body = np.maximum(body, rng.uniform(0.3, 0.6) * _capsule(yy, xx, (top, x), (height * 0.95, x), width * 0.035))
    for y in np.linspace(height * 0.1, height * 0.35, 6):  # ribs
        body = np.maximum(body, rng.uniform(0.2, 0.5) * _capsule(yy, xx, (y, width * 0.1), (y + width * 0.08, width * 0.9),
                                                                 width * 0.012))
    image += 0.55 * body + rng.normal(0, 0.02, size=image.shape).astype(np.float32)
    hand = hand_phantom(age_months, sex, side, rng).astype(np.float32) / 255.0
    y0, x0 = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    image[y0 : y0 + side, x0 : x0 + side] = np.maximum(image[y0 : y0 + side, x0 : x0 + side], hand)
    return np.clip(image * 255.0, 0, 255).astype(np.uint8), (x0, y0, x0 + side, y0 + side)


def tall_phantom_dataset(n: int, size: tuple[int, int] = (3000, 900), seed: int = 0,
                         hand_side: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """``n`` :func:`tall_phantom` images with bone ages uniform in 6-216 months:
    ``(images uint8 (n, H, W), ages, sexes, boxes (n, 4))``."""
    rng = np.random.default_rng(seed)
    ages, sexes = _ages_and_sexes(n, rng)
    drawn = [tall_phantom(a, s, size, hand_side, rng) for a, s in zip(ages, sexes)]
    return np.stack([d[0] for d in drawn]), ages, sexes, np.array([d[1] for d in drawn], dtype=np.float64)


def write_phantom_dataset(folder: str | Path, n: int, size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Write phantoms as ``<id>.png`` plus an RSNA-layout CSV; returns ``(image_dir, labels_csv)``."""
    from PIL import Image

    folder = Path(folder)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, ages, sexes = phantom_dataset(n, size, seed)
    labels = folder / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "boneage", "male"])
        for i, (image, age, sex) in enumerate(zip(images, ages, sexes)):
            sample_id = str(1000 + i)
            Image.fromarray(image).save(image_dir / f"{sample_id}.png")
            writer.writerow([sample_id, age, sex == "M"])
    return image_dir, labels
