"""How well the hand-radiograph recogniser refuses what is not a hand radiograph, and how rarely it refuses a
hand, measured in one run:

    python benchmarks/recogniser.py [--model PATH] [--synthetic 200] [--out benchmarks/results/recogniser.md]

* false refusals on every real hand set in ../shared/data: the 11,611 RSNA 100 px images (the recogniser's
  training ids and the default model's validation ids apart), the 40 RSNA 512 px samples and the 133 Digital
  Hand Atlas images; for the recogniser alone and for the whole hand check of the default model's
  preprocessing (recogniser, then the segmenter's mask checks);
* the detection rate per negative kind: the real non-hand images of ../shared/data/non-hand, the pydicom-data
  package's and pydicom's own non-hand files (when installed), and synthetic kinds drawn with another seed
  than training's; kinds never trained on are marked *held out*;
* the recogniser's time per image (windowed image -> decision) on the 512 px samples.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _decision(recogniser, pixels) -> tuple[bool, str]:
    from boneage.errors import BoneAgeError

    try:
        recogniser.check_pixels(pixels)
        return True, ""
    except BoneAgeError as err:
        return False, str(err)


def _full_check(pipeline, pixels) -> bool:
    from boneage.errors import BoneAgeError

    try:
        pipeline(pixels, "x")
        return True
    except BoneAgeError:
        return False


def hand_sets(trained_ids: set[str], val_ids: set[str]) -> dict[str, list[Path]]:
    rsna = sorted((SHARED / "rsna-100px" / "images").glob("*.png"))
    return {
        "RSNA 100 px, recogniser training ids": [p for p in rsna if p.stem in trained_ids],
        "RSNA 100 px, default model's validation ids": [p for p in rsna if p.stem in val_ids],
        "RSNA 100 px, all 11,611": rsna,
        "RSNA 512 px samples": sorted((SHARED / "rsna-512px-samples" / "images").glob("*.png")),
        "Digital Hand Atlas (133, never trained on)": sorted((SHARED / "dha-landmarks" / "images").glob("*.png")),
    }


def false_refusals(recogniser, pipeline, sets: dict[str, list[Path]]) -> list[str]:
    from boneage.io import read_image

    rows, refused_examples = [], []
    for name, paths in sets.items():
        alone = whole = 0
        for path in paths:
            pixels = read_image(path).pixels
            accepted, message = _decision(recogniser, pixels)
            alone += not accepted
            whole += not (accepted and _full_check(pipeline, pixels))
            if not accepted and len(refused_examples) < 8:
                refused_examples.append(message)
        rows.append(f"| {name} | {len(paths)} | {alone} ({100 * alone / max(1, len(paths)):.2f}%) | "
                    f"{whole} ({100 * whole / max(1, len(paths)):.2f}%) |")
    return rows + [""] + [f"- refused: `{m}`" for m in refused_examples]


def negative_sets(synthetic: int) -> dict[str, tuple[str, list]]:
    """``{row name: (kind, images)}``."""
    from boneage.segmentation.recognition_data import (
        REAL_KINDS,
        SYNTHETIC_KINDS,
        load_non_hand,
        pydicom_negatives,
        synthetic_image,
    )

    sets: dict[str, tuple[str, list]] = {}
    for item in load_non_hand(SHARED / "non-hand", REAL_KINDS, max_side=1024):
        sets.setdefault(f"non-hand/{item.kind}", (item.kind, []))[1].append(item.pixels)
    for item in pydicom_negatives(max_side=1024):
        sets.setdefault(f"pydicom-data {Path(item.source).name} ({item.kind})", ("pydicom", []))[1].append(item.pixels)
    rng = np.random.default_rng(12345)  # not the training seed
    hands = [np.asarray(_hand(p), np.float32) for p in sorted((SHARED / "rsna-100px" / "images").glob("*.png"))[-200:]]
    for kind in SYNTHETIC_KINDS:
        sets[f"synthetic {kind}"] = (kind, [synthetic_image(kind, rng, 256, hands[k % len(hands)]) for k in range(synthetic)])
    return sets


def _hand(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("L").resize((256, 256)), np.float32) / 255.0


def detection(recogniser, sets: dict[str, tuple[str, list]]) -> list[str]:
    """One row per negative set; every pydicom-data file is held out (another source than training's)."""
    from boneage.segmentation.recognition_data import HELD_OUT_KINDS

    rows = []
    for name, (kind, images) in sets.items():
        held = kind == "pydicom" or kind in HELD_OUT_KINDS
        refused, named = 0, {}
        for pixels in images:
            accepted, message = _decision(recogniser, pixels)
            refused += not accepted
            if not accepted and "looks like " in message:
                what = message.split("looks like ")[1].split(",")[0].removeprefix("an ").removeprefix("a ")
                named[what] = named.get(what, 0) + 1
        said = ", ".join(f"{k} {v}" for k, v in sorted(named.items(), key=lambda kv: -kv[1])[:2])
        rows.append(f"| {name} | {'held out' if held else 'trained'} | {len(images)} | "
                    f"{refused} ({100 * refused / len(images):.0f}%) | {said or '-'} |")
    return rows


def timing(recogniser, repeats: int = 200) -> tuple[float, float]:
    """``(recogniser ms, windowing ms)`` per 512 px sample: the check of an image already windowed (what it adds
    to a model's preprocessing, which windows every image anyway), and the windowing itself."""
    from boneage.io import read_image
    from boneage.preprocess import normalize_intensity, to_grayscale

    images = [read_image(p).pixels for p in sorted((SHARED / "rsna-512px-samples" / "images").glob("*.png"))]
    started = time.perf_counter()
    windowed = [normalize_intensity(to_grayscale(pixels)) for pixels in images]
    window_ms = (time.perf_counter() - started) / len(images) * 1000
    for image in windowed[:5]:
        recogniser.check(image)
    started = time.perf_counter()
    for k in range(repeats):
        recogniser.check(windowed[k % len(windowed)])
    return (time.perf_counter() - started) / repeats * 1000, window_ms


def main(argv=None) -> int:
    import torch

    from boneage.data import load_split
    from boneage.models import default_model_path, load_model
    from boneage.segmentation import load_recogniser, model_preprocessing
    from boneage.training.distributed import hardware_description

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="recogniser folder (default: the shipped one)")
    parser.add_argument("--synthetic", type=int, default=200, help="synthetic images per kind")
    parser.add_argument("--out", default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    if not SHARED.exists():
        print(f"real data not found at {SHARED}", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    recogniser = load_recogniser(args.model)
    split = load_split(default_model_path() / "split.json")
    trained = set(split["train"]) - {p.stem for p in (SHARED / "rsna-512px-samples" / "images").glob("*.png")}
    pipeline = model_preprocessing(load_model(None).preprocess, check_hand=True)
    source = "the shipped one" if args.model is None else args.model
    lines = [f"Recogniser {recogniser.info.get('version')} ({source}); "
             f"limits: P(hand) >= {recogniser.settings.min_probability}, feature distance <= "
             f"{recogniser.settings.max_distance}. Hardware: {hardware_description()}.", "",
             "## False refusals of real hands", "",
             "| hand set | images | refused by the recogniser | refused by the whole hand check |", "|---|---:|---:|---:|",
             *false_refusals(recogniser, pipeline, hand_sets(trained, set(split["val"]))), "",
             "## Detection of images that are not hand radiographs", "",
             "| negative kind | in training | images | refused | named as (most often) |", "|---|---|---:|---:|---|",
             *detection(recogniser, negative_sets(args.synthetic)), "",
             "Recogniser time per image (512 px samples, mean of 200 runs on this CPU): {:.2f} ms from the windowed "
             "image to the decision (the windowing, {:.2f} ms, is the model's preprocessing, done for every image "
             "anyway).".format(*timing(recogniser))]
    text = "\n".join(lines)
    print(text)
    if args.out:
        command = " ".join(["python benchmarks/recogniser.py", *(argv if argv is not None else sys.argv[1:])])
        Path(args.out).write_text(f"# Hand-radiograph recogniser\n\nMade by `{command}`.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
