"""ALA-Net's cost against its global baseline, measured in one run on this machine.

    python benchmarks/bench_alanet_speed.py [--steps 40] [--repeats 60] [--ablation runs/alanet-ablation]

1. Training images/s of ``boneage.training.train`` (same recipe: 100 px, batch 64, bf16, channels-last,
   augmentation, EMA) for ``alanet18`` (RPN + 17 ROIs + ROI head + patch loss) and ``alanet18_global``
   (the same network without them), on the same real images with the RPN's keypoints; ratio.
2. Single-image CPU latency (file -> months, ``Assessor.assess_files``, p50/p95) of both, with the
   trained models of the ablation benchmark when they exist (untrained ones otherwise: the cost is
   the same), and their ratio.

Needs ../shared/data (rsna-100px and the hand keypoints); prints why not otherwise. Run it on an
otherwise idle machine: the ratio is robust to a steady load, not to one that comes and goes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
MODELS = ("alanet18_global", "alanet18")


def train_speed(model: str, steps: int, tmp: Path) -> float:
    from boneage.models import default_model_path
    from boneage.training import TrainConfig, train

    config = TrainConfig(
        out_dir=str(tmp / model), images=str(SHARED / "rsna-100px" / "images"),
        labels=str(SHARED / "rsna-100px" / "boneage-training-dataset.csv"),
        split_file=str(default_model_path() / "split.json"), keypoints=str(SHARED / "annotations" / "hand-keypoints-21"),
        cache_dir=str(tmp / "cache"), model=model, epochs=1, max_steps=steps, progress=False,
    )
    train(config, log=lambda *a: None)
    return json.loads((tmp / model / "history.json").read_text())[-1]["train_images_per_s"]


def latency(model_dir: Path, repeats: int) -> tuple[float, float]:
    from boneage.api import Assessor

    paths = sorted((SHARED / "rsna-512px-samples" / "images").glob("*.png"))
    assessor = Assessor(model_dir)
    for _ in range(5):
        list(assessor.assess_files([paths[0]], sex="F"))
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        list(assessor.assess_files([paths[i % len(paths)]], sex="F"))
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 95) * 1000)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per model (after one warm-up run)")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--ablation", default="runs/alanet-ablation", help="where trained models are looked for")
    args = parser.parse_args(argv)
    if not (SHARED / "rsna-100px").exists() or not (SHARED / "annotations" / "hand-keypoints-21").exists():
        print(f"{SHARED}: rsna-100px or the hand keypoints are missing; nothing to measure", file=sys.stderr)
        return 2
    from boneage.models import create_model, export_model
    from boneage.preprocess import PreprocessConfig
    from boneage.training.trainer import hardware_description

    results = {"hardware": hardware_description()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_speed("alanet18_global", 3, tmp / "warm")  # decode the images into the cache once
        for model in MODELS:
            results[f"train_images_per_s_{model}"] = train_speed(model, args.steps, tmp)
        for model in MODELS:
            trained = Path(args.ablation) / model / "seed0" / "model"
            if not (trained / "config.json").exists():
                trained = tmp / f"untrained_{model}"
                net = create_model(model, width=0.5, max_pool=False, head="ordinal", label_range=[0.0, 228.0])
                export_model(trained, net.eval(), {"name": model, "version": "untrained", "model": net.boneage_spec,
                                                   "preprocess": PreprocessConfig(image_size=(100, 100)).to_dict(),
                                                   "labels": {"unit": "months", "min": 0.0, "max": 228.0},
                                                   "inference": {"tta": "hflip"}})
            p50, p95 = latency(trained, args.repeats)
            results[f"latency_p50_ms_{model}"], results[f"latency_p95_ms_{model}"] = p50, p95
            results[f"latency_model_{model}"] = str(trained)
    g, a = MODELS
    results["train_speed_ratio_alanet_vs_global"] = results[f"train_images_per_s_{a}"] / results[f"train_images_per_s_{g}"]
    results["latency_ratio_alanet_vs_global"] = results[f"latency_p50_ms_{a}"] / results[f"latency_p50_ms_{g}"]
    print(json.dumps(results, indent=1))
    print(f"\ntraining: alanet18 {results[f'train_images_per_s_{a}']:.0f} img/s vs global {results[f'train_images_per_s_{g}']:.0f} "
          f"img/s (ratio {results['train_speed_ratio_alanet_vs_global']:.2f}); single image p50: "
          f"{results[f'latency_p50_ms_{a}']:.1f} vs {results[f'latency_p50_ms_{g}']:.1f} ms "
          f"(ratio {results['latency_ratio_alanet_vs_global']:.2f}); {results['hardware']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
