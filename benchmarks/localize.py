"""Localize-then-regress (Do et al.) measured in one command, as the paper's Table 1 compares it:

    python benchmarks/localize.py [--out runs/localize] [--epochs 6] [--arms ...] [--threads N] [--limit N]
                                  [--shipped MODEL]

* **Training** (reused when finished under ``--out``): step 1, the age-group localizer (``out/localizer``,
  what ``scripts/train_localize.sh`` trains first), then one regressor per arm on its crops under
  ``out/arms/``, every one at the same budget (``--epochs``, default 6 = ALA-Net's Table-1 budget) on the
  default model's split and preprocessing: gamma 0.5 with sex, the whole image (gamma 0), gamma 0.25 and 0.75,
  without sex (gamma 0.5 and whole image), and gamma 0.5 started from the global default model (``--init`` the
  localizer, then member 0 of the default model: the regressor's backbone, sex branch, first fully connected
  layer).
* **Table 1 and the gamma sweep**: validation MAE / RMSE (months, the 1,158 images of the default model's
  split, exported float16 weights with flip TTA, as each run's config records it) and the mean crop area at
  each gamma, with the global default model and the shipped localize model (``--shipped``, default the
  installed ``localize``, trained longer by ``scripts/train_localize.sh``) on the same images.
* **Crop source**: the shipped model on the 40 rsna-512px-samples given the hand at 512 px (crops from 512
  px) and at 100 px (crops from 100 px), and the default model on them.
* **Tall phantoms** (900 x 3000 px, the hand's square the only age signal, reused from ``out/phantoms.json``,
  :func:`boneage.data.phantom.tall_phantom`): a localizer trained on them (at 0.3 scale, 256 x 80 px input),
  then on new full-size phantoms the IoU of the thresholded mask's box and of the crop (the part of the image
  it covers) with the hand's band, and how often the crop is centred in the band, at several gammas.
* **Time per image**, file -> months (no hand check; median over the 40 samples), of the shipped model and the
  default model in the same run.
* ``docs/localize-evidence.png``: what ``predict --explain`` draws for one of the 512 px samples.

The table is written to ``--table``. Needs ../shared/data. ``--limit N`` uses N validation images for the
crop areas (quick checks).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from _runs import train_or_reuse  # benchmarks/ is on sys.path when a script in it runs
from rus_chn import SAMPLES_512, SHARED, model_images, time_per_image, validation_samples

# label: (gamma, sex_features, init from the global default model)
ARMS = {"gamma-0.5": (0.5, 32, False), "whole": (0.0, 32, False), "gamma-0.25": (0.25, 32, False),
        "gamma-0.75": (0.75, 32, False), "no-sex": (0.5, 0, False), "whole-no-sex": (0.0, 0, False),
        "init-global": (0.5, 32, True)}
GAMMAS = (0.0, 0.25, 0.5, 0.75)


# ------------------------------------------------------------------------------------------------ training
def _recipe(out: Path, args, phase: str, **options):
    from boneage.models import default_model_path
    from boneage.preprocess import PreprocessConfig
    from boneage.training import TrainConfig

    rsna = SHARED / "rsna-100px"
    return TrainConfig(
        out_dir=str(out), images=str(rsna / "images"), labels=str(rsna / "boneage-training-dataset.csv"),
        split_file=str(default_model_path() / "split.json"), cache_dir=args.cache, model="localize_regress",
        head="mse", width=0.5, model_kwargs={"max_pool": False, "phase": phase, **options},
        preprocess=PreprocessConfig(image_size=(100, 100), hand="crop_mask", contrast="hand"),
        epochs=args.epochs, threads=args.threads, progress=False,
    )


def train_arms(args) -> dict[str, dict]:
    """The localizer and every requested arm (trained or reused) -> ``{label: exported config}``."""
    from boneage.models import default_model_path

    out = Path(args.out)
    localizer = train_or_reuse(out / "localizer", lambda: _recipe(out / "localizer", args, "localizer"), "localizer")
    configs = {"localizer": localizer}
    for label in args.arms:
        gamma, sex, init_global = ARMS[label]
        folder = out / "arms" / label
        init = [str(out / "localizer" / "model")] + ([str(default_model_path())] if init_global else [])

        def recipe(folder=folder, gamma=gamma, sex=sex, init=init):
            config = _recipe(folder, args, "regressor", gamma=gamma, sex_features=sex)
            return dataclasses.replace(config, init=init, init_member=0)

        configs[label] = train_or_reuse(folder, recipe, label)
    return configs


# ---------------------------------------------------------------------------------------------- measuring
def validation_localization(model_dir: Path, limit: int | None) -> tuple[float, dict[float, float]]:
    """On the validation images: the localizer's age-group accuracy, and the mean crop area (fraction of the model
    input) at each gamma."""
    import torch

    from boneage.models import load_model
    from boneage.preprocess import to_model_input

    loaded = load_model(model_dir)
    samples = validation_samples(limit)
    x = to_model_input(torch.from_numpy(model_images(loaded, samples)).float()[:, None] / 255.0, loaded.preprocess)
    with torch.inference_mode():
        predicted = torch.cat([loaded.model.localizer(x[s : s + 256]).argmax(1) for s in range(0, len(x), 256)])
    truth = torch.bucketize(torch.tensor([s.bone_age_months for s in samples]), loaded.model.bin_edges, right=True)
    areas = {}
    for gamma in GAMMAS:
        box = torch.cat([loaded.model.localize(x[s : s + 256], gamma)["crop_box"].clamp(0, 1) for s in range(0, len(x), 256)])
        areas[gamma] = float(((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).mean())
    return float((predicted == truth).float().mean()), areas


def crop_source(model_dir: Path) -> dict[str, float]:
    """MAE on the 40 rsna-512px-samples: the model given the hand at 512 px and at 100 px, and the default model."""
    import csv

    from boneage.inference import Predictor
    from boneage.models import LoadedModel, load_model

    with open(SAMPLES_512 / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    paths = [SAMPLES_512 / "images" / f"{row['id']}.png" for row in rows]
    sexes = ["M" if row["male"].strip().lower() in ("true", "1", "m") else "F" for row in rows]
    truth = np.array([float(row["boneage"]) for row in rows])
    loaded = load_model(model_dir)
    results = {}
    for label, size in (("crop from 512 px", [512, 512]), ("crop from 100 px", [100, 100])):
        config = {**loaded.config, "preprocess": {**loaded.config["preprocess"], "inference_size": size}}
        results[label] = _mae(Predictor(LoadedModel(loaded.model, config, loaded.source), check_hand=False), paths, sexes, truth)
    results["default model"] = _mae(Predictor(None, check_hand=False), paths, sexes, truth)
    return results


def evidence_figure(model_dir: Path, out: Path, image_id: str = "1437", male: bool = False) -> Path:
    """``predict --explain``'s picture for one of the 512 px samples: Grad-CAM, mask and crop on the radiograph."""
    from boneage.explain import display_image, explain_image, save_evidence
    from boneage.inference import Predictor
    from boneage.io import read_image

    predictor = Predictor(model_dir, check_hand=False)
    image = read_image(SAMPLES_512 / "images" / f"{image_id}.png")
    evidence = explain_image(predictor.loaded, predictor.prepare(image), float(male), display=display_image(image.pixels))
    return save_evidence(evidence, out)


