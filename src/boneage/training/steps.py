"""What the trainer's steps are built from: the training samples and their keypoints, the preprocessing
pipeline, the optimiser's parameter groups, the learning rate schedule and the EMA update."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from ..data import load_manifest, load_rsna, to_input_coordinates
from ..errors import InvalidInputError
from ..preprocess import transform_points
from ..segmentation import model_preprocessing, model_segmenter
from .config import TrainConfig

__all__ = [
    "batch_points",
    "build_optimizer",
    "ema_update",
    "input_points",
    "load_samples",
    "lr_lambda",
    "mix_batch",
    "mixup_partners",
    "param_groups",
    "training_pipeline",
]


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None, loaded=(), loaded_lr: float | None = None
                 ) -> list[dict]:
    """Trainable parameters in groups: with weight decay and without (biases, norms, 1-D); with ``loaded``
    (names of weights taken from another model) and ``loaded_lr``, those get a group of their own at that rate."""
    loaded = set(loaded) if loaded_lr is not None and loaded_lr != lr else set()
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (param.ndim > 1 and not name.endswith(".bias"), name in loaded)
        groups.setdefault(key, []).append(param)
    out = []
    for (decays, is_loaded), params in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if is_loaded:
            group["lr"] = loaded_lr
        out.append(group)
    return out


def build_optimizer(model: nn.Module, config: TrainConfig, loaded=()) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum 0.9) over ``model``'s parameter groups, as ``config`` says (the
    weights ``loaded`` by ``--init`` at ``lr * init_lr_scale``)."""
    groups = param_groups(model, config.weight_decay, config.lr, loaded, config.lr * config.init_lr_scale)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    raise InvalidInputError(f"optimizer must be adamw or sgd, got {config.optimizer!r}")


def lr_lambda(config: TrainConfig, steps_per_epoch: int, total_steps: int):
    """The learning rate factor per step: linear warmup, then constant or cosine decay to 1%."""
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Exponential moving average of parameters *and* floating buffers (BatchNorm statistics), so the
    averaged weights are evaluated with statistics that match them; integer buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        if e.is_floating_point():
            e.lerp_(b, 1.0 - decay)
        else:
            e.copy_(b)


def mixup_partners(male: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A partner for every image of the batch, of the same sex (a random permutation within each sex), so a
    mixed image keeps a valid sex input and sex label; an image alone of its sex is its own partner."""
    partner = torch.arange(male.shape[0])
    for sex in torch.unique(male):
        members = torch.nonzero(male == sex).view(-1)
        partner[members] = members[torch.randperm(members.numel(), generator=generator)]
    return partner


def mix_batch(images: torch.Tensor, male: torch.Tensor, alpha: float, generator: torch.Generator):
    """Mixup: ``lam * image + (1 - lam) * its partner's`` with one ``lam ~ Beta(alpha, alpha)`` per batch
    (the larger of ``lam`` and ``1 - lam``, so the image keeps its own identity); returns the mixed images,
    the partners' indices and ``lam``. The loss is mixed with the same weight: ``lam * loss(labels) +
    (1 - lam) * loss(partners' labels)``."""
    partner = mixup_partners(male.cpu(), generator)
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))  # Beta drawn by numpy, seeded by the run's generator
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    return lam * images + (1.0 - lam) * images[partner.to(images.device)], partner, lam


def load_samples(config: TrainConfig):
    """The labelled samples (sorted by id, cut to ``config.limit``) and a record of where they came from."""
    if config.manifest:
        samples = load_manifest(config.manifest)
        source = {"manifest": str(config.manifest)}
    elif config.images and config.labels:
        samples = load_rsna(config.images, config.labels)
        source = {"images": str(config.images), "labels": str(config.labels)}
    else:
        raise InvalidInputError("training data missing: give --images DIR --labels CSV, or --manifest CSV")
    samples.sort(key=lambda s: s.id)
    if config.limit:
        samples = samples[: config.limit]
    return samples, source


def training_pipeline(preprocess, uses_keypoints: bool):
    """The model's preprocessing for building the training set (no hand check); with hand clean-up it
    records the segmenter's version in the config, so the exported model refuses any other segmenter."""
    if uses_keypoints and preprocess.hand in ("crop", "crop_mask"):
        raise InvalidInputError("hand cropping moves the anatomy away from the keypoints' coordinates; "
                                "train region proposal models with --hand none or --hand mask")
    if preprocess.uses_segmenter:
        model_segmenter(preprocess, record_version=True)
    return model_preprocessing(preprocess, check_hand=False)


def input_points(samples, annotations: dict, preprocess) -> list[np.ndarray | None]:
    """Per sample: its 17 (or 34, for two hands) ROI keypoints in model-input pixels, or None."""
    points = []
    for sample in samples:
        annotation = annotations.get(sample.id)
        if annotation is None:
            points.append(None)
            continue
        file_hw = (0, 0)
        if preprocess.resize != "stretch":
            from PIL import Image

            with Image.open(sample.path) as image:
                file_hw = (image.height, image.width)
        points.append(to_input_coordinates(annotation.roi_points(), file_hw, preprocess.image_size, preprocess.resize))
    return points


def batch_points(points: list, index: torch.Tensor, theta: torch.Tensor, size) -> list[torch.Tensor]:
    """The batch's keypoints moved by its augmentation; ``(0, 2)`` for unannotated images."""
    out = []
    for row, i in enumerate(index.tolist()):
        if points[i] is None:
            out.append(torch.zeros(0, 2))
        else:
            out.append(transform_points(torch.from_numpy(points[i])[None], theta[row : row + 1].float(), tuple(size))[0])
    return out
