"""ALA-Net's Table 1 (ablation) and Table 2 (ROI detection) on our data, in one command.

    python benchmarks/alanet_ablation.py --data ../shared/data --out runs/alanet-ablation \
        --epochs 6 --seeds 0 1

Table 1 trains the four variants of the paper with the same recipe, budget (epochs) and seeds, on the
shipped default model's own train/validation split (so the numbers compare with its MAE):
global only (``alanet18_global``), + anatomical local extraction (``alanet18_local``), + anatomical
patch training (``alanet18_patch``), and both (``alanet18``). The MAE of each run is that of its
exported float16 model with flip TTA on the 1,158 validation images.

Table 2 measures the 17 ROIs against the keypoint boxes of the annotated validation images (held out
from the RPN's training) for every jointly trained variant and for the RPN trained alone
(``alanet18_rpn`` on the annotated training images only, for the same number of optimiser steps as a
joint run), and checks the ROIs against an independent source: the ossification boxes of Koitka et al.
(the share of those boxes that contain the centre of at least one ROI; they were never used in
training).

Runs already finished under ``--out`` are reused, so the command can be interrupted and rerun. The
Markdown tables are written to ``--table`` (default ``benchmarks/results/alanet_ablation.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from _runs import spread, train_or_reuse  # benchmarks/ is on sys.path when a script in it runs

VARIANTS = (
    ("alanet18_global", "global only (ResNet-18 + sex)"),
    ("alanet18_local", "+ anatomical local extraction"),
    ("alanet18_patch", "+ anatomical patch training"),
    ("alanet18", "+ both (ALA-Net)"),
)


def _train(model: str, out: Path, args, seed: int, **overrides) -> dict:
    """Train one run (or reuse a finished one); returns its exported model's config."""
    from boneage.training import TrainConfig

    data = Path(args.data)
    return train_or_reuse(out, lambda: TrainConfig(
        out_dir=str(out), images=str(data / "rsna-100px" / "images"),
        labels=str(data / "rsna-100px" / "boneage-training-dataset.csv"), split_file=str(args.split),
        cache_dir=str(Path(args.out) / "cache"), keypoints=str(data / "annotations" / "hand-keypoints-21"),
        model=model, epochs=args.epochs, seed=seed, threads=args.threads, progress=False, max_steps=args.max_steps,
        **overrides,
    ), f"{model} seed {seed}")


