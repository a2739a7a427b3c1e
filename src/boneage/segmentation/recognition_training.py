"""Training the hand-radiograph recogniser (the ``boneage train-recogniser`` command).

Positives are the RSNA hands of the default model's training split (its validation hands, the 40 512 px
samples' ids and the Digital Hand Atlas are kept out, to measure false refusals on), with one in ten drawn
from the project's synthetic hand phantoms (which tests and demonstrations assess); negatives are the real
non-hand images of the trained kinds and synthetic ones drawn afresh for every batch
(:mod:`.recognition_data`; the :data:`~.recognition_data.HELD_OUT_KINDS` are never used). Every batch is
half hands, half negatives (kinds drawn uniformly), each from a random crop (most of a hand; any part of a
negative), with random rotation, flips, gamma, contrast, blur, noise and inversion; cross-entropy over the
classes, AdamW with a cosine schedule. Afterwards the hand features' statistics are fitted on the training
hands and the two refusal limits set (see :func:`set_limits`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..errors import DatasetError
from ..preprocess import normalize_intensity, resize_image, to_grayscale
from ..utils import autocast, evaluating
from .recogniser import HandRecogniser, RecogniserSettings, export_recogniser
from .recognition_data import (
    HELD_OUT_KINDS,
    KIND_CLASS,
    REAL_KINDS,
    SYNTHETIC_KINDS,
    LabelledImage,
    chroma,
    load_non_hand,
    recogniser_input,
    synthetic_image,
)

__all__ = ["RecognitionData", "hand_inputs", "load_recognition_data", "sample_input", "set_limits", "train_recogniser"]

HAND_SIDE = 96  # hands are kept at this size in memory and cut from it
SYNTHETIC_SIDE = 96


PHANTOM_SHARE = 0.1  # of the hands in a batch: the project's synthetic hand phantoms (boneage.data.hand_phantom)


@dataclasses.dataclass
class RecognitionData:
    """Training hands ``(N, S, S)`` uint8, synthetic hand phantoms (the same), the real negatives of trained
    kinds, and the kinds drawn for batches."""

    hands: np.ndarray
    phantoms: np.ndarray
    negatives: list[LabelledImage]
    kinds: tuple[str, ...]


def load_hands(paths: list, side: int = HAND_SIDE) -> np.ndarray:
    """Hand radiographs as ``(N, side, side)`` uint8 (windowed, stretched)."""
    from ..io import read_image

    out = np.empty((len(paths), side, side), np.uint8)
    for k, path in enumerate(paths):
        gray = normalize_intensity(to_grayscale(read_image(path).pixels), "percentile", (0.5, 99.5))
        out[k] = np.round(resize_image(gray, (side, side)) * 255)
    return out


def load_recognition_data(hand_paths: list, non_hand_dir) -> RecognitionData:
    """Training hands and the real negatives of the kinds trained on (never the held-out ones)."""
    trained_real = tuple(k for k in REAL_KINDS if k not in HELD_OUT_KINDS)
    negatives = load_non_hand(non_hand_dir, trained_real)
    if not negatives:
        raise DatasetError(f"{non_hand_dir}: no non-hand images of the kinds {trained_real}")
    kinds = trained_real + tuple(k for k in SYNTHETIC_KINDS if k not in HELD_OUT_KINDS)
    return RecognitionData(load_hands(hand_paths), hand_phantoms(), negatives, kinds)


def hand_phantoms(count: int = 500, seed: int = 0) -> np.ndarray:
    """Synthetic hand radiographs (:func:`boneage.data.hand_phantom`, all ages, both sexes) as hands: tests and
    demonstrations assess them, so the recogniser must take them for what they draw."""
    from ..data import hand_phantom

    rng = np.random.default_rng(seed)
    return np.stack([hand_phantom(rng.uniform(6, 222), "MF"[k % 2], HAND_SIDE, rng) for k in range(count)])


def sample_input(pixels: np.ndarray, rng: np.random.Generator, size, min_area: float = 1.0) -> np.ndarray:
    """The recogniser input of a random crop (at least ``min_area`` of the image, aspect 3:4 to 4:3) of
    ``pixels`` (gray, any range, or colour)."""
    pixels = np.asarray(pixels)
    colour = chroma(pixels)
    gray = to_grayscale(pixels) if colour is not None else np.asarray(pixels, np.float32)
    height, width = gray.shape
    if min_area < 1.0:
        area = rng.uniform(min_area, 1.0)
        aspect = math.exp(rng.uniform(math.log(0.75), math.log(4 / 3)))
        h = min(height, max(4, round(height * math.sqrt(area * aspect))))
        w = min(width, max(4, round(width * math.sqrt(area / aspect))))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        gray = gray[y : y + h, x : x + w]
        colour = None if colour is None else colour[y : y + h, x : x + w]
    return recogniser_input(normalize_intensity(gray, "percentile", (0.5, 99.5)), colour, size)


def _negative(data: RecognitionData, rng: np.random.Generator, size) -> tuple[np.ndarray, int]:
    kind = data.kinds[int(rng.integers(len(data.kinds)))]
    if kind in REAL_KINDS:
        pool = [n for n in data.negatives if n.kind == kind]
        return sample_input(pool[int(rng.integers(len(pool)))].pixels, rng, size, min_area=0.5), KIND_CLASS[kind]
    hand = data.hands[int(rng.integers(len(data.hands)))].astype(np.float32) / 255.0
    return sample_input(synthetic_image(kind, rng, SYNTHETIC_SIDE, hand), rng, size), KIND_CLASS[kind]


def make_batch(data: RecognitionData, rng: np.random.Generator, batch_size: int, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Half hands (most of the image), half negatives of uniformly drawn kinds, then augmented."""
    inputs, labels = [], []
    for k in range(batch_size):
        if k % 2 == 0:
            pool = data.phantoms if rng.random() < PHANTOM_SHARE else data.hands
            hand = pool[int(rng.integers(len(pool)))]
            inputs.append(sample_input(hand.astype(np.float32) / 255.0, rng, size, min_area=0.75))
            labels.append(0)
        else:
            x, label = _negative(data, rng, size)
            inputs.append(x)
            labels.append(label)
    return augment(torch.from_numpy(np.stack(inputs)), rng), torch.tensor(labels)


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Rotation (+-20 degrees), flips, gamma, contrast, blur, noise and inversion of the gray channel."""
    from ..preprocess.augment import affine_theta

    n = x.shape[0]
    angle = torch.from_numpy(rng.uniform(-20, 20, n) * math.pi / 180).float()
    flip = torch.from_numpy(np.where(rng.random(n) < 0.5, -1.0, 1.0)).float()
    theta = affine_theta(angle, torch.ones(n), torch.zeros(n), torch.zeros(n), flip, x.shape[-2:])
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    gray = x[:, :1].clamp(0, 1)
    gamma = torch.from_numpy(np.exp(rng.uniform(-0.4, 0.4, n))).float().view(n, 1, 1, 1)
    gray = gray.pow(gamma)
    if rng.random() < 0.5:
        gray = F.avg_pool2d(gray, 3, stride=1, padding=1, count_include_pad=False)
    gray = gray + torch.from_numpy(rng.normal(0, rng.uniform(0, 0.04), gray.shape)).float()
    invert = torch.from_numpy(rng.random(n) < 0.1).view(n, 1, 1, 1)
    gray = torch.where(invert, 1 - gray, gray)
    return torch.cat([gray.clamp(0, 1), x[:, 1:]], dim=1)


def fit(recogniser: HandRecogniser, data: RecognitionData, *, steps: int, batch_size: int = 128, lr: float = 3e-3,
        seed: int = 0, precision: str = "bf16", log: Callable[[str], None] = print) -> list[float]:
    """Train in place: AdamW, 3% warmup then cosine decay, cross-entropy (bf16 autocast, channels-last on the
    CPU); returns the mean loss of every 100 steps."""
    rng = np.random.default_rng(seed)
    recogniser.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(recogniser.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 33)

    def factor(step: int) -> float:
        return (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    recogniser.train()
    history, losses, started = [], [], time.perf_counter()
    for step in range(1, steps + 1):
        x, y = make_batch(data, rng, batch_size, recogniser.settings.input_size)
        with autocast("cpu", precision):
            logits = recogniser(x.contiguous(memory_format=torch.channels_last))[0]
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == steps:
            history.append(float(np.mean(losses)))
            log(f"step {step}/{steps}: loss {history[-1]:.4f}, {time.perf_counter() - started:.0f} s")
            losses = []
    recogniser.eval()
    return history


@torch.no_grad()
def hand_inputs(hands: np.ndarray, size) -> np.ndarray:
    """Whole, unaugmented hands (``(N, S, S)`` uint8) as recogniser inputs."""
    return np.stack([recogniser_input(h.astype(np.float32) / 255.0, None, size) for h in hands])


@torch.no_grad()
def _features(recogniser: HandRecogniser, inputs: np.ndarray, batch: int = 512) -> torch.Tensor:
    with evaluating(recogniser):
        return torch.cat([recogniser.embed(torch.from_numpy(inputs[k : k + batch])) for k in range(0, len(inputs), batch)])


def set_limits(recogniser: HandRecogniser, train_hands: np.ndarray, calibration_hands: np.ndarray,
               false_refusal: float = 0.001) -> dict:
    """Fit the hand features' statistics on the training hands, then set ``max_distance`` to the distance
    the ``1 - false_refusal`` quantile of ``calibration_hands`` (hands not trained on) stays below, and
    keep ``min_probability`` at 0.5 (the hand class most likely): returns what was set, for the config."""
    size = recogniser.settings.input_size
    recogniser.fit_hand_statistics(_features(recogniser, hand_inputs(train_hands, size)))
    scores = recogniser.scores(hand_inputs(calibration_hands, size))
    limit = float(np.quantile(scores["distance"], 1 - false_refusal))
    recogniser.settings.max_distance = round(limit, 2)
    return {"max_distance": recogniser.settings.max_distance, "min_probability": recogniser.settings.min_probability,
            "calibration_hands": int(len(calibration_hands)), "target_false_refusal": false_refusal,
            "calibration_false_refusal_by_probability": float(np.mean(scores["probabilities"][:, 0] < 0.5))}


def _split_paths(images_dir: Path, split: dict, exclude: set[str]) -> tuple[list[Path], list[Path]]:
    def paths(ids):
        return [images_dir / f"{i}.png" for i in ids if i not in exclude and (images_dir / f"{i}.png").exists()]

    return paths(split["train"]), paths(split["val"])


def train_recogniser(images_dir, split_file, non_hand_dir, out_dir, *, steps: int = 4000, batch_size: int = 128,
                     lr: float = 3e-3, seed: int = 0, exclude_ids=(), threads: int | None = None, command: str | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """Train a :class:`HandRecogniser` on the RSNA hands of ``split_file``'s ``train`` ids (minus
    ``exclude_ids``) against the non-hand images, set its limits on half of the ``val`` hands, and export it
    to ``out_dir/model``; returns the summary."""
    from ..data import load_split

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    train_paths, val_paths = _split_paths(Path(images_dir), load_split(split_file), set(map(str, exclude_ids)))
    data = load_recognition_data(train_paths, non_hand_dir)
    log(f"{len(data.hands)} training hands, {len(data.negatives)} real negatives, kinds {', '.join(data.kinds)}")
    torch.manual_seed(seed)
    recogniser = HandRecogniser(RecogniserSettings())
    history = fit(recogniser, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, log=log)
    calibration = load_hands(val_paths[::2])
    limits = set_limits(recogniser, data.hands, calibration)
    log(f"limits: {limits}")
    config = {"version": f"{__version__}+{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d%H%M')}",
              "training": {"images": str(images_dir), "split": str(split_file), "non_hand": str(non_hand_dir),
                           "n_hands": len(data.hands), "phantom_share": PHANTOM_SHARE,
                           "kinds": list(data.kinds), "held_out_kinds": list(HELD_OUT_KINDS),
                           "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "loss_every_100": history,
                           "limits": limits, "calibration_hands": "every other id of the split's val list",
                           "wall_clock_s": round(time.perf_counter() - started, 1), "command": command}}
    model_dir = export_recogniser(Path(out_dir) / "model", recogniser, config)
    log(f"exported {model_dir}")
    return {"model_dir": str(model_dir), "limits": limits, "final_loss": history[-1] if history else None}
