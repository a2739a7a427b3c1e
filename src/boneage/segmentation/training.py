"""Training the hand segmenter: data, loss (Dice + BCE), a thin loop, evaluation, export.

``train_segmenter`` is ``boneage train-segmenter``. From an RSNA-layout image folder and the COCO hand
keypoints it builds training masks (:func:`~boneage.segmentation.training_masks.training_masks`:
classical masks, refined with the keypoints) for every image that has keypoints, plus classical
masks for a seeded sample of the other images; holds out the annotated ids of the default model's
validation split (57 of the 568; the other images of that split are not used at all); trains the
U-Net from scratch with flips, small rotations and intensity jitter under bf16 autocast; reports per
epoch the validation Dice against the refined masks and the keypoint coverage; and exports the
segmenter with its training summary and metrics. Its steps: select the ids, read the images, build the
training masks, fit with per-epoch validation, build the artefact's config, export.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..artifacts import MODEL_FORMAT, SPLIT_FILE, default_artifact_path
from ..errors import BoneAgeError, DatasetError, InvalidInputError
from ..io import read_image, supported_suffixes
from ..preprocess import (
    AugmentConfig,
    augment_batch,
    check_usable,
    normalize_intensity,
    resize_image,
    to_grayscale,
)
from ..preprocess.masks import NoHandFoundError
from ..utils import atomic_write, autocast
from .segmenter import HandSegmenter, SegmenterSettings, export_segmenter
from .training_masks import TrainingMasks, dice_score, iou_score, keypoints_inside, training_masks

__all__ = [
    "DEFAULT_AUGMENT",
    "dice_bce_loss",
    "evaluate_segmenter",
    "fit",
    "select_ids",
    "train_segmenter",
]

DEFAULT_AUGMENT = AugmentConfig(hflip=0.5, rotation_deg=15.0, scale=(0.9, 1.1), translate=0.05,
                                contrast=0.2, brightness=0.1, gamma=0.2)
EXTRA_AREA_RANGE = (0.05, 0.75)  # classical masks of unannotated images outside this share of the image are dropped
WARMUP_FRACTION = 0.05


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice loss (per image, averaged), on float32 logits ``(N, 1, H, W)``."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probabilities = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    dice = (2 * (probabilities * target).sum(1) + smooth) / (probabilities.sum(1) + target.sum(1) + smooth)
    return bce + (1 - dice).mean()


def fit(
    segmenter: HandSegmenter,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    augment: AugmentConfig = DEFAULT_AUGMENT,
    precision: str = "bf16",
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``segmenter`` in place on ``images`` ((N, H, W) in [0, 1] at its input size, as
    :meth:`HandSegmenter.prepare` gives them) and boolean ``masks`` of the same shape.

    AdamW, linear warmup (5% of the steps) then cosine decay; the same random warp moves an image and
    its mask (the mask is resampled bilinearly: soft targets at the edge). Returns the mean training
    loss of each epoch; ``on_epoch(epoch, loss)`` runs after each (validation, logging).
    """
    if len(images) != len(masks) or len(images) == 0:
        raise InvalidInputError(f"need the same non-zero number of images and masks, got {len(images)} and {len(masks)}")
    device = next(segmenter.parameters()).device
    images_t = torch.as_tensor(np.asarray(images, dtype=np.float32))[:, None]
    masks_t = torch.as_tensor(np.asarray(masks, dtype=np.float32))[:, None]
    preprocess = segmenter.preprocess
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(images_t) / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, round(WARMUP_FRACTION * total))
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        """Linear warmup, then cosine decay to zero."""
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    history = []
    for epoch in range(1, epochs + 1):
        segmenter.train()
        order = torch.randperm(len(images_t), generator=generator)
        losses = []
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch, theta = augment_batch(images_t[index], augment, generator, return_theta=True)
            target = masks_t[index]  # warped as the image; outside the frame both are background
            grid = F.affine_grid(theta.to(target.dtype), list(target.shape), align_corners=False)
            target = F.grid_sample(target, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            batch = ((batch - preprocess.mean) / preprocess.std).to(device)
            with autocast(device, precision):
                logits = segmenter(batch)
            loss = dice_bce_loss(logits, target.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    segmenter.eval()
    return history


def evaluate_segmenter(segmenter: HandSegmenter, pixels: list[np.ndarray], references: dict[str, list[np.ndarray]],
                       points: list | None = None) -> dict:
    """Mask quality of ``segmenter`` on decoded images.

    ``references`` maps a name (``"refined"``, ``"classical"``) to one boolean mask per image; the
    result has ``dice_<name>``/``iou_<name>`` means, and with ``points`` (per image ``(K, 2)`` pixel
    coordinates or ``None``) ``keypoint_coverage`` (share of points inside) and ``all_keypoints_inside``
    (share of images with every point inside). An image where no hand is found counts as an empty mask.
    """
    predicted, no_hand = [], 0
    for i, image in enumerate(pixels):
        try:
            predicted.append(segmenter.predict_mask(image, source=f"image {i}"))
        except NoHandFoundError:
            predicted.append(np.zeros(np.asarray(image).shape[:2], dtype=bool))
            no_hand += 1
    result: dict = {"n": len(pixels), "no_hand_found": no_hand,
                    "mean_area_fraction": round(float(np.mean([m.mean() for m in predicted])), 4) if predicted else None}
    for name, masks in references.items():
        result[f"dice_{name}"] = round(float(np.mean([dice_score(p, m) for p, m in zip(predicted, masks)])), 4)
        result[f"iou_{name}"] = round(float(np.mean([iou_score(p, m) for p, m in zip(predicted, masks)])), 4)
    if points is not None:
        shares = [float(keypoints_inside(p, np.asarray(k)).mean()) for p, k in zip(predicted, points) if k is not None]
        if shares:
            result["keypoint_coverage"] = round(float(np.mean(shares)), 4)
            result["all_keypoints_inside"] = round(float(np.mean([s == 1.0 for s in shares])), 4)
    return result


# ---------------------------------------------------------------------------------------------- data
def _read_gray(path: Path) -> np.ndarray:
    gray = to_grayscale(read_image(path).pixels)
    check_usable(gray, str(path))
    return gray


def _image_files(images_dir: Path) -> dict[str, Path]:
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: image folder not found")
    suffixes = supported_suffixes()
    return {p.stem: p for p in sorted(images_dir.iterdir()) if p.is_file() and p.suffix.lower() in suffixes}


def _load_split(split_file) -> tuple[dict | None, str | None]:
    from ..data import load_split

    if split_file is None:
        return None, None
    path = default_artifact_path(MODEL_FORMAT) / SPLIT_FILE if str(split_file) == "default" else Path(split_file)
    if not path.exists():
        if str(split_file) == "default":
            return None, None
        raise DatasetError(f"{path}: split file not found")
    return load_split(path), str(path)


def select_ids(ids: list[str], annotated: set[str], split: dict | None, *, extra_images: int, val_fraction: float = 0.1,
               seed: int = 0) -> tuple[list[str], list[str], list[str], str]:
    """``(train_annotated, val, extra, how)``: the annotated ids in ``split["val"]`` are held out (else a
    seeded ``val_fraction`` of them, ``how`` saying so); ``extra_images`` of the other ids, never one of
    ``split["val"]``, are drawn with a seeded generator."""
    with_keypoints = sorted(set(ids) & annotated)
    if len(with_keypoints) < 2:
        raise DatasetError(f"fewer than two images have keypoints ({len(with_keypoints)}); check --keypoints")
    held_out = set(split["val"]) if split else set()
    rng = np.random.default_rng(seed)
    val = sorted(set(with_keypoints) & held_out)
    how = "split"
    if not val:
        count = min(len(with_keypoints) - 1, max(1, round(val_fraction * len(with_keypoints))))
        val = sorted(rng.choice(with_keypoints, size=count, replace=False).tolist())
        how = f"seeded {val_fraction:.0%} of the annotated ids (seed {seed})"
    train = [i for i in with_keypoints if i not in set(val)]
    candidates = sorted(i for i in ids if i not in annotated and i not in held_out)
    extra = []
    if extra_images and candidates:
        extra = sorted(rng.choice(candidates, size=min(extra_images, len(candidates)), replace=False).tolist())
    return train, val, extra, how


def _points_px(hand, shape) -> np.ndarray:
    height, width = shape
    return hand.points * np.array([width, height], dtype=np.float32)


@dataclasses.dataclass
class _Decoded:
    """Decoded images of one role: ``(id, grayscale)`` pairs and per image its keypoints in pixels (or None)."""

    grays: list
    points: list

    @property
    def ids(self) -> list[str]:
        """The ids of the images that were read."""
        return [image_id for image_id, _ in self.grays]

    def normalised(self) -> list[np.ndarray]:
        """The images percentile-normalised, as the classical masks want them."""
        return [normalize_intensity(g, "percentile", (0.5, 99.5)) for _, g in self.grays]


@dataclasses.dataclass
class _SegmenterData:
    """The decoded training, extra and validation images, then their training masks and the masks' report."""

    train: _Decoded
    extra: _Decoded
    val: _Decoded
    train_masks: TrainingMasks | None = None
    val_masks: TrainingMasks | None = None
    extra_masks: TrainingMasks | None = None
    kept_extra: list[int] = dataclasses.field(default_factory=list)  # indices of the extra images kept
    masks_report: dict = dataclasses.field(default_factory=dict)


def _select_images(images_dir: Path, hands: dict, split_file, *, extra_images: int, val_fraction: float,
                   seed: int) -> tuple[dict[str, Path], tuple[list[str], list[str], list[str]], str | None]:
    """The image files, the ``(train_annotated, val, extra)`` ids and where the validation ids came from."""
    files = _image_files(images_dir)
    split, split_source = _load_split(split_file)
    train_annotated, val_ids, extra_ids, selection = select_ids(list(files), set(hands), split, extra_images=extra_images,
                                                                val_fraction=val_fraction, seed=seed)
    return files, (train_annotated, val_ids, extra_ids), split_source if selection == "split" else selection


def _read_images(ids: list[str], files: dict[str, Path], hands: dict | None, log: Callable[[str], None]) -> _Decoded:
    """Read ``ids`` (with their keypoints when ``hands`` is given); unreadable or unusable ones are skipped with a warning."""
    grays, points, skipped = [], [], []
    for image_id in ids:
        try:
            gray = _read_gray(files[image_id])
        except BoneAgeError as err:
            skipped.append(str(err))
            continue
        grays.append((image_id, gray))
        points.append(_points_px(hands[image_id], gray.shape) if hands is not None else None)
    for message in skipped:
        log(f"warning: skipped {message}")
    return _Decoded(grays, points)


def _build_masks(data: _SegmenterData, log: Callable[[str], None]) -> None:
    """Training masks (refined with the keypoints where there are some), the extra images' kept by area, and their report."""
    data.train_masks = training_masks(data.train.normalised(), data.train.points)
    data.val_masks = training_masks(data.val.normalised(), data.val.points)
    data.extra_masks = training_masks(data.extra.normalised())
    low, high = EXTRA_AREA_RANGE
    data.kept_extra = [i for i, m in enumerate(data.extra_masks.masks) if low <= m.mean() <= high]
    data.masks_report = {"train_annotated": data.train_masks.report(), "validation": data.val_masks.report(),
                         "extra": {**data.extra_masks.report(), "kept": len(data.kept_extra)}}
    for name in ("train_annotated", "validation"):
        r = data.masks_report[name]
        log(f"{name} masks: keypoint coverage {r['before']['keypoint_coverage']} -> {r['after']['keypoint_coverage']}, "
            f"all 21 inside {r['before']['all_keypoints_inside']} -> {r['after']['all_keypoints_inside']} "
            f"({r['n_refined']} of {r['n_images']} refined)")
    log(f"extra masks: {len(data.kept_extra)} of {len(data.extra.grays)} kept (area {low:.0%}-{high:.0%})")


def _training_arrays(segmenter: HandSegmenter, data: _SegmenterData, size: int) -> tuple[list, list]:
    """The training inputs at the segmenter's input size and their masks resized to it (annotated, then kept extra)."""
    extra = [data.extra.grays[i] for i in data.kept_extra]
    inputs = [segmenter.prepare(g, image_id) for image_id, g in data.train.grays]
    inputs += [segmenter.prepare(g, image_id) for image_id, g in extra]
    targets = [m for m in data.train_masks.masks] + [data.extra_masks.masks[i] for i in data.kept_extra]
    targets = [resize_image(m.astype(np.float32), (size, size)) >= 0.5 for m in targets]
    return inputs, targets


def _fit_with_validation(segmenter: HandSegmenter, inputs: list, targets: list, data: _SegmenterData, recipe: dict,
                         device: str, log: Callable[[str], None]) -> list[dict]:
    """Fit on ``device`` as ``recipe`` says, validating and logging after every epoch; returns the history."""
    segmenter.to(device)
    val_pixels = [g for _, g in data.val.grays]
    references = {"refined": data.val_masks.masks, "classical": data.val_masks.classical}
    history: list[dict] = []
    epoch_start = [time.perf_counter()]
    epochs = recipe["epochs"]

    def on_epoch(epoch: int, loss: float) -> None:
        """Validate the epoch's weights, record and log them, restart the epoch clock."""
        metrics = evaluate_segmenter(segmenter, val_pixels, references, data.val.points)
        seconds = time.perf_counter() - epoch_start[0]
        history.append({"epoch": epoch, "train_loss": round(loss, 5), "seconds": round(seconds, 1), **metrics})
        log(f"epoch {epoch}/{epochs}: loss {loss:.4f}, val Dice {metrics['dice_refined']:.3f} (refined) "
            f"{metrics['dice_classical']:.3f} (classical), keypoints inside {metrics.get('keypoint_coverage')}, "
            f"all 21 inside {metrics.get('all_keypoints_inside')}, no hand {metrics['no_hand_found']}, {seconds:.0f}s")
        epoch_start[0] = time.perf_counter()

    fit(segmenter, np.stack(inputs), np.stack(targets), epochs=epochs, batch_size=recipe["batch_size"], lr=recipe["lr"],
        weight_decay=recipe["weight_decay"], precision=recipe["precision"], seed=recipe["seed"], on_epoch=on_epoch)
    segmenter.cpu().eval()
    return history


def _artefact_config(data: _SegmenterData, recipe: dict, final: dict, *, images_dir: Path, keypoints, split_source,
                     wall: float, device: str, command: str | None) -> dict:
    """The exported segmenter's config: what it was trained on and how, and its last epoch's validation metrics."""
    return {
        "name": "hand-unet",
        "version": f"{__version__}+{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d%H%M')}",
        "training": {
            "images": str(images_dir),
            "keypoints": None if isinstance(keypoints, dict) else str(keypoints),
            "n_train_annotated": len(data.train.grays),
            "n_train_extra": len(data.kept_extra),
            "n_validation": len(data.val.grays),
            "validation_split": split_source,
            "masks": data.masks_report,
            "recipe": recipe,
            "wall_clock_s": round(wall, 1),
            "hardware": (torch.cuda.get_device_name(0) if device == "cuda"
                         else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"),
            "boneage_version": __version__,
            "command": command,
        },
        "metrics": {
            "validation": {k: v for k, v in final.items() if k not in ("epoch", "train_loss", "seconds")},
            "measured_on": f"{len(data.val.grays)} held-out annotated images at their own size (float32 weights); "
                           "'refined' = classical masks refined with the 21 keypoints",
        },
    }


def _export(out_dir: Path, segmenter: HandSegmenter, config: dict, data: _SegmenterData, split_source,
            history: list[dict]) -> Path:
    """Write the segmenter artefact (with the ids it was trained and validated on) and ``history.json``."""
    split_record = {"train_annotated": data.train.ids, "train_extra": [data.extra.grays[i][0] for i in data.kept_extra],
                    "val": data.val.ids, "source": split_source}
    model_dir = export_segmenter(out_dir / "model", segmenter, config, split=split_record)
    atomic_write(out_dir / "history.json", json.dumps(history, indent=1))
    return model_dir


def train_segmenter(
    images_dir: str | Path,
    keypoints,
    out_dir: str | Path,
    *,
    size: int = 128,
    epochs: int = 16,
    extra_images: int = 2000,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    split_file: str | Path | None = "default",
    val_fraction: float = 0.1,
    seed: int = 0,
    threads: int | None = None,
    precision: str = "bf16",
    device: str = "auto",
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train a :class:`HandSegmenter` and export it to ``out_dir/model``; returns the training summary.

    ``keypoints`` is a COCO file/folder (see :func:`boneage.data.load_hand_keypoints`) or its loaded
    dict. Images with keypoints are the annotated set; the annotated ids in ``split_file``'s ``val``
    list (``"default"``: the shipped default model's split; ``None`` or none in common: a seeded
    ``val_fraction`` of them) are held out for validation. ``extra_images`` other images (never ones
    of that validation split) are added with classical masks whose area is 5-75% of the image.
    ``out_dir`` also gets ``history.json``.
    """
    from ..data import load_hand_keypoints

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    hands = keypoints if isinstance(keypoints, dict) else load_hand_keypoints(keypoints)
    files, (train_annotated, val_ids, extra_ids), split_source = _select_images(
        images_dir, hands, split_file, extra_images=extra_images, val_fraction=val_fraction, seed=seed)

    torch.manual_seed(seed)  # the U-Net's initial weights
    segmenter = HandSegmenter(SegmenterSettings(input_size=(size, size)))
    log(f"training masks: {len(train_annotated)} annotated + {len(extra_ids)} other images for training, "
        f"{len(val_ids)} annotated held out ({split_source or 'no split file'})")
    data = _SegmenterData(train=_read_images(train_annotated, files, hands, log), extra=_read_images(extra_ids, files, None, log),
                          val=_read_images(val_ids, files, hands, log))
    _build_masks(data, log)
    inputs, targets = _training_arrays(segmenter, data, size)
    log(f"data ready in {time.perf_counter() - started:.0f}s: {len(inputs)} training images at {size}x{size}")

    recipe = {"size": size, "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
              "optimizer": "adamw", "schedule": f"linear warmup {WARMUP_FRACTION:.0%} + cosine", "loss": "BCE + soft Dice",
              "augment": DEFAULT_AUGMENT.to_dict(), "precision": precision, "seed": seed, "extra_images": extra_images}
    history = _fit_with_validation(segmenter, inputs, targets, data, recipe, device, log)
    wall = time.perf_counter() - started
    config = _artefact_config(data, recipe, history[-1], images_dir=images_dir, keypoints=keypoints,
                              split_source=split_source, wall=wall, device=device, command=command)
    model_dir = _export(out_dir, segmenter, config, data, split_source, history)
    log(f"exported {model_dir} after {wall / 60:.1f} min")
    masks = {k: {"before": v["before"], "after": v["after"]} for k, v in data.masks_report.items() if v["n_with_keypoints"]}
    return {"model_dir": str(model_dir), "wall_clock_s": round(wall, 1), "validation": config["metrics"]["validation"],
            "masks": masks}
