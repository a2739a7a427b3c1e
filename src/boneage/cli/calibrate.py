"""``boneage calibrate [--model PATH] --images DIR --labels CSV [--split-file PATH] [--level 0.95]``: fit the
model's calibrated interval on its held-out validation images and store it in its ``config.json``
(:func:`boneage.evaluation.calibration.calibrate_model`)."""

from __future__ import annotations

import json
import sys

from . import _args

NAME = "calibrate"
HELP = "calibrate a model's interval on its held-out validation images (stored in its config.json)"


def arguments(p) -> None:
    p.add_argument("--model", default=None, help="exported model folder to calibrate (default: the shipped model)")
    p.add_argument("--images", required=True, help="folder of <id>.png images")
    p.add_argument("--labels", required=True, help="CSV with id,boneage,male (extra columns ignored)")
    p.add_argument("--split-file", default=None,
                   help="split.json whose 'val' ids are the held-out images (default: the model's own split.json)")
    p.add_argument("--level", type=_args.float_arg(lambda v: 0.5 <= v < 1, "at least 0.5 and below 1"), default=0.95,
                   help="coverage the interval is calibrated for (default 0.95; the reports label it 95%%)")
    p.add_argument("--folds", type=_args.int_arg(2), default=5,
                   help="folds of the cross-fitting that measures coverage on images not used to calibrate")
    p.add_argument("--seed", type=_args.non_negative_int, default=0, help="seed of the cross-fitting folds")
    p.add_argument("--use-sd", action="store_true",
                   help="scale the interval by the ensemble members' SD (only worth it where the SD predicts the error)")
    p.add_argument("--batch-size", type=_args.positive_int, default=64)
    p.add_argument("--threads", type=_args.positive_int, default=None)
    p.add_argument("--json", action="store_true", help="print the calibration as JSON")
    p.add_argument("--dry-run", action="store_true", help="measure and print, do not write config.json")


def run(args) -> int:
    from ..evaluation.calibration import calibrate_model

    calibration = calibrate_model(args.model, args.images, args.labels, split_file=args.split_file, level=args.level,
                                  folds=args.folds, seed=args.seed, use_sd=args.use_sd, batch_size=args.batch_size,
                                  threads=args.threads, progress=not args.json and sys.stderr.isatty(),
                                  write=not args.dry_run)
    if args.json:
        print(json.dumps(calibration, indent=2))
        return 0
    held_out = calibration["coverage"]["held_out"]
    print(f"{calibration['method']}, level {calibration['level']:.0%}, fitted on {calibration['n']} images")
    print(f"coverage on images not used to calibrate ({held_out['folds']}-fold cross-fitting, seed {held_out['seed']}):")
    print("| group | n | coverage | mean width (months) |")
    print("|---|---:|---:|---:|")
    for name, cell in held_out["groups"].items():
        if cell["n"]:
            print(f"| {name} | {cell['n']} | {cell['coverage']:.1%} | {cell['mean_width_months']:.1f} |")
    spread = calibration.get("ensemble_sd")
    if spread:
        print(f"ensemble SD against |error|: Spearman rho {spread['spearman_rho']:.2f} "
              f"({'used' if spread['used'] else 'not used'} to scale the interval)")
    print("not written (--dry-run)" if args.dry_run else "written to the model's config.json under 'calibration'")
    return 0