def _mae(predictor, paths, sexes, truth) -> float:
    months, _ = predictor.predict([predictor.prepare(path) for path in paths], sexes)
    return float(np.abs(np.asarray(months) - truth).mean())


def tall_phantoms(seed: int = 0, train_n: int = 512, test_n: int = 24, steps: int = 400) -> dict[float, dict]:
    """Train a localizer on tall phantoms at 0.3 scale; IoU of its mask box and crop with the hand's square on
    new full-size (3000 x 900) phantoms, per gamma (mean, and the fraction with IoU >= 0.5)."""
    import torch

    from boneage.data.phantom import tall_phantom_dataset
    from boneage.models import create_model
    from boneage.models.detection import box_iou
    from boneage.models.localize import square_boxes, threshold_boxes

    torch.manual_seed(seed)
    images, ages, _, _ = tall_phantom_dataset(train_n, (900, 270), seed)
    x = (torch.from_numpy(images).float()[:, None] / 255.0 - 0.5) / 0.25
    months = torch.tensor(ages, dtype=torch.float32)
    model = create_model("localize_regress", phase="localizer", localizer_size=(256, 80), localizer_width=0.25, width=0.125)
    optimiser = torch.optim.AdamW(model.localizer.parameters(), 2e-3, weight_decay=0.01)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, train_n, (32,))
        loss = model.compute_loss(model(x[index], torch.zeros(32)), {"bone_age_months": months[index]})["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test, test_ages, _, boxes = tall_phantom_dataset(test_n, (3000, 900), seed + 1)
    found = model.localize((torch.from_numpy(test).float()[:, None] / 255.0 - 0.5) / 0.25)
    truth = torch.bucketize(torch.tensor(test_ages, dtype=torch.float32), model.bin_edges, right=True)
    scale = np.array([900, 3000, 900, 3000], dtype=np.float64)
    results = {"accuracy": float((found["age_group"] == truth).float().mean())}
    truth_boxes = torch.as_tensor(boxes, dtype=torch.float64)
    scale = torch.as_tensor(scale)
    for gamma in GAMMAS[1:]:
        mask = threshold_boxes(found["heat"], gamma).double()
        crop = square_boxes(mask, (3000, 900), 1.0, model.min_crop).clamp(0, 1) * scale  # the part of the image cropped
        iou_mask = torch.diag(box_iou(mask * scale, truth_boxes))
        iou_crop = torch.diag(box_iou(crop, truth_boxes))
        centre = (crop[:, 1] + crop[:, 3]) / 2
        results[gamma] = {"mask": float(iou_mask.mean()), "crop": float(iou_crop.mean()),
                          "in_band": float(((centre >= truth_boxes[:, 1]) & (centre < truth_boxes[:, 3])).double().mean()),
                          "area": float(((mask[:, 2] - mask[:, 0]) * (mask[:, 3] - mask[:, 1])).mean())}
    return results


def phantom_results(path: Path) -> dict:
    """:func:`tall_phantoms`, reused from ``path`` when a run wrote it (its training takes minutes)."""
    import json

    if path.exists():
        print(f"reusing {path}", flush=True)
        return {(float(k) if k[0].isdigit() else k): v for k, v in json.loads(path.read_text()).items()}
    results = tall_phantoms()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(k): v for k, v in results.items()}))
    return results


