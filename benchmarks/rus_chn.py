"""The four-stage RUS-CHN pipeline measured in one run: accuracy by age group, detection, stages, geometry, speed.

    python benchmarks/rus_chn.py [--model rus-chn] [--detector-run LABEL=MODEL_DIR ...] [--limit N]
                                 [--out benchmarks/results/rus_chn.md] [--docs docs]

* MAE and RMSE by the paper's age groups (0-3, 4-7, 8-11, 12-15, 16-18 years of reference bone age; 16-18 is
  16 up to 19 years exclusive, so the 228-month images count only in "all") of ``--model`` (default: the
  shipped ``rus-chn``; a model folder works too) and of the global default model, on the default model's
  validation split of rsna-100px (its split.json, 1,158 images, each model's own preprocessing, no hand
  check): the RUS-CHN model's G&P-equivalent bone age and its raw RUS-CHN age (expected score -> the
  50th-centile curve), and the default model's bone age;
* detection of the 13 RUS boxes for each ``--detector-run LABEL=MODEL_DIR`` (AP50 per bone and their mean,
  the paper's mAP; AP@[.5:.95], AP75, mean IoU): on the keypoint-annotated images of the validation split,
  ground truth the box geometry on their annotated keypoints (the first 17 ROI points, in model-input
  pixels);
* the predicted stages by age group per bone, Spearman's rho of stage with reference bone age and whether the
  group means rise, plotted at ``docs/rus-chn-stages.png``;
* the geometry's boxes on the annotated keypoints of 12 annotated validation images
  (``docs/rus-chn-boxes.png``) and the model's own boxes on them (``docs/rus-chn-boxes-predicted.png``);
* time per image, file -> months (``Predictor.prepare`` + ``predict``, no hand check, one image at a time,
  median over the 40 rsna-512px-samples after one warm-up), of the RUS-CHN and the default model in the
  same run, and their ratio.

``--limit N`` takes N validation images (seeded), N annotated images and N timed images, for quick checks
(write those with ``--out /tmp/... --docs /tmp/...``). Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("BONEAGE_CACHE", REPO / "runs" / "cache"))  # decoded images, reused between runs
RSNA = SHARED / "rsna-100px"
SAMPLES_512 = SHARED / "rsna-512px-samples"
KEYPOINTS = SHARED / "annotations" / "hand-keypoints-21"
SHEET_IMAGES = 12


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------------- data
def validation_samples(limit: int | None, seed: int = 0):
    """The default model's validation split of rsna-100px (a seeded subset of ``limit`` with ``--limit``)."""
    from boneage.data import apply_split, load_rsna, load_split
    from boneage.models import default_model_path

    samples = load_rsna(RSNA / "images", RSNA / "boneage-training-dataset.csv")
    _, val = apply_split(samples, load_split(default_model_path() / "split.json"))
    if limit is not None and limit < len(val):
        keep = np.sort(np.random.default_rng(seed).permutation(len(val))[:limit])
        val = [val[i] for i in keep]
    return val


def model_images(loaded, samples) -> np.ndarray:
    """The samples through the model's own preprocessing (no hand check), cached under :data:`CACHE`."""
    from boneage.data import load_images
    from boneage.segmentation import model_preprocessing

    return load_images(samples, loaded.preprocess, pipeline=model_preprocessing(loaded.preprocess, check_hand=False),
                       cache_dir=CACHE)


def input_points(samples, annotations: dict, preprocess) -> list[np.ndarray]:
    """The first 17 ROI keypoints of each (annotated) sample in the model's input pixels."""
    from PIL import Image

    from boneage.data import to_input_coordinates

    points = []
    for sample in samples:
        file_hw = (0, 0)
        if preprocess.resize != "stretch":
            with Image.open(sample.path) as image:
                file_hw = (image.height, image.width)
        roi = annotations[sample.id].roi_points()[:17]
        points.append(to_input_coordinates(roi, file_hw, tuple(preprocess.image_size), preprocess.resize))
    return points


