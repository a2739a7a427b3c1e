"""Hand segmentation and the residual attention network on our data: the ablations, in one command.

    python benchmarks/segmentation_ablation.py --data ../shared/data --out runs/segmentation-ablation \
        --epochs 8 --seeds 0

Like the residual-attention paper's Table 2, with one recipe, budget (epochs) and seed(s) for every
run, on the shipped default model's own train/validation split (so the numbers compare with its MAE):

* Table 1, the attention network (``residual_attention``, L1 loss):
  with segmentation clean-up / without it, without Att3_2 and Att3_3
  (``residual_attention_no_att3_23``), and without the sex input (``residual_attention_nosex``).
* Table 2, the default model's recipe (half-width ResNet-18, ordinal head) with and without the
  clean-up, and the shipped default model itself evaluated with the clean-up switched on at
  inference (no retraining), which is what switching it on for the default model would do.

"Segmentation clean-up" is ``PreprocessConfig(hand='crop_mask', contrast='hand')``: the shipped U-Net's hand mask, everything outside it blanked, the image cropped to
the hand's box (+5%), intensities re-stretched to the hand's percentiles. Validation MAE is that of
each run's exported float16 model with flip TTA on the 1,158 validation images; runs already finished
under ``--out`` are reused, so the command can be interrupted and rerun. The Markdown table is
written to ``--table`` (default ``benchmarks/results/segmentation_ablation.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from _runs import finished_config, spread, train_or_reuse  # benchmarks/ is on sys.path when a script in it runs

CLEAN_UP = {"hand": "crop_mask", "contrast": "hand"}

# (run name, label, model, segmentation on)
ATTENTION_RUNS = (
    ("att_seg", "attention network, segmented (full)", "residual_attention", True),
    ("att_raw", "without segmentation", "residual_attention", False),
    ("att_no3_seg", "without Att3_2 / Att3_3", "residual_attention_no_att3_23", True),
    ("att_nosex_seg", "without sex input", "residual_attention_nosex", True),
)
DEFAULT_RUNS = (
    ("r18_raw", "default recipe, raw images", "global_resnet18", False),
    ("r18_seg", "default recipe, segmented", "global_resnet18", True),
)
PAPER = {  # Wu et al., Table 2 (months MAE on RSNA)
    "att_seg": "7.38", "att_raw": "12 (with tags)", "att_no3_seg": "9.07", "att_nosex_seg": "10",
}


def _train(name: str, model: str, segmented: bool, args, seed: int) -> dict:
    """Train one run (or reuse a finished one); returns its exported model's config."""
    from boneage.preprocess import PreprocessConfig
    from boneage.training import TrainConfig

    out = Path(args.out) / name / f"seed{seed}"
    data = Path(args.data)
    attention = model.startswith("residual_attention")
    return train_or_reuse(out, lambda: TrainConfig(
        out_dir=str(out), images=str(data / "rsna-100px" / "images"),
        labels=str(data / "rsna-100px" / "boneage-training-dataset.csv"), split_file=str(args.split),
        cache_dir=str(Path(args.out) / "cache"), model=model,
        head="l1" if attention else "ordinal", width=args.attention_width if attention else 0.5,
        model_kwargs={} if attention else {"max_pool": False},
        preprocess=PreprocessConfig(image_size=(100, 100), **(CLEAN_UP if segmented else {})),
        epochs=args.epochs, seed=seed, threads=args.threads, progress=False, max_steps=args.max_steps,
    ), f"{name} seed {seed}")


