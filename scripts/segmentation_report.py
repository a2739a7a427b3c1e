"""Mask quality of a hand segmenter on real images, with a contact sheet a reader can judge.

    python scripts/segmentation_report.py [--segmenter PATH] [--data ../shared/data]
        [--sheet docs/segmentation-contact-sheet.png] [--markdown benchmarks/results/segmentation.md]

Measures, for the segmenter (default: the one shipped in the package):

1. rsna-100px, the held-out annotated ids (the ``val`` list of the segmenter's ``split.json``; else the
   annotated ids of the default model's validation split): keypoint coverage (share of the 21
   keypoints inside the mask; share of images with all 21 inside) of the U-Net mask, of the classical
   mask and of the keypoint-refined mask it was trained on, and Dice/IoU of the U-Net mask against
   both.
2. rsna-512px-samples (40 images): Dice/IoU against the classical mask (their background was removed
   by their source, so the classical mask is a strong reference there). Their hand keypoints cannot
   be used: those images were registered (cropped, rotated) by their source, while the keypoints are
   on the raw RSNA frame.
3. dha-landmarks (133 images): coverage of the 37 landmarks (scaled from the original grid with
   ``meta.csv``) by the U-Net and the classical mask, and Dice/IoU against the classical mask.

An image where no hand is found counts as an empty mask (coverage 0). Writes the contact sheet (a
grid of thumbnails: U-Net outline green, classical outline orange, keypoints blue inside / red
outside; per data set evenly spaced images plus the two worst) and the Markdown table. Without the
real data it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
CELL = (180, 230)  # width, height of a contact-sheet cell (thumbnail + caption)
CAPTION_H = 30
PER_ROW_SPACED, PER_ROW_WORST = 6, 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", default=None, help="segmenter folder (default: the shipped one)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--sheet", type=Path, default=REPO / "docs" / "segmentation-contact-sheet.png")
    parser.add_argument("--markdown", type=Path, default=REPO / "benchmarks" / "results" / "segmentation.md")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per data set (quick checks)")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- data
def read_gray(path: Path) -> np.ndarray:
    from boneage.io import read_image
    from boneage.preprocess import to_grayscale

    return to_grayscale(read_image(path).pixels)


def held_out_ids(segmenter, keypoints: dict) -> tuple[list[str], str]:
    import json

    from boneage.models import default_model_path

    source = Path(segmenter.info.get("source", ""))
    folder = source if source.is_dir() else source.parent
    for split_file, what in ((folder / "split.json", "the segmenter's split.json"),
                             (default_model_path() / "split.json", "the default model's validation split")):
        if split_file.exists():
            ids = [i for i in json.loads(split_file.read_text()).get("val", []) if i in keypoints]
            if ids:
                return sorted(ids), what
    return [], "no split file found"


def load_dha_landmarks(root: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """``{id: (image path, (37, 2) landmarks in the image's pixel coordinates)}``."""
    meta = {row["id"]: row for row in csv.DictReader(open(root / "meta.csv", newline=""))}
    result = {}
    with open(root / "landmarks-37.csv", newline="") as fh:
        for row in csv.reader(fh):
            image_id = f"dha_{row[0]}"
            if image_id not in meta or not (root / "images" / f"{image_id}.png").exists():
                continue
            orig_w, orig_h = (int(v) for v in meta[image_id]["orig_size"].split("x"))
            out_w, out_h = (int(v) for v in meta[image_id]["out_size"].split("x"))
            points = np.asarray(row[1:], dtype=np.float64).reshape(-1, 2) * [out_w / orig_w, out_h / orig_h]
            result[image_id] = (root / "images" / f"{image_id}.png", points)
    return dict(sorted(result.items()))


# ------------------------------------------------------------------------------------------- measure
class Case:
    def __init__(self, image_id, gray, unet, classical, points=None, refined=None):
        from boneage.preprocess import normalize_intensity

        self.id, self.unet, self.classical, self.points, self.refined = image_id, unet, classical, points, refined
        self.image01 = normalize_intensity(gray, "percentile", (0.5, 99.5))

    def coverage(self, mask) -> float:
        from boneage.segmentation import keypoints_inside

        return float(keypoints_inside(mask, self.points).mean())


def segment(segmenter, gray, source) -> tuple[np.ndarray, bool, float]:
    from boneage.preprocess.masks import NoHandFoundError

    start = time.perf_counter()
    try:
        mask, found = segmenter.predict_mask(gray, source=source), True
    except NoHandFoundError:
        mask, found = np.zeros(gray.shape, dtype=bool), False
    return mask, found, time.perf_counter() - start


def measure(cases: list[Case], no_hand: int, seconds: list[float], with_refined: bool) -> dict:
    from boneage.segmentation import dice_score, iou_score

    result = {"n": len(cases), "no_hand_found": no_hand, "ms_per_image": round(1000 * float(np.median(seconds)), 1),
              "area_unet": float(np.mean([c.unet.mean() for c in cases])),
              "area_classical": float(np.mean([c.classical.mean() for c in cases])),
              "dice_classical": float(np.mean([dice_score(c.unet, c.classical) for c in cases])),
              "iou_classical": float(np.mean([iou_score(c.unet, c.classical) for c in cases]))}
    if with_refined:
        result["dice_refined"] = float(np.mean([dice_score(c.unet, c.refined) for c in cases]))
        result["iou_refined"] = float(np.mean([iou_score(c.unet, c.refined) for c in cases]))
    if cases and cases[0].points is not None:
        kinds = {"unet": lambda c: c.unet, "classical": lambda c: c.classical}
        if with_refined:
            kinds["refined"] = lambda c: c.refined
        for name, get in kinds.items():
            shares = np.array([c.coverage(get(c)) for c in cases])
            result[f"coverage_{name}"] = float(shares.mean())
            result[f"all_inside_{name}"] = float((shares == 1.0).mean())
    return result


# ---------------------------------------------------------------------------------------------- sheet
def thumbnail(case: Case, caption: str):
    from PIL import Image, ImageDraw, ImageFont

    from boneage.segmentation import overlay_mask

    box_w, box_h = CELL[0] - 6, CELL[1] - CAPTION_H - 6
    height, width = case.image01.shape
    scale = min(box_w / width, box_h / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def small(mask):
        return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)) >= 128

    image = np.asarray(Image.fromarray((case.image01 * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR))
    points = None if case.points is None else case.points * [size[0] / width, size[1] / height]
    rgb = overlay_mask(image / 255.0, small(case.unet), points=points, reference=small(case.classical), thickness=2)
    cell = Image.new("RGB", CELL, (24, 24, 24))
    cell.paste(Image.fromarray(rgb), ((CELL[0] - size[0]) // 2, 3 + (box_h - size[1]) // 2))
    draw = ImageDraw.Draw(cell)
    font = ImageFont.load_default(size=11)
    for k, line in enumerate(caption.split("\n")[:2]):
        draw.text((4, CELL[1] - CAPTION_H + 1 + 13 * k), line, fill=(235, 235, 235), font=font)
    return cell


def pick(cases: list[Case], badness) -> list[tuple[Case, bool]]:
    """Evenly spaced cases plus the worst ones by ``badness`` (marked True)."""
    worst = sorted(range(len(cases)), key=badness, reverse=True)[:PER_ROW_WORST]
    rest = [i for i in range(len(cases)) if i not in worst]
    spaced = [rest[round(k)] for k in np.linspace(0, len(rest) - 1, min(PER_ROW_SPACED, len(rest)))] if rest else []
    return [(cases[i], False) for i in spaced] + [(cases[i], True) for i in worst]


def contact_sheet(rows: list[tuple[str, list[tuple[Case, bool]], callable]], title: str, path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    columns = PER_ROW_SPACED + PER_ROW_WORST
    header, label_h = 44, 20
    sheet = Image.new("RGB", (columns * CELL[0], header + len(rows) * (label_h + CELL[1])), (10, 10, 10))
    draw = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    draw.text((6, 4), title, fill=(255, 255, 255), font=font)
    draw.text((6, 24), "green: U-Net mask   orange: classical mask   blue/red: keypoints inside/outside the U-Net mask   "
              "last two of each row: the worst", fill=(200, 200, 200), font=small)
    y = header
    for label, picked, caption in rows:
        draw.text((6, y + 3), label, fill=(255, 255, 255), font=small)
        y += label_h
        for k, (case, worst) in enumerate(picked):
            sheet.paste(thumbnail(case, ("WORST " if worst else "") + caption(case)), (k * CELL[0], y))
        y += CELL[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# -------------------------------------------------------------------------------------------- report
def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(info: dict, held_out_source: str, results: dict, sheet: Path, out: Path, seconds: float) -> str:
    r100, r512, dha = results["rsna-100px"], results["rsna-512px-samples"], results["dha-landmarks"]
    training = info.get("training", {})
    try:
        sheet_link = os.path.relpath(sheet, out.parent)
    except ValueError:
        sheet_link = str(sheet)
    lines = [
        "# Hand segmentation: mask quality",
        "",
        f"Segmenter **{info.get('name')}** {info.get('version')} ({info.get('source')}), "
        f"input {info.get('settings', {}).get('input_size')} px, trained on {training.get('n_train_annotated')} annotated "
        f"+ {training.get('n_train_extra')} other rsna-100px images in {training.get('wall_clock_s')} s on "
        f"{training.get('hardware')}. Measured {dt.date.today().isoformat()} with `python scripts/segmentation_report.py` "
        f"({seconds:.0f} s). Contact sheet: [{sheet.name}]({sheet_link}).",
        "",
        "An image where the segmenter finds no hand counts as an empty mask. *Classical* is",
        "`boneage.preprocess.masks.classical_hand_mask`; *refined* is the classical mask grown until it holds",
        "all 21 keypoints (the U-Net's training target).",
        "",
        f"## Keypoint coverage: rsna-100px, {r100['n']} held-out annotated images ({held_out_source})",
        "",
        "| mask | keypoints inside | images with all 21 inside | mean area |",
        "|---|---:|---:|---:|",
        f"| U-Net | {pct(r100.get('coverage_unet'))} | {pct(r100.get('all_inside_unet'))} | {pct(r100['area_unet'])} |",
        f"| classical | {pct(r100.get('coverage_classical'))} | {pct(r100.get('all_inside_classical'))} | {pct(r100['area_classical'])} |",
        f"| refined (training target) | {pct(r100.get('coverage_refined'))} | {pct(r100.get('all_inside_refined'))} | - |",
        "",
        "## Agreement",
        "",
        "| data | n | no hand found | Dice vs classical | IoU vs classical | Dice vs refined | IoU vs refined "
        "| mean area, U-Net / classical | ms / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['n']} | {r['no_hand_found']} | {num(r['dice_classical'])} | {num(r['iou_classical'])} | "
                     f"{num(r.get('dice_refined'))} | {num(r.get('iou_refined'))} | "
                     f"{pct(r['area_unet'])} / {pct(r['area_classical'])} | {r['ms_per_image']} |")
    lines += [
        "",
        f"## Landmark coverage: dha-landmarks, {dha['n']} images (37 landmarks each)",
        "",
        "| mask | landmarks inside | images with all 37 inside | mean area |",
        "|---|---:|---:|---:|",
        f"| U-Net | {pct(dha.get('coverage_unet'))} | {pct(dha.get('all_inside_unet'))} | {pct(dha['area_unet'])} |",
        f"| classical | {pct(dha.get('coverage_classical'))} | {pct(dha.get('all_inside_classical'))} | {pct(dha['area_classical'])} |",
        "",
        "A mask of the whole image would hold every point: read coverage together with the area and the Dice.",
        "",
        f"rsna-512px-samples ({r512['n']} images): the hand keypoints of their ids are on the raw RSNA frame, while",
        "these images were cropped and rotated by their source, so keypoint coverage is not measured there;",
        "their background was removed, which makes the classical mask a strong reference.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    data = args.data
    needed = [data / "rsna-100px" / "images", data / "annotations" / "hand-keypoints-21",
              data / "rsna-512px-samples" / "images", data / "dha-landmarks" / "landmarks-37.csv"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"segmentation report skipped: real data not found ({', '.join(missing)}); "
              "place ../shared/data beside the repository or pass --data", file=sys.stderr)
        return 0
    import torch

    from boneage.data import load_hand_keypoints
    from boneage.errors import BoneAgeError
    from boneage.preprocess import normalize_intensity
    from boneage.preprocess.masks import classical_hand_mask
    from boneage.segmentation import dice_score, load_segmenter, training_masks

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        segmenter = load_segmenter(args.segmenter)
    except BoneAgeError as err:
        print(f"segmentation report: error: {err}", file=sys.stderr)
        return 2
    keypoints = load_hand_keypoints(data / "annotations" / "hand-keypoints-21")
    ids, held_out_source = held_out_ids(segmenter, keypoints)
    ids = ids[: args.limit]
    results, sheet_rows = {}, []

    # 1. rsna-100px held-out annotated ids
    cases, no_hand, seconds = [], 0, []
    for image_id in ids:
        gray = read_gray(data / "rsna-100px" / "images" / f"{image_id}.png")
        points = keypoints[image_id].points.reshape(-1, 2) * [gray.shape[1], gray.shape[0]]
        masks = training_masks([normalize_intensity(gray, "percentile", (0.5, 99.5))], [points])
        unet, found, elapsed = segment(segmenter, gray, image_id)
        no_hand, seconds = no_hand + (not found), seconds + [elapsed]
        cases.append(Case(image_id, gray, unet, masks.classical[0], points, masks.masks[0]))
    if not cases:
        print("segmentation report: error: no held-out annotated ids found", file=sys.stderr)
        return 2
    results["rsna-100px"] = measure(cases, no_hand, seconds, with_refined=True)
    sheet_rows.append(("rsna-100px, held-out annotated ids (100x100, squashed by their source; 21 keypoints shown); "
                       "Dice against the refined mask",
                       pick(cases, lambda i: (1 - cases[i].coverage(cases[i].unet), 1 - dice_score(cases[i].unet, cases[i].refined))),
                       lambda c: f"{c.id}  Dice {dice_score(c.unet, c.refined):.2f}\n"
                                 f"keypoints {int(round(c.coverage(c.unet) * 21))}/21 inside"))

    # 2. rsna-512px-samples
    cases, no_hand, seconds = [], 0, []
    files = sorted((data / "rsna-512px-samples" / "images").glob("*.png"))[: args.limit]
    for file in files:
        gray = read_gray(file)
        classical = classical_hand_mask(normalize_intensity(gray, "percentile", (0.5, 99.5)))
        unet, found, elapsed = segment(segmenter, gray, file.name)
        no_hand, seconds = no_hand + (not found), seconds + [elapsed]
        cases.append(Case(file.stem, gray, unet, classical))
    results["rsna-512px-samples"] = measure(cases, no_hand, seconds, with_refined=False)
    sheet_rows.append(("rsna-512px-samples (background removed and registered by their source); Dice against the "
                       "classical mask",
                       pick(cases, lambda i: 1 - dice_score(cases[i].unet, cases[i].classical)),
                       lambda c: f"{c.id}  Dice {dice_score(c.unet, c.classical):.2f}\n"
                                 f"hand {c.unet.mean():.0%} of the image"))

    # 3. dha-landmarks
    cases, no_hand, seconds = [], 0, []
    for image_id, (file, points) in list(load_dha_landmarks(data / "dha-landmarks").items())[: args.limit]:
        gray = read_gray(file)
        classical = classical_hand_mask(normalize_intensity(gray, "percentile", (0.5, 99.5)))
        unet, found, elapsed = segment(segmenter, gray, file.name)
        no_hand, seconds = no_hand + (not found), seconds + [elapsed]
        cases.append(Case(image_id, gray, unet, classical, points))
    results["dha-landmarks"] = measure(cases, no_hand, seconds, with_refined=False)
    n_points = len(cases[0].points) if cases else 0
    sheet_rows.append(("dha-landmarks (Digital Hand Atlas, 37 landmarks shown); Dice against the classical mask",
                       pick(cases, lambda i: (1 - cases[i].coverage(cases[i].unet), 1 - dice_score(cases[i].unet, cases[i].classical))),
                       lambda c: f"{c.id}  Dice {dice_score(c.unet, c.classical):.2f}\n"
                                 f"landmarks {int(round(c.coverage(c.unet) * n_points))}/{n_points} inside"))

    info = segmenter.info
    contact_sheet(sheet_rows, f"boneage hand segmentation: {info.get('name')} {info.get('version')}", args.sheet)
    text = markdown(info, held_out_source, results, args.sheet, args.markdown, time.perf_counter() - started)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text)
    print(text)
    print(f"wrote {args.sheet} and {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