# -------------------------------------------------------------------------------------------- measurements
def assess(loaded, samples, images: np.ndarray) -> dict:
    """Months (the model's output, with its test-time augmentation) and, for a per-bone model, its bones."""
    from boneage.inference import Predictor, predict_bones

    sexes = [s.sex for s in samples]
    months = np.asarray(Predictor(loaded, check_hand=False).predict_arrays(images, sexes), dtype=np.float64)
    bones = None
    if loaded.model.capabilities.per_bone:
        bones = predict_bones(loaded.model, images, [s.male for s in samples], loaded.preprocess)
    return {"months": months, "bones": bones}


def time_per_image(spec, limit: int | None) -> float:
    """Median seconds per image, file -> months, over the rsna-512px-samples (one warm-up image first)."""
    import csv

    from boneage.inference import Predictor

    predictor = Predictor(spec, check_hand=False)
    with open(SAMPLES_512 / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))[: limit or None]
    sexes = {row["id"]: "M" if row["male"].strip().lower() in ("true", "1", "m") else "F" for row in rows}
    paths = [SAMPLES_512 / "images" / f"{row['id']}.png" for row in rows]
    predictor.predict([predictor.prepare(paths[0])], [sexes[paths[0].stem]])
    seconds = []
    for path in paths:
        started = time.perf_counter()
        predictor.predict([predictor.prepare(path)], [sexes[path.stem]])
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def detection(spec: str, samples, annotations: dict) -> dict:
    """:func:`boneage.evaluation.bone_detection_metrics` of the model at ``spec`` on the annotated samples."""
    from boneage.evaluation import bone_detection_metrics
    from boneage.models import load_model

    loaded = load_model(spec)
    images = model_images(loaded, samples)
    points = input_points(samples, annotations, loaded.preprocess)
    return bone_detection_metrics(loaded.model, images, points, [s.male for s in samples], loaded.preprocess)