# ------------------------------------------------------------------------------------------------- tables
def _metrics(config: dict) -> tuple[float, float]:
    validation = config["metrics"]["validation"]
    return validation["mae_months"], validation["rmse_months"]


def markdown(configs: dict, default: dict, measured: dict, args, elapsed: float) -> str:
    command = "python benchmarks/localize.py " + " ".join(shlex.quote(a) for a in (args.argv or []))
    lines = ["# Localize-then-regress (Do et al.): crop vs whole image, sex, gamma, transfer", "",
             f"Command: `{command.strip()}`  ", f"{dt.date.today().isoformat()}; {elapsed / 60:.0f} min in this invocation "
             "(reused runs count as 0).  ",
             f"Budget: **{args.epochs} epochs** per step, one seed (0), the default model's split and preprocessing (hand "
             "cropped and masked); validation MAE / RMSE in months on its 1,158 images (exported float16 weights, flip TTA). "
             "Every regressor shares the same step-1 localizer.", ""]
    acc = measured.get("localizer_accuracy")
    if acc is not None:
        lines += [f"Step 1, the localizer (four age groups: 0-5, 5-10, 10-15, 15-19 years): validation accuracy "
                  f"{100 * acc:.1f} %; its expected group centre alone is {_metrics(configs['localizer'])[0]:.2f} months MAE.", ""]
    lines += ["## Table 1: crop vs whole image, with and without sex", "",
              "| input | sex | MAE | RMSE |", "|---|---|---:|---:|"]
    for label, text, sex in (("gamma-0.5", "crop, gamma 0.5", "yes"), ("no-sex", "crop, gamma 0.5", "no"),
                             ("whole", "whole image", "yes"), ("whole-no-sex", "whole image", "no")):
        if label in configs:
            lines.append(f"| {text} | {sex} | {_metrics(configs[label])[0]:.2f} | {_metrics(configs[label])[1]:.2f} |")
    lines.append(f"| global default model (2 x ResNet-18, 45 epochs) | yes | {default['mae_months']:.2f} | "
                 f"{default['rmse_months']:.2f} |")
    if "shipped" in configs:
        shipped = configs["shipped"]
        recipe = shipped["training"]["recipe"]
        lines.append(f"| shipped `--model localize` (crop, gamma {shipped['model']['kwargs'].get('gamma', 0.5):g}, "
                     f"{recipe['epochs']} epochs) | yes | {_metrics(shipped)[0]:.2f} | {_metrics(shipped)[1]:.2f} |")
    lines += ["", "## Gamma sweep (crop, with sex)", "", "| gamma | mean crop area (fraction of the hand image) | MAE | RMSE |",
              "|---:|---:|---:|---:|"]
    for gamma, label in zip(GAMMAS, ("whole", "gamma-0.25", "gamma-0.5", "gamma-0.75")):
        if label in configs:
            area = measured.get("areas", {}).get(gamma)
            area_text = "-" if area is None else f"{area:.2f}"
            lines.append(f"| {gamma:g} | {area_text} | {_metrics(configs[label])[0]:.2f} | {_metrics(configs[label])[1]:.2f} |")
    if "init-global" in configs and "gamma-0.5" in configs:
        lines += ["", "## Transfer: the regressor started from the global default model (gamma 0.5, sex)", "",
                  "| regressor | MAE | RMSE |", "|---|---:|---:|",
                  f"| from scratch | {_metrics(configs['gamma-0.5'])[0]:.2f} | {_metrics(configs['gamma-0.5'])[1]:.2f} |",
                  f"| --init the default model's member 0 | {_metrics(configs['init-global'])[0]:.2f} | "
                  f"{_metrics(configs['init-global'])[1]:.2f} |"]
    if "crop_source" in measured:
        source = measured["crop_source"]
        lines += ["", "## Crop source: the 40 rsna-512px-samples (39 of them are training images of both models)", "",
                  "| model | MAE |", "|---|---:|"] + [f"| {label} | {mae:.2f} |" for label, mae in source.items()]
    if "phantoms" in measured:
        ph = measured["phantoms"]
        lines += ["", "## Tall phantoms (3000 x 900 px, the hand's square the only age signal)", "",
                  f"Localizer trained on 512 phantoms at 900 x 270 px (input 256 x 80), tested on 24 new full-size "
                  f"ones: age-group accuracy {100 * ph['accuracy']:.0f} %.", "",
                  "The band is the hand's square, 900 px high and as wide as the image; the whole image's IoU with it is 0.30.", "",
                  "| gamma | mask box IoU | crop IoU | crops centred in the band | mask area (fraction) |", "|---:|---:|---:|---:|---:|"]
        for gamma in GAMMAS[1:]:
            r = ph[gamma]
            lines.append(f"| {gamma:g} | {r['mask']:.2f} | {r['crop']:.2f} | {100 * r['in_band']:.0f} % | {r['area']:.3f} |")
    if "speed" in measured:
        local, default_s = measured["speed"]
        lines += ["", "## Time per image, file -> months (no hand check, median over the 40 samples, same run)", "",
                  "| model | ms | ratio |", "|---|---:|---:|",
                  f"| localize-then-regress (crop from 100 px) | {1000 * local:.0f} | {local / default_s:.2f} |",
                  f"| global default model | {1000 * default_s:.0f} | 1.00 |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/localize", help="where runs are written (and reused)")
    parser.add_argument("--cache", default="runs/cache", help="decoded images, shared between runs")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(ARMS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train-only", action="store_true", help="train the arms and stop (runs in parallel processes)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--table", default="benchmarks/results/localize.md")
    parser.add_argument("--shipped", default=None, help="the localize model measured (default: the installed one)")
    parser.add_argument("--docs", default="docs", help="where docs/localize-evidence.png is written")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not (SHARED / "rsna-100px").is_dir():
        print(f"{SHARED}: rsna-100px missing; nothing to benchmark", file=sys.stderr)
        return 2
    started = time.time()
    configs = train_arms(args)
    if args.train_only:
        return 0
    from boneage.models import default_model_path, load_model, shipped_model_path

    shipped = Path(args.shipped) if args.shipped else shipped_model_path("localize")
    configs["shipped"] = load_model(shipped).config
    accuracy, areas = validation_localization(shipped, args.limit)
    measured = {"localizer_accuracy": accuracy, "areas": areas,
                "crop_source": crop_source(shipped), "phantoms": phantom_results(Path(args.out) / "phantoms.json"),
                "speed": (time_per_image(shipped, None), time_per_image(default_model_path(), None))}
    default = load_model(None).config["metrics"]["validation"]
    if args.limit is None:
        evidence_figure(shipped, Path(args.docs) / "localize-evidence.png")
    text = markdown(configs, default, measured, args, time.time() - started)
    print(text)
    if set(args.arms) == set(ARMS) and args.limit is None:
        Path(args.table).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
