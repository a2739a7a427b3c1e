"""The training loop: thin by design; losses live in the models, metrics in ``boneage.evaluation``.

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
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn

from .. import __version__
from ..data import (
    apply_split,
    load_hand_keypoints,
    load_images,
    load_manifest,
    load_rsna,
    load_split,
    samples_summary,
    save_split,
    split_samples,
    to_input_coordinates,
)
from ..errors import InvalidInputError
from ..evaluation import compute_metrics, plot_agreement, roi_detection_metrics
from ..inference import predict_images
from ..models import (
    create_model,
    export_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
    write_model_config,
)
from ..preprocess import augment_batch, to_model_input, transform_points
from ..segmentation import model_preprocessing, model_segmenter
from ..utils import autocast
from .config import TrainConfig

__all__ = ["train", "hardware_description"]


# ------------------------------------------------------------------------------------------- helpers
class _Dist:
    """Rank/world/device from torchrun's environment; a single process when absent."""

    def __init__(self, device: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if device == "cuda" and not torch.cuda.is_available():
            raise InvalidInputError("--device cuda was asked for but no CUDA GPU is available")
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    def broadcast_buffers(self, module: nn.Module) -> None:
        if self.world_size > 1:
            for buffer in module.buffers():
                torch_dist.broadcast(buffer, src=0)

    def all_gather(self, obj):
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def hardware_description(device: torch.device | None = None) -> str:
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(config: TrainConfig, steps_per_epoch: int, total_steps: int):
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
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Exponential moving average of parameters *and* floating buffers (BatchNorm statistics), so the
    averaged weights are evaluated with statistics that match them; integer buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        if e.is_floating_point():
            e.lerp_(b, 1.0 - decay)
        else:
            e.copy_(b)


def _load_samples(config: TrainConfig):
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


def _pipeline(preprocess, uses_keypoints: bool):
    """The model's preprocessing for building the training set (no hand check); with hand clean-up it
    records the segmenter's version in the config, so the exported model refuses any other segmenter."""
    if uses_keypoints and preprocess.hand in ("crop", "crop_mask"):
        raise InvalidInputError("hand cropping moves the anatomy away from the keypoints' coordinates; "
                                "train region proposal models with --hand none or --hand mask")
    if preprocess.uses_segmenter:
        model_segmenter(preprocess, record_version=True)
    return model_preprocessing(preprocess, check_hand=False)


def _input_points(samples, annotations: dict, preprocess) -> list[np.ndarray | None]:
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


def _batch_points(points: list, index: torch.Tensor, theta: torch.Tensor, size) -> list[torch.Tensor]:
    """The batch's keypoints moved by its augmentation; ``(0, 2)`` for unannotated images."""
    out = []
    for row, i in enumerate(index.tolist()):
        if points[i] is None:
            out.append(torch.zeros(0, 2))
        else:
            out.append(transform_points(torch.from_numpy(points[i])[None], theta[row : row + 1].float(), tuple(size))[0])
    return out


# ---------------------------------------------------------------------------------------------- train
def train(config: TrainConfig, *, resume: bool = False, command: str | None = None, log=print) -> dict:
    """Train a model as ``config`` says; returns a summary with the best validation metrics and paths."""
    dist = _Dist(config.device)
    try:
        return _train(config, dist, resume=resume, command=command, log=log if dist.is_main else (lambda *a, **k: None))
    finally:
        dist.close()


def _train(config: TrainConfig, dist: _Dist, *, resume: bool, command: str | None, log) -> dict:
    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    checkpoint = None
    if resume:
        if last_path.exists():
            checkpoint = load_checkpoint(last_path)
            saved = TrainConfig.from_dict(checkpoint["config"]["training"]["recipe"])
            # The saved recipe wins (apart from where and how verbosely to run): a resumed run is the
            # same run. Settings given now that differ are named, not silently dropped.
            for keep in ("device", "threads", "progress", "max_steps"):
                setattr(saved, keep, getattr(config, keep))
            changed = [f"{k} ({v!r} -> saved {saved.to_dict()[k]!r})" for k, v in config.to_dict().items()
                       if k != "out_dir" and v != saved.to_dict()[k]]
            if changed:
                log(f"--resume: continuing the saved recipe; ignoring changed settings: {', '.join(changed)}")
            config = saved
            log(f"resuming from {last_path} (epoch {checkpoint['epoch'] + 1} done)")
        else:
            log(f"--resume: no {last_path} yet, starting a new run")

    # ---- data
    samples, source = _load_samples(config)
    split_path = out_dir / "split.json"
    if checkpoint is not None and split_path.exists():
        split = load_split(split_path)
    elif config.split_file:
        split = load_split(config.split_file)
    else:
        split = split_samples(samples, config.val_fraction, config.split_seed)
    train_samples, val_samples = apply_split(samples, split)
    torch.manual_seed(config.seed)
    spec = config.model_spec()
    model = create_model(spec["name"], **spec["kwargs"])  # before decoding: a bad option fails fast
    uses_keypoints = model.capabilities.needs_keypoints
    pipeline = _pipeline(config.preprocess, uses_keypoints)
    train_points = val_points = None
    if uses_keypoints:
        if not config.keypoints:
            raise InvalidInputError(
                f"model {spec['name']} trains its region proposal network on hand keypoints: give --keypoints "
                "PATH (a COCO keypoint JSON or its folder, e.g. ../shared/data/annotations/hand-keypoints-21)"
            )
        annotations = load_hand_keypoints(config.keypoints)
        if config.annotated_only:
            train_samples = [s for s in train_samples if s.id in annotations]
            if not train_samples:
                raise InvalidInputError(f"--annotated-only: no training image has keypoints in {config.keypoints}")
        train_points = _input_points(train_samples, annotations, config.preprocess)
        val_points = _input_points(val_samples, annotations, config.preprocess)
        log(f"keypoints: {sum(p is not None for p in train_points)} training and "
            f"{sum(p is not None for p in val_points)} validation images annotated ({config.keypoints})")
    elif config.annotated_only:
        raise InvalidInputError(f"--annotated-only applies to models with a region proposal network, not {spec['name']}")
    if dist.is_main and checkpoint is None:  # every rank draws the same split; rank 0 records it
        save_split(split, split_path)
        config.save(out_dir / "train_config.json")
    dist.barrier()
    log(f"data: {len(train_samples)} train / {len(val_samples)} validation images ({source})")
    t0 = time.time()
    cache_dir = config.cache_dir
    show = config.progress and dist.is_main
    train_images = torch.from_numpy(load_images(train_samples, config.preprocess, cache_dir=cache_dir, progress=show, pipeline=pipeline))
    val_images = load_images(val_samples, config.preprocess, cache_dir=cache_dir, progress=show, pipeline=pipeline)
    log(f"images decoded in {time.time() - t0:.1f} s at {config.preprocess.image_size}")
    train_age = torch.tensor([s.bone_age_months for s in train_samples], dtype=torch.float32)
    train_male = torch.tensor([s.male for s in train_samples], dtype=torch.float32)
    val_age = np.array([s.bone_age_months for s in val_samples])
    val_sex = [s.sex for s in val_samples]
    model.init_from_labels(train_age)

    # ---- model, optimiser, schedule
    device = dist.device
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval() if config.ema_decay > 0 else None
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    elif config.optimizer == "sgd":
        optimizer = torch.optim.SGD(_param_groups(model, config.weight_decay), lr=config.lr, momentum=0.9, nesterov=True)
    else:
        raise InvalidInputError(f"optimizer must be adamw or sgd, got {config.optimizer!r}")
    per_rank = len(train_samples) // dist.world_size
    steps_per_epoch = max(1, per_rank // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch, total_steps))
    generator = torch.Generator().manual_seed(config.seed * 1000 + dist.rank)

    start_epoch, best_mae, history, step = 0, float("inf"), [], 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state_dict"])
        if ema is not None and checkpoint.get("ema_state_dict"):
            ema.load_state_dict(checkpoint["ema_state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["rng"][dist.rank % len(checkpoint["rng"])])
        if checkpoint.get("torch_rng") is not None:
            torch.set_rng_state(checkpoint["torch_rng"])
        if checkpoint.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        start_epoch, best_mae = checkpoint["epoch"] + 1, checkpoint["best_metric"]
        history, step = checkpoint["history"], checkpoint["step"]
    train_module = model
    if dist.world_size > 1:
        # An RPN trained alone leaves the bone age layers out of its loss.
        train_module = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=model.capabilities.partial_loss,
        )

    log(
        f"model {spec['name']} {spec['kwargs']}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; "
        f"{config.epochs} epochs x {steps_per_epoch} steps of {config.batch_size} on {hardware_description(device)}"
        f"{f' x {dist.world_size} processes' if dist.world_size > 1 else ''}"
    )
    started = time.time() - sum(h.get("seconds", 0.0) for h in history)
    stop = False
    for epoch in range(start_epoch, config.epochs):
        model.train()
        epoch_start = time.time()
        order = torch.randperm(len(train_samples), generator=torch.Generator().manual_seed(config.seed + 7919 * epoch))
        shard = order[dist.rank :: dist.world_size][: steps_per_epoch * config.batch_size]
        losses, seen, part_sums = [], 0, {}
        batches = range(steps_per_epoch)
        bar = None
        if config.progress and dist.is_main:
            from tqdm import tqdm

            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False, file=sys.stderr)
            batches = bar
        for b in batches:
            index = shard[b * config.batch_size : (b + 1) * config.batch_size]
            x, theta = augment_batch(train_images[index].unsqueeze(1).float() / 255.0, config.augment, generator,
                                     return_theta=True)
            x = to_model_input(x, config.preprocess).to(device, non_blocking=True)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batch = {"bone_age_months": train_age[index].to(device), "male": train_male[index].to(device)}
            extra = {}
            if uses_keypoints:
                extra["keypoints"] = _batch_points(train_points, index, theta, x.shape[-2:])
            with autocast(device, config.precision):
                outputs = train_module(x, batch["male"], **extra)
            parts = model.compute_loss(outputs, batch)
            for name, value in parts.items():
                if name != "loss":
                    part_sums[name] = part_sums.get(name, 0.0) + float(value)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                _ema_update(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
            step += 1
            loss_value = float(parts["loss"].detach())
            if not math.isfinite(loss_value):
                raise RuntimeError(f"training diverged: loss {loss_value} at epoch {epoch + 1}, step {b}; lower --lr")
            losses.append(loss_value)
            seen += len(index)
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if config.max_steps and step >= config.max_steps:
                stop = True
                break
        if bar is not None:
            bar.close()
        train_seconds = time.time() - epoch_start

        # ---- validation (sharded across ranks, gathered), every val_every epochs and at the end
        metrics, improved = None, False
        if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs or stop:
            metrics = _validate(ema if ema is not None else model, dist, val_images, val_age, val_sex, config, device)
            improved = metrics["mae_months"] < best_mae
            best_mae = min(best_mae, metrics["mae_months"])
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else None,
            "train_loss_parts": {k: round(v / max(1, len(losses)), 5) for k, v in part_sums.items()},
            "val_mae_months": metrics["mae_months"] if metrics else None,
            "val_rmse_months": metrics["rmse_months"] if metrics else None,
            "lr": scheduler.get_last_lr()[0],
            "train_images_per_s": round(seen * dist.world_size / max(train_seconds, 1e-9), 1),
            "seconds": round(time.time() - epoch_start, 1),
        }
        history.append(record)
        parts_text = ", ".join(f"{k} {v:.4f}" for k, v in record["train_loss_parts"].items())
        val_text = (f"val MAE {metrics['mae_months']:.2f} months (best {best_mae:.2f}), RMSE {metrics['rmse_months']:.2f}"
                    if metrics else "not validated")
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}"
            f"{f' ({parts_text})' if len(part_sums) > 1 else ''}, {val_text}, "
            f"{record['train_images_per_s']:.0f} img/s, {record['seconds']:.0f} s"
        )
        rng_states = dist.all_gather(generator.get_state())
        if dist.is_main:
            state = {
                "config": _model_config(config, source, split, samples, history, started, device, command),
                "state_dict": model.state_dict(),
                "ema_state_dict": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "step": step,
                "best_metric": best_mae,
                "history": history,
                "rng": rng_states,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            }
            if metrics is not None:
                state["config"]["metrics"] = {"validation": metrics, "epoch": epoch + 1}
            if improved:  # best first: a kill between the two writes must not record a best that is not saved
                save_checkpoint(best_path, state)
            save_checkpoint(last_path, state)
            (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        dist.barrier()
        if stop:
            break

    summary = {"out_dir": str(out_dir), "best_val_mae_months": best_mae, "epochs_run": len(history), "steps": step}
    if dist.is_main and best_path.exists():
        summary.update(_finish(out_dir, best_path, val_samples, val_images, val_age, val_sex, log, val_points))
    dist.barrier()
    return summary


def _validate(eval_model, dist: _Dist, val_images, val_age, val_sex, config: TrainConfig, device) -> dict:
    dist.broadcast_buffers(eval_model)  # every rank validates the weights rank 0 will save
    part = np.arange(dist.rank, len(val_sex), dist.world_size)
    predictions = predict_images(
        eval_model, val_images[part], [1.0 if val_sex[i] == "M" else 0.0 for i in part], config.preprocess,
        batch_size=config.eval_batch_size, device=device, precision=config.precision, channels_last=config.channels_last,
    )
    val_pred = np.zeros(len(val_sex))
    for idx, pred in dist.all_gather((part, predictions)):
        val_pred[idx] = pred
    return compute_metrics(val_pred, val_age, val_sex)


def _model_config(config, source, split, samples, history, started, device, command) -> dict:
    spec = config.model_spec()
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
            "data": {**source, **samples_summary(samples)},
            "split": {"seed": split.get("seed"), "val_fraction": split.get("val_fraction"),
                      "n_train": len(split["train"]), "n_val": len(split["val"]), "file": "split.json"},
            "recipe": config.to_dict(),
            "command": command,
            "epochs_run": len(history),
            "duration_s": round(time.time() - started, 1),
            "hardware": hardware_description(device),
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _finish(out_dir: Path, best_path: Path, val_samples, val_images, val_age, val_sex, log, val_points=None) -> dict:
    """Export the best checkpoint, then measure the exported model itself on the validation split."""
    loaded = load_model(best_path)
    config = loaded.config
    epoch = config["metrics"]["epoch"]
    model_dir = out_dir / "model"
    export_model(model_dir, loaded.model, config, dtype=torch.float16)
    exported = load_model(model_dir)
    males = [1.0 if s == "M" else 0.0 for s in val_sex]
    predictions = predict_images(exported.model, val_images, males, exported.preprocess, tta=exported.tta)
    metrics = compute_metrics(predictions, val_age, val_sex)
    config["metrics"] = {"validation": metrics, "epoch": epoch,
                         "measured_on": f"exported float16 weights, test-time augmentation: {exported.tta}"}
    if val_points is not None and any(p is not None for p in val_points):
        config["metrics"]["detection"] = roi_detection_metrics(exported.model, val_images, val_points, males,
                                                               exported.preprocess)
        log(f"ROI detection on {config['metrics']['detection']['n_images']} annotated validation images: "
            f"AP {config['metrics']['detection']['ap']:.1f}, AP50 {config['metrics']['detection']['ap50']:.1f}, "
            f"AP75 {config['metrics']['detection']['ap75']:.1f}")
    write_model_config(model_dir, config)
    (model_dir / "split.json").write_text((out_dir / "split.json").read_text())
    with open(out_dir / "val_predictions.csv", "w") as fh:
        fh.write("id,sex,bone_age_months,predicted_months\n")
        for s, p in zip(val_samples, predictions):
            fh.write(f"{s.id},{s.sex},{s.bone_age_months},{p:.2f}\n")
    plot_agreement(predictions, val_age, out_dir / "val_agreement.png", sexes=val_sex,
                   title=f"{config['name']}: validation MAE {metrics['mae_months']:.2f} months (n={metrics['n']})")
    (out_dir / "val_metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"best epoch {epoch}: exported {model_dir}; validation MAE {metrics['mae_months']:.2f} months")
    return {"model_dir": str(model_dir), "val_metrics": metrics}
