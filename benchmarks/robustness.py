"""How a model holds on radiographs that differ from its training images, in one command:

    python benchmarks/robustness.py [--model default] [--limit N] [--out benchmarks/results/robustness.md]

* the default model's validation split of rsna-100px (its split.json, 1,158 images) as stored and degraded
  (:mod:`boneage.preprocess.degrade`: resampled with several filters, blurred, noisy, gamma, contrast, JPEG,
  rotated, collimated, a marker and a ruler pasted in);
* the 40 rsna-512px-samples at 512 px and reduced with several filters (39 of them are training images of
  the default model: the change between rows is what this table shows, not the level).

Each row: MAE, RMSE, mean error (bias) in months and the change of MAE against the images as stored, through
the model's own preprocessing (``boneage evaluate --degrade``, no hand check). Several models in one run:
``--model default --model localize``. ``--limit N`` takes N validation images (seeded) for quick checks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time

import numpy as np

from _runs import PreparedImages  # benchmarks/ is on sys.path when a script in it runs
from rus_chn import RSNA, SAMPLES_512, validation_samples

VALIDATION = ("resample:50:bilinear", "resample:50:nearest", "resample:200:bicubic", "blur:1", "noise:0.05", "gamma:0.7",
              "gamma:1.5", "contrast:0.6", "jpeg:20", "rotate:10", "collimate:0.1", "marker")
SAMPLES = ("resample:256:lanczos", "resample:100:lanczos", "resample:100:bilinear", "resample:100:nearest", "resample:64:box")


def measure(spec: str, images: PreparedImages, degradations) -> tuple[dict, list[dict]]:
    """The model ``spec`` on the images as stored and on each degradation (images prepared once for all models)."""
    from boneage.evaluation import compute_metrics
    from boneage.inference import Predictor

    predictor = Predictor(None if spec == "default" else spec, check_hand=False)
    results, truth, sexes = images.run(predictor)
    clean = compute_metrics(results.months, truth, sexes)
    rows = []
    for degradation in degradations:
        degraded, degraded_truth, _ = images.run(predictor, degradation)
        metrics = compute_metrics(degraded.months, degraded_truth)
        rows.append({"degradation": degradation, "n": metrics["n"], "mae_months": metrics["mae_months"],
                     "rmse_months": metrics["rmse_months"], "mean_error_months": metrics["mean_error_months"],
                     "mae_change_months": round(metrics["mae_months"] - clean["mae_months"], 3)})
    return clean, rows


def sample_512():
    from boneage.data import load_rsna

    return load_rsna(SAMPLES_512 / "images", SAMPLES_512 / "labels.csv")


def table(title: str, clean: dict, rows: list[dict]) -> list[str]:
    lines = [f"### {title}", "", "| images | n | MAE | RMSE | bias | MAE change |", "|---|---:|---:|---:|---:|---:|",
             f"| as stored | {clean['n']} | {clean['mae_months']:.2f} | {clean['rmse_months']:.2f} | "
             f"{clean['mean_error_months']:+.2f} | |"]
    for row in rows:
        lines.append(f"| {row['degradation']} | {row['n']} | {row['mae_months']:.2f} | {row['rmse_months']:.2f} | "
                     f"{row['mean_error_months']:+.2f} | {row['mae_change_months']:+.2f} |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=None, help="a shipped model's name or a model folder")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/robustness.md")
    args = parser.parse_args(argv)
    if not RSNA.is_dir():
        print(f"{RSNA}: missing; nothing to benchmark", file=sys.stderr)
        return 2
    started = time.time()
    models = args.model or ["default"]
    validation = PreparedImages(validation_samples(args.limit))
    samples = PreparedImages(sample_512())
    lines = ["# Robustness: the same images at other resolutions and degraded", "",
             f"Command: `python benchmarks/robustness.py {' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))}`".rstrip() + "  ",
             f"{dt.date.today().isoformat()}, {{minutes}} min. Months; no hand check; each image through the model's own "
             "preprocessing after its degradation (`boneage.preprocess.degrade`, noise seeded per image).", ""]
    for spec in models:
        lines += [f"## {spec}", ""]
        lines += table(f"validation split of rsna-100px ({len(validation.samples)} images, 100 px)",
                       *measure(spec, validation, VALIDATION))
        lines += table("rsna-512px-samples (40 images, 39 of them training images)", *measure(spec, samples, SAMPLES))
    text = "\n".join(lines).replace("{minutes}", f"{(time.time() - started) / 60:.0f}")
    print(text)
    if args.limit is None:
        with open(args.out, "w") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
