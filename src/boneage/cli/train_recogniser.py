"""``boneage train-recogniser --images DIR --non-hand DIR --out-dir DIR [--split-file PATH] [--steps N]``: train
the hand-radiograph recogniser (:func:`boneage.segmentation.recognition_training.train_recogniser`)."""

from __future__ import annotations

import json
import sys

from . import _args
from ._common import command_line, set_threads

NAME = "train-recogniser"
HELP = "train the hand-radiograph recogniser (hands against real and synthetic images that are not hand radiographs)"


def arguments(p) -> None:
    p.add_argument("--images", required=True, help="folder of <id>.png hand radiographs (e.g. ../shared/data/rsna-100px/images)")
    p.add_argument("--non-hand", required=True, metavar="DIR",
                   help="real images that are not hand radiographs, one sub-folder per kind (../shared/data/non-hand)")
    p.add_argument("--out-dir", required=True, help="run folder: model/ is the exported recogniser")
    p.add_argument("--split-file", default="default", metavar="PATH",
                   help="train on its train ids, set the limits on half of its val ids (default: the default model's split)")
    p.add_argument("--exclude", default=None, metavar="DIR",
                   help="never train on the ids of the images in this folder (e.g. ../shared/data/rsna-512px-samples/images)")
    p.add_argument("--steps", type=_args.positive_int, default=4000)
    p.add_argument("--batch-size", type=_args.positive_int, default=128)
    p.add_argument("--lr", type=_args.positive_float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_args.positive_int, default=None)


def run(args) -> int:
    from pathlib import Path

    from ..artifacts import MODEL_FORMAT, SPLIT_FILE, default_artifact_path
    from ..segmentation.recognition_training import train_recogniser

    set_threads(args.threads)
    split = default_artifact_path(MODEL_FORMAT) / SPLIT_FILE if args.split_file == "default" else args.split_file
    exclude = [p.stem for p in Path(args.exclude).glob("*")] if args.exclude else []
    summary = train_recogniser(args.images, split, args.non_hand, args.out_dir, steps=args.steps,
                               batch_size=args.batch_size, lr=args.lr, seed=args.seed, exclude_ids=exclude,
                               command=command_line(), log=lambda message: print(message, file=sys.stderr, flush=True))
    print(json.dumps(summary, indent=2))
    return 0
