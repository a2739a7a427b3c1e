"""The training loop: thin by design; losses live in the models, metrics in ``boneage.evaluation``.

:class:`Trainer` runs one training in named steps, after nnU-Net's trainer hooks: :meth:`~Trainer.initialize`
(recipe, samples and split, model, data, optimiser, restored state), then per epoch :meth:`~Trainer.train_epoch`
(:meth:`~Trainer.train_step` per batch), :meth:`~Trainer.validate` and :meth:`~Trainer.save_checkpoint`, and
:meth:`~Trainer.finish` (export the best checkpoint, then measure the exported model). The pieces they use are in
:mod:`.steps`; ranks and collectives in :mod:`.distributed`.

* Images are decoded and preprocessed once into a uint8 array in memory; each batch is augmented on
  the fly (``boneage.preprocess.augment_batch``) from a seeded ``torch.Generator``.
* bf16 autocast and channels-last on CPU and GPU; AdamW with warmup + cosine; an EMA of the weights
  is what gets validated and exported.
* Every epoch: validation, ``last.pt`` (always) and ``best.pt`` (when validation MAE improves), both
  written atomically; ``resume=True`` continues from ``last.pt``: a killed run loses at most one epoch.
* Under ``torchrun`` (``WORLD_SIZE`` > 1) the same code runs DistributedDataParallel: each rank takes a
  disjoint shard of every epoch's permutation, validation predictions are gathered, rank 0 writes.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .. import __version__
from ..data import apply_split, load_hand_keypoints, load_images, load_split, samples_summary, save_split, split_samples
from ..data.rus_chn import BONES, load_stage_labels
from ..errors import InvalidInputError
from ..evaluation import bone_detection_metrics, compute_metrics, plot_agreement, roi_detection_metrics
from ..inference import predict_bones, predict_images
from ..models import create_model, export_model, load_checkpoint, load_model, save_checkpoint, write_model_config
from ..preprocess import augment_batch, to_model_input
from ..utils import atomic_write, autocast
from .config import TrainConfig
from .distill import check_teacher, distillation_loss, teacher_targets
from .distributed import Distributed, hardware_description
from .steps import batch_points, build_optimizer, ema_update, input_points, load_samples, lr_lambda, mix_batch, training_pipeline
from .transfer import freeze, frozen_modules_eval, load_matching_weights, stage_label_tensor

__all__ = ["Trainer", "train", "hardware_description"]


def train(config: TrainConfig, *, resume: bool = False, command: str | None = None, log=print) -> dict:
    """Train a model as ``config`` says; returns a summary with the best validation metrics and paths."""
    dist = Distributed(config.device)
    try:
        trainer = Trainer(config, dist, command=command, log=log if dist.is_main else _quiet)
        return trainer.run(resume=resume)
    finally:
        dist.close()


def _quiet(*_args, **_kwargs) -> None:
    """The log of every rank but rank 0: says nothing."""


@dataclasses.dataclass
class TrainData:
    """The run's samples and split, then its decoded images, labels and (for RPN models) keypoints."""

    samples: list
    source: dict
    split: dict
    train_samples: list
    val_samples: list
    train_images: torch.Tensor | None = None  # (N, H, W) uint8
    train_age: torch.Tensor | None = None
    train_male: torch.Tensor | None = None
    val_images: np.ndarray | None = None
    val_age: np.ndarray | None = None
    val_sex: list | None = None
    train_points: list | None = None  # per image: ROI keypoints in model-input pixels, or None
    val_points: list | None = None
    train_stage_labels: torch.Tensor | None = None  # (N, 13) per-bone stages, -1 where unknown


@dataclasses.dataclass
class EpochStats:
    """One epoch's training: losses per step, summed loss parts, images seen, wall clock."""

    started: float
    losses: list = dataclasses.field(default_factory=list)
    part_sums: dict = dataclasses.field(default_factory=dict)
    seen: int = 0
    train_seconds: float = 0.0


