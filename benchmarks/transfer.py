"""Transfer learning between boneage models, measured: ALA-Net (``alanet18``) from scratch against ALA-Net
started from the shipped default model (``boneage train --init``, its first member's ResNet-18), at ALA-Net's
Table-1 budget, in one command:

    python benchmarks/transfer.py --data ../shared/data --out runs/transfer --epochs 6 --seeds 0

Both arms use the Table-1 recipe of ``benchmarks/alanet_ablation.py`` (the default model's: half-width
ResNet-18 without the stem max pool, AdamW 2e-3, cosine, EMA, flip TTA; keypoints supervise the RPN) on the
shipped default model's split, whose training images are also the ones the default model was trained on:
no validation image reaches either arm. 128 of the member's 129 tensors match ALA-Net's global branch by
name and shape (its fully connected head does not); the rest of ALA-Net starts as from scratch. The MAE of
each run is its exported float16 model's, with flip TTA, on the 1,158 validation images. Finished runs
under ``--out`` are reused (``--arms`` runs one arm only, e.g. both arms side by side in two processes);
the table is written to ``--table``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from _runs import spread, train_or_reuse  # benchmarks/ is on sys.path when a script in it runs

ARMS = {"scratch": "from scratch", "init": "--init the default model (member 0)"}


def _train(arm: str, out: Path, args, seed: int) -> dict:
    from boneage.models import default_model_path
    from boneage.training import TrainConfig

    data = Path(args.data)
    extra = {"init": str(default_model_path()), "init_member": 0} if arm == "init" else {}
    return train_or_reuse(out, lambda: TrainConfig(
        out_dir=str(out), images=str(data / "rsna-100px" / "images"),
        labels=str(data / "rsna-100px" / "boneage-training-dataset.csv"),
        split_file=str(default_model_path() / "split.json"), cache_dir=str(Path(args.out) / "cache"),
        keypoints=str(data / "annotations" / "hand-keypoints-21"), model="alanet18", epochs=args.epochs, seed=seed,
        threads=args.threads, progress=False, **extra,
    ), f"alanet18 {arm} seed {seed}")


def _markdown(results: dict, args, elapsed: float) -> str:
    lines = [
        "# Transfer learning: ALA-Net from scratch and from the default model", "",
        f"Command: `python benchmarks/transfer.py --data {args.data} --out {args.out} --epochs {args.epochs} "
        f"--seeds {' '.join(str(s) for s in args.seeds)}`  ",
        f"{dt.date.today().isoformat()}; {elapsed / 60:.0f} min in this invocation (reused runs count as 0).  ",
        "Recipe: ALA-Net's Table 1 (`benchmarks/alanet_ablation.py`), "
        f"**{args.epochs} epochs**, the shipped default model's split; validation MAE in months, 1,158 images.", "",
        "| alanet18 | MAE per seed | MAE | tensors loaded | minutes per run |", "|---|---|---|---|---|",
    ]
    for arm, label in ARMS.items():
        runs = results.get(arm, [])
        if runs:
            maes = [r["mae"] for r in runs]
            per_seed = ", ".join(f"{m:.2f}" for m in maes)
            minutes = sum(r["minutes"] for r in runs) / len(runs)
            lines.append(f"| {label} | {per_seed} | {spread(maes)} | {runs[0]['loaded']} | {minutes:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/transfer", help="where runs are written (and reused)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(ARMS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--table", default="benchmarks/results/transfer.md")
    args = parser.parse_args(argv)
    if not (Path(args.data) / "rsna-100px").is_dir():
        print(f"{args.data}: rsna-100px missing; nothing to benchmark", file=sys.stderr)
        return 2
    started, results = time.time(), {}
    for seed in args.seeds:
        for arm in args.arms:
            config = _train(arm, Path(args.out) / arm / f"seed{seed}", args, seed)
            results.setdefault(arm, []).append({
                "mae": config["metrics"]["validation"]["mae_months"], "minutes": config["training"]["duration_s"] / 60,
                "loaded": _loaded(config)})
    text = _markdown(results, args, time.time() - started)
    print(text)
    if set(args.arms) == set(ARMS):
        Path(args.table).write_text(text)
    return 0


def _loaded(config: dict) -> str:
    """How many tensors --init loaded (from the recipe: none without --init)."""
    if not config["training"]["recipe"].get("init"):
        return "-"
    from boneage.models import create_model, default_model_path
    from boneage.training.transfer import load_matching_weights

    spec = config["model"]
    report = load_matching_weights(create_model(spec["name"], **spec["kwargs"]), str(default_model_path()))
    return f"{len(report.loaded)} of {len(report.loaded) + len(report.missing)}"


if __name__ == "__main__":
    sys.exit(main())
