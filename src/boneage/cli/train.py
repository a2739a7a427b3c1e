"""``boneage train ...``: train a model (torchrun-compatible for several GPUs); the arguments become a
:class:`~boneage.training.TrainConfig`, which :func:`boneage.training.train` runs."""

from __future__ import annotations

import argparse
import json
import os

from . import _args
from ._common import command_line

NAME = "train"
HELP = "train a model (torchrun-compatible for several GPUs)"


def arguments(p) -> None:
    _data_arguments(p.add_argument_group("data"))
    _model_arguments(p.add_argument_group("model"))
    _transfer_arguments(p.add_argument_group("transfer learning"))
    _hand_arguments(p.add_argument_group("hand clean-up (stored with the model; predict applies it the same way)"))
    _augment_arguments(p.add_argument_group("augmentation"))
    _optimisation_arguments(p.add_argument_group("optimisation"))
    _run_arguments(p.add_argument_group("run"))


def _data_arguments(d) -> None:
    d.add_argument("--images", help="folder of <id>.png (RSNA layout)")
    d.add_argument("--labels", help="RSNA CSV id,boneage,male")
    d.add_argument("--manifest", help="generic CSV path,bone_age_months,sex[,chronological_age_months]")
    d.add_argument("--val-fraction", type=_args.fraction, default=0.1)
    d.add_argument("--split-seed", type=int, default=0)
    d.add_argument("--split-file", default=None, help="reuse a saved split.json instead of drawing one")
    d.add_argument("--limit", type=_args.positive_int, default=None, help="use only the first N samples")
    d.add_argument("--cache-dir", default=None, help="cache decoded images here as .npy")
    d.add_argument("--keypoints", default=None, metavar="PATH",
                   help="hand keypoints (COCO JSON or its folder) supervising an ALA-Net's region proposal network")
    d.add_argument("--annotated-only", action="store_true",
                   help="train on the images that have keypoints only (an RPN trained alone: --model alanet18_rpn)")
    d.add_argument("--stage-labels", default=None, metavar="CSV",
                   help="per-bone RUS-CHN stage labels (CSV id,bone,stage; bones as in 'boneage models') for --model rus_chn")


def _transfer_arguments(t) -> None:
    t.add_argument("--init", action="append", default=None, metavar="MODEL",
                   help="start from the weights of this model folder or checkpoint whose names and shapes match "
                        "(the rest are reported); repeat it to load several, a later one overriding an earlier one")
    t.add_argument("--init-member", type=_args.non_negative_int, default=0, metavar="K",
                   help="when --init is an ensemble (such as the default model): the member to load (default 0)")
    t.add_argument("--freeze", type=_args.name_list, default=[], metavar="MODULES",
                   help="comma-separated module prefixes to train no further (e.g. detector, backbone)")
    t.add_argument("--init-lr-scale", type=_args.positive_float, default=1.0, metavar="F",
                   help="learning rate of the weights loaded by --init, as a fraction of --lr")
    t.add_argument("--teacher", default=None, metavar="MODEL",
                   help="distil this model (e.g. default, an ensemble) into the one trained: its soft targets join the labels")
    t.add_argument("--distill-weight", type=float, default=0.5, metavar="A",
                   help="with --teacher: loss = (1 - A) x the labels' loss + A x the distillation loss (default 0.5)")


def _model_arguments(m) -> None:
    from ..models import HEADS
    from ..preprocess.config import NORMALIZATIONS, RESIZE_POLICIES

    m.add_argument("--model", default="global_resnet18", help="registered model name (see 'boneage models')")
    m.add_argument("--head", default=None, choices=(*HEADS, "stages"),
                   help="the output head (default: the model's own: ordinal, or stages for rus_chn)")
    m.add_argument("--model-option", action="append", type=_args.key_value, default=[], metavar="KEY=VALUE",
                   help="a keyword of the model's factory, the value read as JSON when it parses "
                        "(e.g. detector_options='{\"sac\": true}'); repeatable")
    m.add_argument("--width", type=_args.positive_float, default=0.5, help="ResNet width factor (1.0 = standard)")
    m.add_argument("--max-pool", action=argparse.BooleanOptionalAction, default=False,
                   help="keep the ResNet stem's max pooling (default: off, for features twice as fine at small inputs)")
    m.add_argument("--label-range", type=_args.float_pair, default=(0.0, 228.0), metavar="MIN,MAX", help="months")
    m.add_argument("--image-size", type=_args.image_size, default=(100, 100), metavar="N|HxW")
    m.add_argument("--inference-size", type=_args.image_size, default=None, metavar="N|HxW",
                   help="give the exported model the hand at this size at inference instead of --image-size (a model "
                        "that crops detail from the full-resolution image: --model localize_regress)")
    m.add_argument("--resize", default="stretch", choices=RESIZE_POLICIES)
    m.add_argument("--normalization", default="percentile", choices=NORMALIZATIONS)


def _hand_arguments(h) -> None:
    from ..preprocess.config import HAND_MODES

    h.add_argument("--hand", default="none", choices=HAND_MODES,
                   help="use the hand segmenter's mask: blank what is outside the hand, crop to it, or both")
    h.add_argument("--crop-margin", type=float, default=0.05, help="added to the hand's box, fraction of its size")
    h.add_argument("--fix-inversion", action="store_true", help="detect white-background images and invert them")
    h.add_argument("--hand-contrast", action="store_true",
                   help="percentile normalisation over the hand's pixels instead of the whole image")
    h.add_argument("--segmenter", default="default", metavar="PATH",
                   help="hand segmenter folder (default: the one shipped with boneage)")