def _ossification(model_dir: Path, data: Path) -> dict:
    """Hit rate of the model's ROIs on the ossification boxes (images from rsna-100px)."""
    from boneage.data import load_images, load_ossification_boxes, load_rsna
    from boneage.evaluation import ossification_hits
    from boneage.inference import predict_rois
    from boneage.models import load_model

    loaded = load_model(model_dir)
    boxes = load_ossification_boxes(data / "annotations" / "ossification-boxes" / "annotations")
    samples = [s for s in load_rsna(data / "rsna-100px" / "images", data / "rsna-100px" / "boneage-training-dataset.csv")
               if s.id in boxes]
    images = load_images(samples, loaded.preprocess, progress=False)
    rois, _ = predict_rois(loaded.model, images, [s.male for s in samples], loaded.preprocess)
    height, width = loaded.preprocess.image_size
    scale = np.array([width, height, width, height], dtype=np.float32)  # stretch: normalised -> input pixels
    return ossification_hits(list(rois), [boxes[s.id].boxes * scale for s in samples],
                             [boxes[s.id].labels for s in samples])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    parser.add_argument("--out", default="runs/alanet-ablation", help="where runs are written (and reused)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (the same for every variant)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--split", default=None, help="split.json (default: the shipped default model's)")
    parser.add_argument("--table", default="benchmarks/results/alanet_ablation.md")
    parser.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # plumbing checks only
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not (data / "rsna-100px").is_dir() or not (data / "annotations" / "hand-keypoints-21").is_dir():
        print(f"{data}: rsna-100px or annotations/hand-keypoints-21 missing; nothing to benchmark", file=sys.stderr)
        return 2
    from boneage.models import default_model_path
    from boneage.training.trainer import hardware_description

    args.split = Path(args.split) if args.split else Path(default_model_path()) / "split.json"
    out = Path(args.out)
    started = time.time()
    results: dict = {"table1": {}, "table2": {}, "ossification": {}}
    for seed in args.seeds:
        for model, _ in VARIANTS:
            config = _train(model, out / model / f"seed{seed}", args, seed)
            metrics = config["metrics"]
            history = config["training"]
            results["table1"].setdefault(model, []).append({
                "seed": seed, "mae": metrics["validation"]["mae_months"], "epoch": metrics["epoch"],
                "duration_s": history["duration_s"],
            })
            if "detection" in metrics:
                results["table2"].setdefault(model, []).append({"seed": seed, **metrics["detection"]})
        # The RPN alone: annotated training images only, as many optimiser steps as a joint run.
        joint = json.loads((out / "alanet18" / f"seed{seed}" / "history.json").read_text())
        n_train = json.loads((out / "alanet18" / f"seed{seed}" / "model" / "config.json").read_text())["training"]["split"]["n_train"]
        steps_joint = len(joint) * max(1, n_train // 64)
        from boneage.data import load_hand_keypoints, load_split

        annotated = set(load_hand_keypoints(data / "annotations" / "hand-keypoints-21"))
        n_annotated = sum(i in annotated for i in load_split(args.split)["train"])
        epochs_alone = math.ceil(steps_joint / max(1, n_annotated // 64))
        rpn_args = argparse.Namespace(**{**vars(args), "epochs": epochs_alone})
        config = _train("alanet18_rpn", out / "alanet18_rpn" / f"seed{seed}", rpn_args, seed, annotated_only=True,
                        val_every=epochs_alone)
        results["table2"].setdefault("alanet18_rpn", []).append({"seed": seed, **config["metrics"]["detection"]})
        for model in ("alanet18", "alanet18_rpn"):
            results["ossification"].setdefault(model, []).append(
                {"seed": seed, **_ossification(out / model / f"seed{seed}" / "model", data)})
    elapsed = time.time() - started
    (out / "results.json").write_text(json.dumps(results, indent=1))
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(_markdown(results, args, hardware_description(), elapsed))
    print(Path(args.table).read_text())
    return 0


def _markdown(results: dict, args, hardware: str, elapsed: float) -> str:
    seeds = ", ".join(str(s) for s in args.seeds)
    lines = [
        "# ALA-Net on our data: ablation (Table 1) and ROI detection (Table 2)",
        "",
        f"Command: `python benchmarks/alanet_ablation.py --data {args.data} --out {args.out} --epochs {args.epochs} "
        f"--seeds {' '.join(str(s) for s in args.seeds)}`  ",
        f"Hardware: {hardware} ({platform.processor() or platform.machine()}); {dt.date.today().isoformat()}; "
        f"total {elapsed / 60:.0f} min (runs reused from earlier invocations count as 0).  ",
        f"Data: rsna-100px at 100 x 100, the shipped default model's split ({args.split.name}: 10,453 train / "
        f"1,158 validation); keypoint boxes from annotations/hand-keypoints-21 (511 training images supervise the "
        f"RPN, 57 validation images are held out for Table 2).  ",
        f"Recipe: the default model's (half-width ResNet-18 without the stem max pool, AdamW 2e-3, cosine, EMA, "
        f"flip TTA) for **{args.epochs} epochs** per run and seeds {seeds}; the shipped default trains 45.",
        "",
        "## Table 1: validation MAE (months), mean ± SD over seeds",
        "",
        "| Variant | Model | MAE per seed | MAE | Minutes per run |",
        "|---|---|---|---|---|",
    ]
    for model, label in VARIANTS:
        runs = results["table1"].get(model, [])
        if not runs:
            continue
        maes = [r["mae"] for r in runs]
        lines.append(f"| {label} | `{model}` | {', '.join(f'{m:.2f}' for m in maes)} | {spread(maes)} | "
                     f"{np.mean([r['duration_s'] for r in runs]) / 60:.1f} |")
    lines += [
        "",
        "Paper (RSNA test, 512 px, ImageNet-pretrained ResNet-50): 4.92 / 4.53 / 4.49 / 3.91.",
        "",
        "## Table 2: the 17 ROIs against the keypoint boxes of the held-out annotated validation images",
        "",
        "AP@[.5:.95], AP50 and AP75 (COCO-style, class-agnostic, 101-point), and the share of keypoint boxes "
        "found by a ROI at IoU 0.5 (recall50); mean over seeds.",
        "",
        "| Model | AP | AP50 | AP75 | recall50 |",
        "|---|---|---|---|---|",
    ]
    labels = {**dict(VARIANTS), "alanet18_rpn": "RPN trained alone"}
    for model in ("alanet18_local", "alanet18_patch", "alanet18", "alanet18_rpn"):
        runs = results["table2"].get(model, [])
        if runs:
            cells = " | ".join(f"{np.mean([r[k] for r in runs]):.1f}" for k in ("ap", "ap50", "ap75", "recall50"))
            lines.append(f"| {labels[model]} (`{model}`) | {cells} |")
    lines += [
        "",
        "Paper: ALA-Net 89.2 / 98.0 / 98.0, plain RPN 86.2 / 97.9 / 96.2 (AP / AP50 / AP75).",
        "",
        "## Independent check: ossification boxes (Koitka et al. 2018; never used in training)",
        "",
        "Share (%) of the boxes drawn around ossification areas that contain the centre of at least one of "
        "the 17 ROIs, on the 329 annotated RSNA images (from rsna-100px); mean over seeds.",
        "",
    ]
    classes = sorted({c for runs in results["ossification"].values() for r in runs for c in r["by_class"]})
    lines += ["| Model | all | " + " | ".join(classes) + " |", "|---|---|" + "---|" * len(classes)]
    for model, runs in results["ossification"].items():
        cells = " | ".join(f"{np.mean([r['by_class'].get(c, float('nan')) for r in runs]):.1f}" for c in classes)
        lines.append(f"| {labels[model]} | {np.mean([r['all'] for r in runs]):.1f} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