def _default_switched_on(args) -> dict:
    """The shipped default model on its validation images, as shipped and with the clean-up on."""
    from boneage.data import apply_split, load_rsna, load_split
    from boneage.evaluation.evaluate import evaluate_samples
    from boneage.inference import Predictor
    from boneage.models import load_model

    data = Path(args.data)
    samples = load_rsna(data / "rsna-100px" / "images", data / "rsna-100px" / "boneage-training-dataset.csv")
    _, val = apply_split(samples, load_split(args.split))
    out = {}
    for label, clean_up in (("as shipped", {}), ("clean-up on", CLEAN_UP), ("mask only", {"hand": "mask"})):
        loaded = load_model(None)
        preprocess = dataclasses.replace(loaded.preprocess, **clean_up)
        loaded.config["preprocess"] = preprocess.to_dict()
        result = evaluate_samples(Predictor(loaded, check_hand=False), val)  # no image refused: same images
        out[label] = {"mae": result.metrics["mae_months"], "n": len(result.samples), "skipped": len(result.skipped)}
        print(f"default model, {label}: MAE {out[label]['mae']:.2f} on {out[label]['n']}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    parser.add_argument("--out", default="runs/segmentation-ablation", help="where runs are written (and reused)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per run (the same for every run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--attention-width", type=float, default=0.25, help="channel width of the attention network")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--split", default=None, help="split.json (default: the shipped default model's)")
    parser.add_argument("--table", default="benchmarks/results/segmentation_ablation.md")
    parser.add_argument("--only-finished", action="store_true",
                        help="write the table from the runs already finished under --out; train nothing")
    parser.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # plumbing checks only
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not (data / "rsna-100px").is_dir():
        print(f"{data}: rsna-100px missing; nothing to benchmark", file=sys.stderr)
        return 2
    from boneage.models import default_model_path
    from boneage.training.trainer import hardware_description

    args.split = Path(args.split) if args.split else Path(default_model_path()) / "split.json"
    started = time.time()
    saved = Path(args.out) / "results.json"
    if saved.exists() and json.loads(saved.read_text()).get("default"):  # measured once; it depends on no run
        default = json.loads(saved.read_text())["default"]
    else:
        default = _default_switched_on(args)
    results: dict = {"runs": {}, "default": default}
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=1))
    for seed in args.seeds:
        for name, _, model, segmented in ATTENTION_RUNS + DEFAULT_RUNS:
            if args.only_finished and finished_config(Path(args.out) / name / f"seed{seed}") is None:
                continue
            config = _train(name, model, segmented, args, seed)
            results["runs"].setdefault(name, []).append({
                "seed": seed, "mae": config["metrics"]["validation"]["mae_months"],
                "duration_s": config["training"]["duration_s"], "hardware": config["training"].get("hardware"),
            })
    elapsed = time.time() - started
    trained = [r for runs in results["runs"].values() for r in runs]
    hardware = trained[0]["hardware"] if trained and trained[0].get("hardware") else hardware_description()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(_markdown(results, args, hardware, elapsed, sum(r["duration_s"] for r in trained)))
    print(Path(args.table).read_text())
    return 0


def _rows(results: dict, runs) -> list[str]:
    lines = []
    for name, label, model, segmented in runs:
        entries = results["runs"].get(name, [])
        if not entries:
            continue
        maes = [r["mae"] for r in entries]
        lines.append(f"| {label} | `{model}` | {'yes' if segmented else 'no'} | {', '.join(f'{m:.2f}' for m in maes)} | "
                     f"{spread(maes)} | {np.mean([r['duration_s'] for r in entries]) / 60:.1f} | {PAPER.get(name, '')} |")
    return lines


def _markdown(results: dict, args, hardware: str, elapsed: float, training_s: float) -> str:
    seeds = " ".join(str(s) for s in args.seeds)
    header = ["| Run | Model | Segmented | MAE per seed | MAE | Minutes per run | Paper |", "|---|---|---|---|---|---|---|"]
    lines = [
        "# Hand segmentation and the residual attention network: ablations on our data",
        "",
        f"Command: `python benchmarks/segmentation_ablation.py --data {args.data} --out {args.out} --epochs {args.epochs} "
        f"--seeds {seeds} --attention-width {args.attention_width}`  ",
        f"Hardware: {hardware} ({platform.processor() or platform.machine()}); {dt.date.today().isoformat()}; "
        f"training {training_s / 60:.0f} min in all, this invocation {elapsed / 60:.0f} min (finished runs are reused).  ",
        f"Data: rsna-100px at 100 x 100, the shipped default model's split ({args.split.name}: 10,453 train / "
        "1,158 validation).  ",
        f"Budget: **{args.epochs} epochs** per run, seeds {seeds}, AdamW 2e-3, cosine, EMA, the default augmentation, "
        f"flip TTA. Attention network at width {args.attention_width} with an L1 head; the default recipe is the "
        "half-width ResNet-18 with the ordinal head (the shipped model trains it for 45 epochs).  ",
        "Segmented = `hand=crop_mask, contrast=hand`: the shipped U-Net's mask, background "
        "blanked, crop to the hand (+5%), percentiles of the hand's pixels.",
        "",
        "## Table 1: the attention network (validation MAE, months)",
        "",
        *header,
        *_rows(results, ATTENTION_RUNS),
        "",
        "Paper (Wu et al., RSNA, 500 px hand-segmented images, full training): 7.38 full, 9.07 without "
        "Att3_2/Att3_3, 10 without sex, 12 on images with tags (their four-stage comparison).",
        "",
        "## Table 2: the default model's recipe with and without segmentation",
        "",
        *header,
        *_rows(results, DEFAULT_RUNS),
        "",
        "The shipped default model (trained on raw images for 45 epochs) on the same validation images, "
        "with the clean-up switched on at inference only:",
        "",
        "| Inference preprocessing | MAE (months) | Images |",
        "|---|---|---|",
    ]
    for label, entry in results["default"].items():
        lines.append(f"| {label} | {entry['mae']:.2f} | {entry['n']} (skipped {entry['skipped']}) |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