def _augment_arguments(a) -> None:
    a.add_argument("--no-augment", action="store_true")
    a.add_argument("--hflip", type=float, default=0.5, help="probability")
    a.add_argument("--rotation", type=float, default=20.0, help="degrees, +-")
    a.add_argument("--scale-range", type=_args.float_pair, default=(0.85, 1.15), metavar="LOW,HIGH")
    a.add_argument("--translate", type=float, default=0.08, help="fraction of the size, +-")
    a.add_argument("--contrast", type=float, default=0.2)
    a.add_argument("--brightness", type=float, default=0.1)
    a.add_argument("--gamma", type=float, default=0.2)
    a.add_argument("--resample-prob", type=float, default=0.0,
                   help="probability of resampling an image down (35-90 %%, nearest/bilinear/area) and up again")
    a.add_argument("--blur", type=float, default=0.0, help="largest SD (px) of a Gaussian blur, uniform from 0")
    a.add_argument("--noise", type=float, default=0.0, help="largest SD of Gaussian noise on [0, 1] images, uniform from 0")
    a.add_argument("--jpeg-prob", type=float, default=0.0, help="probability of JPEG compression at quality 15-80")
    a.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup of images of the same sex, lam ~ Beta(ALPHA, ALPHA), their losses mixed alike (0 = off)")


def _optimisation_arguments(o) -> None:
    from ..training.config import OPTIMIZERS, SCHEDULES

    o.add_argument("--epochs", type=_args.positive_int, default=45)
    o.add_argument("--batch-size", type=_args.positive_int, default=64)
    o.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    o.add_argument("--lr", type=_args.positive_float, default=2e-3)
    o.add_argument("--weight-decay", type=float, default=0.05)
    o.add_argument("--schedule", default="cosine", choices=SCHEDULES)
    o.add_argument("--warmup-epochs", type=float, default=1.0)
    o.add_argument("--ema-decay", type=float, default=0.998, help="0 disables the weight EMA")
    o.add_argument("--max-steps", type=_args.positive_int, default=None, help="stop after N optimiser steps")
    o.add_argument("--val-every", type=_args.positive_int, default=1, metavar="N",
                   help="validate every N epochs (always after the last)")
    o.add_argument("--seed", type=int, default=0)


def _run_arguments(r) -> None:
    from ..training.config import DEVICES, TTA_CHOICES
    from ..utils import PRECISIONS

    r.add_argument("--out-dir", default="runs/default", help="checkpoints, split, logs and the exported model")
    r.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    r.add_argument("--device", default="auto", choices=DEVICES)
    r.add_argument("--precision", default="bf16", choices=PRECISIONS)
    r.add_argument("--no-channels-last", action="store_true")
    r.add_argument("--threads", type=_args.positive_int, default=None)
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--tta", default="auto", choices=TTA_CHOICES,
                   help="test-time augmentation stored with the exported model (auto: hflip if trained with flips)")


def train_config(args):
    """The :class:`~boneage.training.TrainConfig` the arguments describe."""
    from ..preprocess import AugmentConfig, PreprocessConfig
    from ..training import TrainConfig

    augment = AugmentConfig.none() if args.no_augment else AugmentConfig(
        hflip=args.hflip, rotation_deg=args.rotation, scale=args.scale_range, translate=args.translate,
        contrast=args.contrast, brightness=args.brightness, gamma=args.gamma, resample=args.resample_prob, blur=args.blur,
        noise=args.noise, jpeg=args.jpeg_prob,
    )
    preprocess = PreprocessConfig(
        image_size=args.image_size, resize=args.resize, normalization=args.normalization, hand=args.hand,
        crop_margin=args.crop_margin, fix_inversion=args.fix_inversion,
        contrast="hand" if args.hand_contrast else "image", segmenter=args.segmenter, inference_size=args.inference_size,
    )
    from ..models import model_defaults

    model_kwargs = {"max_pool": args.max_pool, **dict(args.model_option)}
    head = args.head or model_defaults(args.model).get("head", "ordinal")
    return TrainConfig(
        out_dir=args.out_dir, images=args.images, labels=args.labels, manifest=args.manifest,
        val_fraction=args.val_fraction, split_seed=args.split_seed, split_file=args.split_file, limit=args.limit,
        cache_dir=args.cache_dir, keypoints=args.keypoints, annotated_only=args.annotated_only, model=args.model,
        head=head, width=args.width, label_range=args.label_range, model_kwargs=model_kwargs,
        stage_labels=args.stage_labels, init=args.init, init_member=args.init_member, freeze=args.freeze,
        init_lr_scale=args.init_lr_scale, teacher=args.teacher, distill_weight=args.distill_weight,
        preprocess=preprocess, augment=augment, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, ema_decay=args.ema_decay, val_every=args.val_every,
        max_steps=args.max_steps, seed=args.seed, device=args.device, precision=args.precision,
        channels_last=not args.no_channels_last, threads=args.threads, progress=not args.no_progress, tta=args.tta,
        mixup=args.mixup,
    )


def run(args) -> int:
    from ..models import create_model
    from ..training import train

    config = train_config(args)
    create_model(config.model, **config.model_spec()["kwargs"])  # fail fast on a bad name or option
    summary = train(config, resume=args.resume, command=command_line())
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "val_metrics"}, indent=2))
    return 0
