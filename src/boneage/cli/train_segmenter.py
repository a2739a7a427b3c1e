"""``boneage train-segmenter --images DIR --keypoints PATH --out-dir DIR ...``: train the U-Net hand segmenter
on keypoint-refined classical masks (:func:`boneage.segmentation.train_segmenter`)."""

from __future__ import annotations

import json
import sys

from . import _args
from ._common import command_line

NAME = "train-segmenter"
HELP = "train the U-Net hand segmenter on keypoint-refined classical masks"


def arguments(p) -> None:
    from ..training.config import DEVICES
    from ..utils import PRECISIONS

    p.add_argument("--images", required=True, help="folder of <id>.png (RSNA layout, e.g. ../shared/data/rsna-100px/images)")
    p.add_argument("--keypoints", required=True, metavar="PATH", help="hand keypoints (COCO JSON or its folder)")
    p.add_argument("--out-dir", required=True, help="run folder: model/ (the exported segmenter) and history.json")
    p.add_argument("--epochs", type=_args.positive_int, default=16)
    p.add_argument("--size", type=_args.segmenter_size, default=128, help="input side in px (images are stretched to it)")
    p.add_argument("--extra-images", type=_args.non_negative_int, default=2000, metavar="N",
                   help="also train on N images without keypoints, with classical masks")
    p.add_argument("--batch-size", type=_args.positive_int, default=32)
    p.add_argument("--lr", type=_args.positive_float, default=3e-3)
    p.add_argument("--split-file", default="default", metavar="PATH",
                   help="hold out the annotated ids of this split.json's val list (default: the default model's split; "
                        "'none': a seeded 10%% of the annotated ids)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_args.positive_int, default=None)
    p.add_argument("--precision", default="bf16", choices=PRECISIONS)
    p.add_argument("--device", default="auto", choices=DEVICES)


def run(args) -> int:
    from ..segmentation.training import train_segmenter

    summary = train_segmenter(
        args.images, args.keypoints, args.out_dir, size=args.size, epochs=args.epochs, extra_images=args.extra_images,
        batch_size=args.batch_size, lr=args.lr, split_file=None if args.split_file == "none" else args.split_file,
        seed=args.seed, threads=args.threads, precision=args.precision, device=args.device, command=command_line(),
        log=(lambda message: print(message, file=sys.stderr, flush=True)),
    )
    print(json.dumps(summary, indent=2))
    return 0