class Trainer:
    """One training run of ``config`` on ``dist``'s device(s), in named steps; :meth:`run` runs them all."""

    def __init__(self, config: TrainConfig, dist: Distributed, *, command: str | None = None, log=print):
        self.config, self.dist, self.device, self.command, self.log = config, dist, dist.device, command, log
        self.out_dir = Path(config.out_dir)
        self.last_path, self.best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        self.checkpoint: dict | None = None
        self.data: TrainData | None = None
        self.model = self.ema = self.train_module = self.teacher = None
        self.optimizer = self.scheduler = self.generator = None
        self.steps_per_epoch = 0
        self.loaded_names: list[str] = []  # weights taken from --init
        self.start_epoch, self.best_mae, self.history, self.step = 0, float("inf"), [], 0
        self.started = time.time()
        self.stop = False  # max_steps reached

    @property
    def uses_keypoints(self) -> bool:
        """Whether the model trains a region proposal network on hand keypoints."""
        return self.model.capabilities.needs_keypoints

    # ----------------------------------------------------------------------------------------- the run
    def run(self, resume: bool = False) -> dict:
        """Set up (from ``last.pt`` when ``resume``), train the remaining epochs, export the best."""
        self.initialize(resume)
        self.on_train_start()
        for epoch in range(self.start_epoch, self.config.epochs):
            self.run_epoch(epoch)
            if self.stop:
                break
        return self.finish()

    def initialize(self, resume: bool) -> None:
        """Everything before the first step: recipe, samples, model, data, optimiser, restored state."""
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.config = self.resume_config()
        self.data = self.select_samples()
        torch.manual_seed(self.config.seed)
        self.build_model()  # before decoding: a bad option fails fast
        self.load_data()
        self.place_model()
        self.build_optimizer()
        if self.checkpoint is not None:
            self.restore(self.checkpoint)
        self.wrap_distributed()

    def resume_config(self) -> TrainConfig:
        """Load ``last.pt`` (when there is one) and return the recipe to continue: the saved one."""
        config = self.config
        if not self.last_path.exists():
            self.log(f"--resume: no {self.last_path} yet, starting a new run")
            return config
        self.checkpoint = checkpoint = load_checkpoint(self.last_path)
        saved = TrainConfig.from_dict(checkpoint["config"]["training"]["recipe"])
        # The saved recipe wins (apart from where and how verbosely to run): a resumed run is the
        # same run. Settings given now that differ are named, not silently dropped.
        for keep in ("device", "threads", "progress", "max_steps"):
            setattr(saved, keep, getattr(config, keep))
        changed = [f"{k} ({v!r} -> saved {saved.to_dict()[k]!r})" for k, v in config.to_dict().items()
                   if k != "out_dir" and v != saved.to_dict()[k]]
        if changed:
            self.log(f"--resume: continuing the saved recipe; ignoring changed settings: {', '.join(changed)}")
        self.log(f"resuming from {self.last_path} (epoch {checkpoint['epoch'] + 1} done)")
        return saved

    def select_samples(self) -> TrainData:
        """The samples and their train/validation split: the run's own when resuming, else the split file or a new one."""
        config = self.config
        samples, source = load_samples(config)
        split_path = self.out_dir / "split.json"
        if self.checkpoint is not None and split_path.exists():
            split = load_split(split_path)
        elif config.split_file:
            split = load_split(config.split_file)
        else:
            split = split_samples(samples, config.val_fraction, config.split_seed)
        train_samples, val_samples = apply_split(samples, split)
        return TrainData(samples, source, split, train_samples, val_samples)

    def build_model(self) -> None:
        """Create the model the recipe names (its initial weights from the seeded torch RNG)."""
        spec = self.config.model_spec()
        self.model = create_model(spec["name"], **spec["kwargs"])
        if self.config.mixup < 0 or (self.config.mixup > 0 and self.uses_keypoints):
            raise InvalidInputError(f"--mixup must be 0 (off) or a positive Beta alpha, without --keypoints; "
                                    f"got {self.config.mixup:g}")
        self.transfer()
        self.load_teacher()

    def load_teacher(self) -> None:
        """``--teacher``: the model whose soft targets the student learns too (frozen, in evaluation mode)."""
        config = self.config
        if not config.teacher:
            return
        if not 0.0 <= config.distill_weight <= 1.0:
            raise InvalidInputError(f"--distill-weight must be between 0 and 1, got {config.distill_weight}")
        loaded = load_model(config.teacher)
        check_teacher(loaded, config.preprocess)
        self.teacher = loaded.model.eval().requires_grad_(False)
        self.log(f"--teacher {loaded.source}: {loaded.name}, validation MAE {loaded.validation_mae} months; "
                 f"distillation weight {config.distill_weight:g}")

    def transfer(self) -> None:
        """``--init``: the matching weights of another model (a new run only; a resumed one has its own);
        ``--freeze``: no gradients for the named modules."""
        config = self.config
        if config.init and self.checkpoint is None:
            sources = [config.init] if isinstance(config.init, str) else list(config.init)
            for source in sources:
                report = load_matching_weights(self.model, source, config.init_member)
                self.loaded_names = sorted(set(self.loaded_names) | set(report.loaded))
                self.log(report.summary())
        if config.freeze:
            frozen = freeze(self.model, config.freeze)
            self.log(f"--freeze {','.join(config.freeze)}: {len(frozen)} parameter tensors frozen")

    def load_data(self) -> None:
        """Keypoints for RPN models, the split on record, then every image decoded once into memory."""
        pipeline = training_pipeline(self.config.preprocess, self.uses_keypoints)
        self.load_keypoints()
        self.load_stage_labels()
        self.record_split()
        self.decode_images(pipeline)

    def load_keypoints(self) -> None:
        """For RPN models: every image's ROI keypoints (``--annotated-only``: train on annotated images only)."""
        config, data = self.config, self.data
        name = config.model_spec()["name"]
        if not self.uses_keypoints:
            if config.annotated_only:
                raise InvalidInputError(f"--annotated-only applies to models with a region proposal network, not {name}")
            return
        if not config.keypoints:
            raise InvalidInputError(
                f"model {name} trains its region proposal network on hand keypoints: give --keypoints "
                "PATH (a COCO keypoint JSON or its folder, e.g. ../shared/data/annotations/hand-keypoints-21)"
            )
        annotations = load_hand_keypoints(config.keypoints)
        if config.annotated_only:
            data.train_samples = [s for s in data.train_samples if s.id in annotations]
            if not data.train_samples:
                raise InvalidInputError(f"--annotated-only: no training image has keypoints in {config.keypoints}")
        data.train_points = input_points(data.train_samples, annotations, config.preprocess)
        data.val_points = input_points(data.val_samples, annotations, config.preprocess)
        self.log(f"keypoints: {sum(p is not None for p in data.train_points)} training and "
                 f"{sum(p is not None for p in data.val_points)} validation images annotated ({config.keypoints})")

    def load_stage_labels(self) -> None:
        """``--stage-labels``: per-bone stage labels for the training images (per-bone models only)."""
        config, data = self.config, self.data
        if not config.stage_labels:
            return
        if not self.model.capabilities.per_bone:
            raise InvalidInputError(f"--stage-labels applies to per-bone models (rus_chn), not {config.model}")
        data.train_stage_labels = stage_label_tensor(data.train_samples, load_stage_labels(config.stage_labels), BONES)
        labelled = int((data.train_stage_labels >= 0).any(1).sum())
        if not labelled:
            raise InvalidInputError(f"--stage-labels {config.stage_labels}: no training image's id is in it")
        self.log(f"stage labels: {int((data.train_stage_labels >= 0).sum())} bones of {labelled} training images")

    def record_split(self) -> None:
        """A new run's split and recipe, written by rank 0 (every rank drew the same split)."""
        if self.dist.is_main and self.checkpoint is None:
            save_split(self.data.split, self.out_dir / "split.json")
            self.config.save(self.out_dir / "train_config.json")
        self.dist.barrier()
        self.log(f"data: {len(self.data.train_samples)} train / {len(self.data.val_samples)} validation images "
                 f"({self.data.source})")

    def decode_images(self, pipeline) -> None:
        """Decode and preprocess the training and validation images, and gather their labels."""
        config, data = self.config, self.data
        t0 = time.time()
        options = dict(cache_dir=config.cache_dir, progress=config.progress and self.dist.is_main, pipeline=pipeline)
        data.train_images = torch.from_numpy(load_images(data.train_samples, config.preprocess, **options))
        data.val_images = load_images(data.val_samples, config.preprocess, **options)
        self.log(f"images decoded in {time.time() - t0:.1f} s at {config.preprocess.image_size}")
        data.train_age = torch.tensor([s.bone_age_months for s in data.train_samples], dtype=torch.float32)
        data.train_male = torch.tensor([s.male for s in data.train_samples], dtype=torch.float32)
        data.val_age = np.array([s.bone_age_months for s in data.val_samples])
        data.val_sex = [s.sex for s in data.val_samples]

    def place_model(self) -> None:
        """Initialise the model from the training labels (not an output head --init loaded), move it to the device,
        copy it for the EMA."""
        if any(name.startswith("head.") or ".head." in name for name in self.loaded_names):
            self.log("--init loaded the output head: it is not re-initialised from the training labels")
        else:
            self.model.init_from_labels(self.data.train_age)
        self.model.to(self.device)
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.teacher is not None:
            self.teacher.to(self.device)
        self.ema = copy.deepcopy(self.model).eval() if self.config.ema_decay > 0 else None

    def build_optimizer(self) -> None:
        """Optimiser, warmup + cosine schedule over every step, and this rank's augmentation generator."""
        config = self.config
        self.optimizer = build_optimizer(self.model, config, self.loaded_names)
        per_rank = len(self.data.train_samples) // self.dist.world_size
        self.steps_per_epoch = max(1, per_rank // config.batch_size)
        total_steps = self.steps_per_epoch * config.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, self.steps_per_epoch, total_steps))
        self.generator = torch.Generator().manual_seed(config.seed * 1000 + self.dist.rank)

    def restore(self, checkpoint: dict) -> None:
        """Continue exactly where ``checkpoint`` ended: weights, EMA, optimiser, schedule, RNGs, history."""
        self.model.load_state_dict(checkpoint["state_dict"])
        if self.ema is not None and checkpoint.get("ema_state_dict"):
            self.ema.load_state_dict(checkpoint["ema_state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.generator.set_state(checkpoint["rng"][self.dist.rank % len(checkpoint["rng"])])
        if checkpoint.get("torch_rng") is not None:
            torch.set_rng_state(checkpoint["torch_rng"])
        if checkpoint.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        self.start_epoch, self.best_mae = checkpoint["epoch"] + 1, checkpoint["best_metric"]
        self.history, self.step = checkpoint["history"], checkpoint["step"]

    def wrap_distributed(self) -> None:
        """Under torchrun, train through DistributedDataParallel; else through the model itself."""
        self.train_module = self.model
        if self.dist.world_size > 1:
            # An RPN trained alone leaves the bone age layers out of its loss.
            self.train_module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.model.capabilities.partial_loss,
            )

    def on_train_start(self) -> None:
        """Log the model and the plan; start the clock (counting the epochs a resumed run already took)."""
        config, spec = self.config, self.config.model_spec()
        self.log(
            f"model {spec['name']} {spec['kwargs']}: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M parameters; "
            f"{config.epochs} epochs x {self.steps_per_epoch} steps of {config.batch_size} on {hardware_description(self.device)}"
            f"{f' x {self.dist.world_size} processes' if self.dist.world_size > 1 else ''}"
        )
        self.started = time.time() - sum(h.get("seconds", 0.0) for h in self.history)

    # ------------------------------------------------------------------------------------------ epochs
    def run_epoch(self, epoch: int) -> None:
        """Train one epoch, validate when due, record it, write the checkpoints; every rank waits for rank 0."""
        stats = self.train_epoch(epoch)
        metrics, improved = None, False
        if (epoch + 1) % self.config.val_every == 0 or epoch + 1 == self.config.epochs or self.stop:
            metrics = self.validate()
            improved = metrics["mae_months"] < self.best_mae
            self.best_mae = min(self.best_mae, metrics["mae_months"])
        self.on_epoch_end(epoch, stats, metrics)
        self.save_checkpoint(epoch, metrics, improved)
        self.dist.barrier()

    def train_epoch(self, epoch: int) -> EpochStats:
        """One pass over this rank's shard of the epoch's seeded permutation (to ``max_steps`` at most)."""
        config = self.config
        self.model.train()
        frozen_modules_eval(self.model)
        stats = EpochStats(started=time.time())
        order = torch.randperm(len(self.data.train_samples), generator=torch.Generator().manual_seed(config.seed + 7919 * epoch))
        shard = order[self.dist.rank :: self.dist.world_size][: self.steps_per_epoch * config.batch_size]
        batches = range(self.steps_per_epoch)
        bar = None
        if config.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False, file=sys.stderr)
            batches = bar
        for b in batches:
            index = shard[b * config.batch_size : (b + 1) * config.batch_size]
            loss_value, parts = self.train_step(index)
            for name, value in parts.items():
                stats.part_sums[name] = stats.part_sums.get(name, 0.0) + value
            if not math.isfinite(loss_value):
                raise RuntimeError(f"training diverged: loss {loss_value} at epoch {epoch + 1}, step {b}; lower --lr")
            stats.losses.append(loss_value)
            stats.seen += len(index)
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(stats.losses[-20:]):.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            if config.max_steps and self.step >= config.max_steps:
                self.stop = True
                break
        if bar is not None:
            bar.close()
        stats.train_seconds = time.time() - stats.started
        return stats

    def train_step(self, index: torch.Tensor) -> tuple[float, dict[str, float]]:
        """Augment the batch of ``index``, forward under autocast, step optimiser, schedule and EMA;
        returns the loss and its named parts."""
        config, data = self.config, self.data
        x, theta = augment_batch(data.train_images[index].unsqueeze(1).float() / 255.0, config.augment, self.generator,
                                 return_theta=True)
        partner, lam = None, 1.0
        if config.mixup > 0:
            x, partner, lam = mix_batch(x, data.train_male[index], config.mixup, self.generator)
        x = to_model_input(x, config.preprocess).to(self.device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batch = {"bone_age_months": data.train_age[index].to(self.device), "male": data.train_male[index].to(self.device)}
        if data.train_stage_labels is not None:
            batch["stage_labels"] = data.train_stage_labels[index].to(self.device)
        extra = {}
        if self.uses_keypoints:
            extra["keypoints"] = batch_points(data.train_points, index, theta, x.shape[-2:])
        with autocast(self.device, config.precision):
            outputs = self.train_module(x, batch["male"], **extra)
            targets = teacher_targets(self.teacher, x, batch["male"]) if self.teacher is not None else None
        parts = self.model.compute_loss(outputs, batch)
        if partner is not None:
            partner = partner.to(self.device)
            theirs = self.model.compute_loss(outputs, {key: value[partner] for key, value in batch.items()})
            parts = {name: lam * value + (1.0 - lam) * theirs[name] for name, value in parts.items()}
        if targets is not None:
            parts["distill"] = distillation_loss(outputs, targets)
            parts["loss"] = (1.0 - config.distill_weight) * parts["loss"] + config.distill_weight * parts["distill"]
        part_values = {name: float(value.detach()) for name, value in parts.items() if name != "loss"}
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            ema_update(self.ema, self.model, min(config.ema_decay, (1 + self.step) / (10 + self.step)))
        self.step += 1
        return float(parts["loss"].detach()), part_values

    def validate(self) -> dict:
        """Metrics of the EMA (else the model) on the validation split, sharded across ranks and gathered."""
        eval_model = self.ema if self.ema is not None else self.model
        dist, data, config = self.dist, self.data, self.config
        dist.broadcast_buffers(eval_model)  # every rank validates the weights rank 0 will save
        part = np.arange(dist.rank, len(data.val_sex), dist.world_size)
        predictions = predict_images(
            eval_model, data.val_images[part], [1.0 if data.val_sex[i] == "M" else 0.0 for i in part], config.preprocess,
            batch_size=config.eval_batch_size, device=self.device, precision=config.precision,
            channels_last=config.channels_last,
        )
        val_pred = np.zeros(len(data.val_sex))
        for idx, pred in dist.all_gather((part, predictions)):
            val_pred[idx] = pred
        return compute_metrics(val_pred, data.val_age, data.val_sex)

    def on_epoch_end(self, epoch: int, stats: EpochStats, metrics: dict | None) -> None:
        """Add the epoch to the history and log it."""
        losses, part_sums = stats.losses, stats.part_sums
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else None,
            "train_loss_parts": {k: round(v / max(1, len(losses)), 5) for k, v in part_sums.items()},
            "val_mae_months": metrics["mae_months"] if metrics else None,
            "val_rmse_months": metrics["rmse_months"] if metrics else None,
            "lr": self.scheduler.get_last_lr()[0],
            "train_images_per_s": round(stats.seen * self.dist.world_size / max(stats.train_seconds, 1e-9), 1),
            "seconds": round(time.time() - stats.started, 1),
        }
        self.history.append(record)
        parts_text = ", ".join(f"{k} {v:.4f}" for k, v in record["train_loss_parts"].items())
        val_text = (f"val MAE {metrics['mae_months']:.2f} months (best {self.best_mae:.2f}), RMSE {metrics['rmse_months']:.2f}"
                    if metrics else "not validated")
        self.log(
            f"epoch {epoch + 1}/{self.config.epochs}: loss {record['train_loss']:.4f}"
            f"{f' ({parts_text})' if len(part_sums) > 1 else ''}, {val_text}, "
            f"{record['train_images_per_s']:.0f} img/s, {record['seconds']:.0f} s"
        )

    def save_checkpoint(self, epoch: int, metrics: dict | None, improved: bool) -> None:
        """Rank 0 writes ``best.pt`` (when ``improved``), ``last.pt`` and ``history.json``; every rank's RNG is in them."""
        rng_states = self.dist.all_gather(self.generator.get_state())
        if not self.dist.is_main:
            return
        state = {
            "config": self.checkpoint_config(),
            "state_dict": self.model.state_dict(),
            "ema_state_dict": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "best_metric": self.best_mae,
            "history": self.history,
            "rng": rng_states,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }
        if metrics is not None:
            state["config"]["metrics"] = {"validation": metrics, "epoch": epoch + 1}
        if improved:  # best first: a kill between the two writes must not record a best that is not saved
            save_checkpoint(self.best_path, state)
        save_checkpoint(self.last_path, state)
        atomic_write(self.out_dir / "history.json", json.dumps(self.history, indent=1))

    def checkpoint_config(self) -> dict:
        """The model config stored in the checkpoints (and, with its metrics, in the exported model)."""
        config, data = self.config, self.data
        spec = config.model_spec()
        split = data.split
        return {
            "name": f"{spec['name']}-{spec['kwargs']['head']}",
            "version": f"{__version__}+{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d%H%M')}",
            "boneage_version": __version__,
            "torch_version": str(torch.__version__),
            "model": spec,
            "preprocess": config.preprocess.to_dict(),
            "labels": {"unit": "months", "min": float(config.label_range[0]), "max": float(config.label_range[1])},
            "inference": {"tta": config.resolved_tta()},
            "inputs": {"image": "grayscale radiograph of the left hand", "sex": "M or F"},
            "training": {
                "data": {**data.source, **samples_summary(data.samples)},
                "split": {"seed": split.get("seed"), "val_fraction": split.get("val_fraction"),
                          "n_train": len(split["train"]), "n_val": len(split["val"]), "file": "split.json"},
                "recipe": config.to_dict(),
                "command": self.command,
                "epochs_run": len(self.history),
                "duration_s": round(time.time() - self.started, 1),
                "hardware": hardware_description(self.device),
                "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        }

    # --------------------------------------------------------------------------------------------- end
    def finish(self) -> dict:
        """The run's summary; rank 0 exports the best checkpoint and measures the exported model."""
        summary = {"out_dir": str(self.out_dir), "best_val_mae_months": self.best_mae, "epochs_run": len(self.history),
                   "steps": self.step}
        if self.dist.is_main and self.best_path.exists():
            summary.update(self.export_best())
        self.dist.barrier()
        return summary

    def export_best(self) -> dict:
        """Export ``best.pt`` as a float16 model folder, then measure the exported model itself on the validation split."""
        data = self.data
        loaded = load_model(self.best_path)
        config = loaded.config
        epoch = config["metrics"]["epoch"]
        if loaded.model.capabilities.output_map:
            self.fit_output_map(loaded)
        model_dir = self.out_dir / "model"
        export_model(model_dir, loaded.model, config, dtype=torch.float16)
        exported = load_model(model_dir)
        males = [1.0 if s == "M" else 0.0 for s in data.val_sex]
        predictions = predict_images(exported.model, data.val_images, males, exported.preprocess, tta=exported.tta)
        metrics = compute_metrics(predictions, data.val_age, data.val_sex)
        config["metrics"] = {"validation": metrics, "epoch": epoch,
                             "measured_on": f"exported float16 weights, test-time augmentation: {exported.tta}"}
        if data.val_points is not None and any(p is not None for p in data.val_points):
            per_bone = exported.model.capabilities.per_bone
            measure = bone_detection_metrics if per_bone else roi_detection_metrics
            detection = measure(exported.model, data.val_images, data.val_points, males, exported.preprocess)
            config["metrics"]["detection"] = detection
            self.log(f"{'bone box' if per_bone else 'ROI'} detection on {detection['n_images']} annotated validation "
                     f"images: AP {detection['ap']:.1f}, AP50 {detection['ap50']:.1f}, AP75 {detection['ap75']:.1f}")
        write_model_config(model_dir, config)
        atomic_write(model_dir / "split.json", (self.out_dir / "split.json").read_bytes())
        self.write_validation_outputs(predictions, metrics, config["name"])
        self.log(f"best epoch {epoch}: exported {model_dir}; validation MAE {metrics['mae_months']:.2f} months")
        return {"model_dir": str(model_dir), "val_metrics": metrics}

    def fit_output_map(self, loaded) -> None:
        """Fit the model's map from its raw output to the bone age on the training images (not augmented)."""
        data = self.data
        males = data.train_male.numpy()
        raw = predict_bones(loaded.model, data.train_images.numpy(), males, loaded.preprocess,
                            batch_size=self.config.eval_batch_size)["raw_months"]
        loaded.model.fit_output_map(raw, data.train_age.numpy(), males)
        loaded.config.setdefault("output_map", {}).update(
            {"fitted_on": f"{len(raw)} training images", "method": "isotonic regression per sex of the label on the "
             "raw RUS-CHN age (months), kept at 64 quantiles"})
        self.log(f"output map fitted on {len(raw)} training images (raw RUS-CHN age -> G&P-equivalent bone age)")

    def write_validation_outputs(self, predictions: np.ndarray, metrics: dict, name: str) -> None:
        """``val_predictions.csv``, ``val_agreement.png`` and ``val_metrics.json`` of the exported model."""
        data = self.data
        rows = "".join(f"{s.id},{s.sex},{s.bone_age_months},{p:.2f}\n" for s, p in zip(data.val_samples, predictions))
        atomic_write(self.out_dir / "val_predictions.csv", "id,sex,bone_age_months,predicted_months\n" + rows)
        plot_agreement(predictions, data.val_age, self.out_dir / "val_agreement.png", sexes=data.val_sex,
                       title=f"{name}: validation MAE {metrics['mae_months']:.2f} months (n={metrics['n']})")
        atomic_write(self.out_dir / "val_metrics.json", json.dumps(metrics, indent=1))