# -------------------------------------------------------------------------------------------------- tables
def accuracy_lines(rus: dict, default: dict, truth: np.ndarray) -> list[str]:
    """MAE / RMSE per age group: RUS-CHN G&P-equivalent, raw RUS-CHN, default model."""
    from boneage.evaluation.rus_chn import age_group_table

    columns = {"RUS-CHN model, G&P-equivalent": rus["months"], "RUS-CHN model, raw RUS-CHN age": rus["bones"]["raw_months"],
               "default model": default["months"]}
    tables = {name: age_group_table(values, truth) for name, values in columns.items()}
    lines = ["| age group (years) | n | " + " | ".join(f"{name} MAE / RMSE" for name in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for group, first in next(iter(tables.values())).items():
        cells = [f"{_fmt(t[group]['mae'])} / {_fmt(t[group]['rmse'])}" for t in tables.values()]
        lines.append(f"| {group} | {first['n']} | " + " | ".join(cells) + " |")
    return lines


def detection_lines(runs: dict[str, dict]) -> list[str]:
    """Per bone AP50 (and mean IoU) of each detector run, then mAP50, AP@[.5:.95] and AP75 over bones."""
    from boneage.data.rus_chn import BONES

    names = list(runs)
    lines = ["| bone | " + " | ".join(f"{n} AP50 / mean IoU" for n in names) + " |", "|---|" + "---:|" * len(names)]
    for bone in BONES:
        lines.append(f"| {bone} | " + " | ".join(f"{_fmt(runs[n]['by_bone'][bone]['ap50'], 1)} / "
                                                 f"{_fmt(runs[n]['by_bone'][bone]['mean_iou'], 1)}" for n in names) + " |")
    lines.append("| **mAP50 (mean over bones)** | " + " | ".join(f"**{_fmt(runs[n]['map50'], 1)}**" for n in names) + " |")
    lines.append("| mAP@[.5:.95] | " + " | ".join(_fmt(runs[n]["map"], 1) for n in names) + " |")
    lines.append("| AP75, all boxes | " + " | ".join(_fmt(runs[n]["ap75"], 1) for n in names) + " |")
    lines.append("| images | " + " | ".join(str(runs[n]["n_images"]) for n in names) + " |")
    return lines


def stage_lines(distribution: dict) -> list[str]:
    """Mean predicted stage per bone and age group, with its number of stages, rho and monotonicity."""
    from boneage.data.rus_chn import BONES, stage_count

    groups = distribution["groups"]
    lines = ["| bone | stages (F/M) | " + " | ".join(f"{g} (n {distribution['n_by_group'][g]})" for g in groups)
             + " | Spearman rho | rises |", "|---|---:|" + "---:|" * len(groups) + "---:|:---:|"]
    for bone in BONES:
        entry = distribution["by_bone"][bone]
        means = " | ".join(_fmt(entry["mean_by_group"][g]) for g in groups)
        lines.append(f"| {bone} | {stage_count(bone, 'F')}/{stage_count(bone, 'M')} | {means} | "
                     f"{_fmt(entry['spearman'], 3)} | {'yes' if entry['monotone'] else 'no'} |")
    rising = sum(entry["monotone"] for entry in distribution["by_bone"].values())
    lines += ["", f"Group means rise monotonically for {rising} of {len(BONES)} bones."]
    return lines


# ------------------------------------------------------------------------------------------------ pictures
def sheet_samples(annotated: list) -> list:
    """:data:`SHEET_IMAGES` annotated images spread evenly over the reference bone ages."""
    ordered = sorted(annotated, key=lambda s: (s.bone_age_months, s.id))
    picks = np.unique(np.linspace(0, len(ordered) - 1, min(SHEET_IMAGES, len(ordered))).round().astype(int))
    return [ordered[i] for i in picks]


def draw_sheets(loaded, chosen: list, annotations: dict, docs: Path) -> list[Path]:
    """The geometry's boxes on the annotated keypoints of ``chosen`` and the model's own boxes beside them."""
    import torch

    from boneage.evaluation.rus_chn import draw_contact_sheet
    from boneage.inference import predict_bones
    from boneage.models.rus_chn import bone_boxes

    images = model_images(loaded, chosen)
    points = np.stack(input_points(chosen, annotations, loaded.preprocess))
    truth = bone_boxes(torch.as_tensor(points, dtype=torch.float32)).numpy()
    titles = [f"{s.id}, {s.sex}, {s.bone_age_months / 12:.1f} y" for s in chosen]
    found = predict_bones(loaded.model, images, [s.male for s in chosen], loaded.preprocess)
    return [draw_contact_sheet(images, truth, docs / "rus-chn-boxes.png", titles, cols=4, points=points),
            draw_contact_sheet(images, found["boxes"], docs / "rus-chn-boxes-predicted.png", titles, cols=4)]


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# -------------------------------------------------------------------------------------------------- report
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rus-chn", help="the RUS-CHN model: 'rus-chn' (shipped) or a model folder")
    parser.add_argument("--detector-run", action="append", default=[], metavar="LABEL=MODEL_DIR",
                        help="a model whose 13 boxes to measure against the annotated keypoints (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per part, for a quick run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rus_chn.md")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="folder for the rus-chn-*.png pictures")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.detector_run:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            parser.error(f"--detector-run takes LABEL=MODEL_DIR, got {item!r}")
        runs[label] = folder
    args.detector_run = runs
    return args


def measure(args, rus, default) -> dict:
    """Every measurement of the report (see the module docstring)."""
    from boneage.data import load_hand_keypoints
    from boneage.evaluation.rus_chn import plot_stage_distribution, stage_distribution

    val = validation_samples(args.limit)
    truth = np.array([s.bone_age_months for s in val])
    sexes = np.array([s.sex for s in val])
    print(f"assessing {len(val)} validation images", flush=True)
    rus_result = assess(rus, val, model_images(rus, val))
    default_result = assess(default, val, model_images(default, val))
    annotations = load_hand_keypoints(KEYPOINTS)
    annotated = [s for s in validation_samples(None) if s.id in annotations]
    limited = annotated[: args.limit] if args.limit else annotated
    detections = {}
    for label, folder in args.detector_run.items():
        print(f"detection: {label}", flush=True)
        detections[label] = detection(folder, limited, annotations)
    distribution = stage_distribution(rus_result["bones"]["stage"], truth, sexes)
    stage_png = plot_stage_distribution(distribution, args.docs / "rus-chn-stages.png",
                                        title="RUS-CHN model: mean predicted stage by reference bone age")
    sheets = draw_sheets(rus, sheet_samples(annotated), annotations, args.docs)
    print("timing", flush=True)
    timing = {"rus": time_per_image(rus, args.limit), "default": time_per_image(default, args.limit)}
    return {"val": val, "truth": truth, "rus": rus_result, "default": default_result, "annotated": len(annotated),
            "detections": detections, "distribution": distribution, "stage_png": stage_png, "sheets": sheets,
            "timing": timing, "n_timed": min(args.limit or 40, 40)}


def report(args, rus, default, m: dict) -> str:
    """The Markdown report of :func:`measure`'s results."""
    command = "python benchmarks/rus_chn.py" + ("" if len(sys.argv) < 2 else " " + shlex.join(sys.argv[1:]))
    ratio = m["timing"]["rus"] / m["timing"]["default"]
    lines = [
        "# The four-stage RUS-CHN pipeline: accuracy by age group, detection, stages, speed", "",
        f"Command: `{command}`  ",
        f"RUS-CHN model: {rus.config.get('name')} {rus.config.get('version')} ({_relative(Path(rus.source))}); default model: "
        f"{default.config.get('name')} {default.config.get('version')}; {_dt.date.today().isoformat()}."
        + (f"  \n**Quick run: --limit {args.limit}, not the final numbers.**" if args.limit else ""), "",
        "## Accuracy by age group", "",
        f"The default model's validation split (its split.json), {len(m['val'])} rsna-100px images, each model with "
        "its own preprocessing (no hand check). Age groups in years of reference bone age, the paper's: 0-3 is "
        "[0, 4), ..., 16-18 is [16, 19), so images at 19 years (228 months) count only in \"all\". MAE / RMSE in months. "
        "G&P-equivalent: the model's bone age (the raw RUS-CHN age through its fitted monotone map); raw RUS-CHN age: "
        "the expected total score through the RUS-CHN 50th-centile curve.", "",
        *accuracy_lines(m["rus"], m["default"], m["truth"]), "",
    ]
    if m["detections"]:
        lines += ["## Detection of the 13 RUS boxes", "",
                  f"The keypoint-annotated images of the validation split ({m['annotated']} in all"
                  + (f", the first {args.limit} used" if args.limit and args.limit < m["annotated"] else "") + "); ground truth: the box geometry "
                  "(`boneage.models.rus_chn.bone_boxes`) on their annotated keypoints in model-input pixels; a predicted "
                  "box's score is its detector confidence. AP in percent; mAP50 = the mean over bones of AP50 (the paper's mAP).",
                  "", *detection_lines(m["detections"]), ""]
    lines += ["## Predicted stages by age group", "",
              f"Mean predicted stage (0-based) of the RUS-CHN model per bone and reference bone age group, on the "
              f"{len(m['val'])} validation images; Spearman's rho of stage with reference bone age; \"rises\": the group "
              f"means never fall from one group to the next. Plot (one line per sex): `{_relative(m['stage_png'])}`.", "",
              *stage_lines(m["distribution"]), "",
              "## Box geometry on annotated keypoints", "",
              f"`{_relative(m['sheets'][0])}`: the 13 boxes the geometry places on the annotated keypoints (dots) of "
              f"{SHEET_IMAGES} annotated validation images spread over the bone ages, on the RUS-CHN model's input; "
              f"`{_relative(m['sheets'][1])}`: the model's own boxes (from its detected keypoints) on the same images.", "",
              "## Time per image", "",
              f"File -> months (`Predictor.prepare` + `predict`, no hand check, one image at a time, {args.threads} threads), "
              f"median over {m['n_timed']} rsna-512px-samples after one warm-up, both models in this run.", "",
              "| model | median s / image |", "|---|---:|",
              f"| RUS-CHN | {m['timing']['rus']:.3f} |", f"| default | {m['timing']['default']:.3f} |",
              f"| ratio RUS-CHN / default | {ratio:.2f} |", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not RSNA.exists():
        print(f"real data not found at {SHARED}", file=sys.stderr)
        return 2
    import torch

    from boneage.errors import ModelLoadError
    from boneage.models import load_model

    torch.set_num_threads(args.threads)
    try:
        rus = load_model(args.model)
    except ModelLoadError as err:
        print(f"{err}\ngive the RUS-CHN model's folder with --model PATH", file=sys.stderr)
        return 2
    default = load_model(None)
    text = report(args, rus, default, measure(args, rus, default))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
