"""The training recipe: one dataclass, saved with every run and inside every exported model.

Its defaults (and ``boneage train``'s) are the recipe of the shipped default model's members.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..preprocess import AugmentConfig, PreprocessConfig
from ..utils import atomic_write

__all__ = ["DEVICES", "OPTIMIZERS", "SCHEDULES", "TTA_CHOICES", "TrainConfig"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
TTA_CHOICES = ("auto", "hflip", "none")  # auto: hflip if trained with flips


@dataclasses.dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    # data: the RSNA layout (images + labels) or a generic manifest CSV
    images: str | None = None
    labels: str | None = None
    manifest: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    split_file: str | None = None  # reuse a saved split instead of drawing one
    limit: int | None = None  # use only the first N samples (quick experiments, tests)
    cache_dir: str | None = None  # where decoded images are cached as .npy
    keypoints: str | None = None  # hand keypoints (COCO JSON or its folder): RPN supervision for ALA-Net
    annotated_only: bool = False  # train on the images with keypoints only (an RPN trained alone)
    stage_labels: str | None = None  # per-bone RUS-CHN stage labels (CSV id,bone,stage) for per-bone models
    # model
    model: str = "global_resnet18"
    head: str = "ordinal"
    width: float = 0.5
    label_range: tuple[float, float] = (0.0, 228.0)
    model_kwargs: dict = dataclasses.field(default_factory=lambda: {"max_pool": False})
    # transfer learning: start from another model's matching weights, freeze module prefixes
    init: str | list | None = None  # one model, or several loaded in order (a later one overrides an earlier one)
    init_member: int = 0  # from an ensemble: the member whose weights are loaded
    freeze: list = dataclasses.field(default_factory=list)
    init_lr_scale: float = 1.0  # learning rate of the loaded (and not frozen) weights, as a fraction of lr
    teacher: str | None = None  # distillation: a model whose soft targets the student learns too
    distill_weight: float = 0.5  # weight of the distillation loss (the labels' loss: 1 - this)
    # preprocessing and augmentation
    preprocess: PreprocessConfig = dataclasses.field(default_factory=lambda: PreprocessConfig(image_size=(100, 100)))
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup between images of the same sex, labels mixed alike (0 = off)
    tta: str = "auto"  # test-time augmentation of the exported model: auto (hflip if trained with flips) | hflip | none
    # optimisation
    epochs: int = 45
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 0.05
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: float = 1.0
    ema_decay: float = 0.998  # 0 switches the weight EMA off
    grad_clip: float = 5.0
    val_every: int = 1  # validate every N epochs (and always after the last)
    max_steps: int | None = None  # stop after this many optimiser steps (tests, smoke runs)
    # execution
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "bf16"  # bf16 (autocast) | fp32
    channels_last: bool = True
    threads: int | None = None
    progress: bool = True
    eval_batch_size: int = 256

    def resolved_tta(self) -> str:
        if self.tta == "auto":
            return "hflip" if self.augment.hflip > 0 else "none"
        return self.tta

    def model_spec(self) -> dict:
        """The registry name and keyword arguments of the model this recipe trains."""
        kwargs = {"head": self.head, "width": self.width, "label_range": list(self.label_range), **self.model_kwargs}
        return {"name": self.model, "kwargs": kwargs}

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        data["augment"] = self.augment.to_dict()
        data["label_range"] = list(self.label_range)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("preprocess"), dict):
            values["preprocess"] = PreprocessConfig.from_dict(values["preprocess"])
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        if "label_range" in values:
            values["label_range"] = tuple(values["label_range"])
        return cls(**values)

    def save(self, path: str | Path) -> None:
        atomic_write(path, json.dumps(self.to_dict(), indent=2))
