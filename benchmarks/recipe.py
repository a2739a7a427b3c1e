"""The default model's recipe, one step at a time, in one command:

    python benchmarks/recipe.py [--base runs/default-model/stage1/ensemble] [--out runs/recipe] [--epochs 6]
                                [--arms ...] [--threads N] [--train-only]

* **Arms** (trained or reused under ``--out``): each fine-tunes member 0 of ``--base``, stage 1 of
  ``scripts/train_default_model.sh`` (two half-width ResNet-18s trained 45 epochs: the shipped default),
  for ``--epochs`` more epochs at the same budget, split and preprocessing (hand cropped and masked), AdamW at
  5e-4 with a half-epoch warmup and a cosine decay; one seed (0). They differ in one thing each, against the arm before: ``continue`` (nothing new: the effect of more
  epochs alone), ``sex-head`` (a sex head trained with the bone age, 0.1 x its cross-entropy), ``sex-weight``
  (the same head at 1.0 x), ``acquisition`` (+ resampling, blur, noise
  and JPEG augmentations), ``mixup`` (sex head + mixup of same-sex images, alpha 0.4) and ``distill`` (sex head +
  the stage-1 ensemble as a teacher, weight 0.5).
* **Measured** for stage 1, its members, each arm and the shipped default (stage 2 of the script: both members
  fine-tuned with the recipe chosen here) on the 1,158 validation images (exported float16
  weights, flip TTA, no hand check): MAE, bias, the MAE per age group, the MAE change on degraded copies
  (noise 0.05, JPEG quality 20, 50 px nearest), and for a model with a sex head its accuracy, AUC and the bone age
  MAE when the sex is not given.
* **Test-time views and ensemble size** of the shipped default: no flip vs flip, one member vs two.

The arms recorded in ``benchmarks/results/recipe.md`` were trained while stage 1 was the shipped default (their
recipes say ``--init default``); the same runs are made from ``--base``.

Measurements are cached in ``--out/measured.json`` (by model folder and its weights' time). The table is written
to ``--table`` when every arm is measured. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from _runs import PreparedImages, train_or_reuse  # benchmarks/ is on sys.path when a script in it runs
from rus_chn import SHARED, validation_samples

SEX = {"sex_head": True}
ACQUISITION = {"resample": 0.3, "blur": 0.8, "noise": 0.03, "jpeg": 0.2}
# label: (what changes, model options, augmentation, other recipe fields)
ARMS = {
    "continue": ("more epochs only", {}, {}, {}),
    "sex-head": ("+ a sex head", SEX, {}, {}),
    "sex-weight": ("+ a sex head weighted 1.0 (instead of 0.1)", {**SEX, "sex_weight": 1.0}, {}, {}),
    "acquisition": ("+ sex head, acquisition augmentations", SEX, ACQUISITION, {}),
    "mixup": ("+ sex head, mixup (alpha 0.4)", SEX, {}, {"mixup": 0.4}),
    "distill": ("+ sex head, the stage-1 ensemble as teacher (weight 0.5)", SEX, {}, {"teacher": "BASE", "distill_weight": 0.5}),
}
DEGRADATIONS = ("noise:0.05", "jpeg:20", "resample:50:nearest")


# ------------------------------------------------------------------------------------------------ training
def fine_tune_recipe(out: Path, base: str, epochs: int, threads: int | None, cache: str, member: int = 0,
                     model_options=None, augment=None, seed: int = 0, **fields):
    """Member ``member`` of the ``base`` ensemble fine-tuned for ``epochs`` more epochs: the arms' recipe."""
    from boneage.preprocess import AugmentConfig, PreprocessConfig
    from boneage.training import TrainConfig

    rsna = SHARED / "rsna-100px"
    return TrainConfig(
        out_dir=str(out), images=str(rsna / "images"), labels=str(rsna / "boneage-training-dataset.csv"),
        split_file=str(Path(base) / "split.json"), cache_dir=cache, model="global_resnet18", head="ordinal",
        width=0.5, model_kwargs={"max_pool": False, **(model_options or {})},
        preprocess=PreprocessConfig(image_size=(100, 100), hand="crop_mask", contrast="hand"),
        augment=dataclasses.replace(AugmentConfig(), **(augment or {})), init=[base], init_member=member,
        epochs=epochs, lr=5e-4, warmup_epochs=0.5, seed=seed, threads=threads, progress=False, **fields,
    )


def train_arms(args) -> dict[str, dict]:
    out = Path(args.out)
    configs = {}
    for label in args.arms:
        _, options, augment, fields = ARMS[label]

        def recipe(label=label, options=options, augment=augment, fields=fields):
            fields = {k: args.base if v == "BASE" else v for k, v in fields.items()}
            return fine_tune_recipe(out / label, args.base, args.epochs, args.threads, args.cache, model_options=options,
                                    augment=augment, **fields)

        configs[label] = train_or_reuse(out / label, recipe, label)
    return configs


# ---------------------------------------------------------------------------------------------- measuring
def measure(model_dir, images: PreparedImages, tta: str | None = None) -> dict:
    """The model on the validation samples: its metrics (sex prediction included), the MAE change per degradation."""
    from boneage.evaluation import compute_metrics, sex_metrics
    from boneage.inference import Predictor

    predictor = Predictor(model_dir, check_hand=False)
    if tta is not None:
        predictor.tta = tta
    results, truth, sexes = images.run(predictor)
    metrics = compute_metrics(results.months, truth, sexes)
    if results.sex_probability is not None:
        unknown, _, _ = images.run(predictor, sexes_known=False)
        metrics["sex_prediction"] = sex_metrics(results.sex_probability, sexes, unknown.months, truth)
    degraded = {}
    for spec in DEGRADATIONS:
        degraded_results, degraded_truth, _ = images.run(predictor, spec)
        degraded[spec] = round(compute_metrics(degraded_results.months, degraded_truth)["mae_months"] - metrics["mae_months"], 3)
    return {"metrics": metrics, "degraded": degraded}


def cached_measure(cache: dict, key: str, model_dir: Path, images: PreparedImages, **options) -> dict:
    weights = Path(model_dir) / "model.safetensors"
    stamp = f"{key}@{weights.stat().st_mtime:.0f}"
    if stamp not in cache:
        started = time.time()
        cache[stamp] = measure(model_dir, images, **options)
        print(f"measured {key}: {time.time() - started:.0f} s", flush=True)
    return cache[stamp]


# ------------------------------------------------------------------------------------------------- tables
def _sex_cells(metrics: dict) -> str:
    sex = metrics.get("sex_prediction")
    if not sex:
        return "- | - | -"
    return f"{100 * sex['accuracy']:.1f} % | {sex['auc']:.2f} | {sex['mae_months_sex_unknown']:.2f}"


def arm_row(text: str, result: dict) -> str:
    m = result["metrics"]
    degraded = " | ".join(f"{result['degraded'][d]:+.2f}" for d in result["degraded"])
    groups = " / ".join(f"{v:.1f}" for v in m["mae_by_age_group"].values())
    return f"| {text} | {m['mae_months']:.2f} | {m['mean_error_months']:+.2f} | {groups} | {degraded} | {_sex_cells(m)} |"


def markdown(args, arms: dict, configs: dict, measured: dict, elapsed: float) -> str:
    command = "python benchmarks/recipe.py " + " ".join(shlex.quote(a) for a in (args.argv or []))
    degradation_heads = " | ".join(f"{d}" for d in DEGRADATIONS)
    stage1, shipped = measured["stage1"], measured["shipped"]
    majority = 100 * max(stage1["metrics"]["n_by_sex"].values()) / stage1["metrics"]["n"]
    lines = ["# The default model's recipe, step by step", "",
             f"Command: `{command.strip()}`  ",
             f"{dt.date.today().isoformat()}; {elapsed / 60:.0f} min in this invocation (reused runs and cached "
             "measurements count as 0).  ",
             f"Budget: every arm fine-tunes member 0 of stage 1 (`{args.base}`: the shipped default, two "
             f"half-width ResNet-18s with the ordinal head trained 45 epochs) for **{args.epochs} more epochs**, AdamW 5e-4, "
             "cosine, EMA, seed 0, on its split and preprocessing. Stage 2 fine-tunes both members for 12 epochs with the "
             "`acquisition` recipe at stronger settings (resampling p 0.3, blur up to 1 px, noise up to SD 0.06, JPEG p 0.3). "
             "Validation split: its 1,158 images, exported float16 weights, flip TTA, no hand check. "
             "MAE and bias in months; the MAE per age group (0-3 / 4-7 / 8-11 / 12-15 / 16-19 years); the MAE change on "
             "degraded copies (`boneage.preprocess.degrade`, applied to the file's pixels before the preprocessing); the "
             f"sex predicted from the image (accuracy, AUC; always answering the commoner sex scores {majority:.1f} %) and "
             "the bone age MAE when the sex is not given.", "",
             "## Arms", "",
             f"| arm | MAE | bias | MAE by age group | {degradation_heads} | sex accuracy | sex AUC | MAE, sex not given |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
             arm_row("stage 1: the shipped default (2 members, 45 epochs)", stage1),
             arm_row("stage-1 member 0 alone", measured["stage1-member0"])]
    for label, result in arms.items():
        recipe = configs[label]["training"]["recipe"]
        lines.append(arm_row(f"`{label}`: {ARMS[label][0]} ({recipe['epochs']} epochs)", result))
    recipe = measured["shipped-config"]["members"][0]["training"]["recipe"]
    lines.append(arm_row(f"**stage 2** (`robust`): both members + sex head + acquisition augmentations "
                         f"({recipe['epochs']} epochs)", shipped))
    lines += ["", "## Test-time views and ensemble size", "", "| model | views | MAE | bias |", "|---|---|---:|---:|"]
    for key, label, views_text in (("stage1-noflip", "stage 1, 2 members", "one (no flip)"),
                                   ("stage1", "stage 1, 2 members", "image and its mirror"),
                                   ("stage1-member0", "stage 1, member 0", "image and its mirror"),
                                   ("stage1-member1", "stage 1, member 1", "image and its mirror"),
                                   ("shipped-noflip", "stage 2, 2 members", "one (no flip)"),
                                   ("shipped", "stage 2, 2 members", "image and its mirror"),
                                   ("shipped-member0", "stage 2, member 0", "image and its mirror"),
                                   ("shipped-member1", "stage 2, member 1", "image and its mirror")):
        m = measured[key]["metrics"]
        lines.append(f"| {label} | {views_text} | {m['mae_months']:.2f} | {m['mean_error_months']:+.2f} |")
    return "\n".join(lines) + "\n"


def member_folder(source: Path, k: int, folder: Path) -> Path:
    """Member ``k`` of the ensemble ``source`` as a model folder of its own (for measuring it alone)."""
    import copy

    from boneage.models import export_model, load_model

    if not (folder / "model.safetensors").exists() or folder.stat().st_mtime < (source / "model.safetensors").stat().st_mtime:
        loaded = load_model(source)
        config = copy.deepcopy(loaded.config)
        config["model"] = config["model"]["kwargs"]["members"][k]
        config["name"] = f"{config['name']}-member{k}"
        config["members"] = [config["members"][k]]
        config.pop("calibration", None)  # fitted to the ensemble's spread
        export_model(folder, loaded.model.members[k], config)
    return folder


def measure_all(args, samples, cache: dict) -> tuple[dict, dict]:
    """Stage 1, the shipped default (each with its members and without the flip) and the arms."""
    from boneage.models import load_model

    out, measured = Path(args.out), {}
    for key, source in (("stage1", Path(args.base)), ("shipped", Path(args.stage2))):
        measured[key] = cached_measure(cache, key, source, samples)
        measured[f"{key}-noflip"] = cached_measure(cache, f"{key}-noflip", source, samples, tta="none")
        for k in (0, 1):
            folder = member_folder(source, k, out / "members" / f"{key}-member{k}")
            measured[f"{key}-member{k}"] = cached_measure(cache, f"{key}-member{k}", folder, samples)
    measured["shipped-config"] = load_model(args.stage2).config
    arms = {label: cached_measure(cache, label, out / label / "model", samples) for label in args.arms}
    return measured, arms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="runs/default-model/stage1/ensemble",
                        help="stage 1 of scripts/train_default_model.sh, the model the arms fine-tune")
    parser.add_argument("--stage2", default="runs/default-model/stage2/ensemble",
                        help="stage 2 of scripts/train_default_model.sh (both members fine-tuned with the chosen recipe)")
    parser.add_argument("--out", default="runs/recipe", help="where runs are written (and reused)")
    parser.add_argument("--cache", default="runs/cache", help="decoded images, shared between runs")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(ARMS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train-only", action="store_true", help="train the arms and stop (run several in parallel)")
    parser.add_argument("--table", default="benchmarks/results/recipe.md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not (SHARED / "rsna-100px").is_dir() or not (Path(args.base) / "model.safetensors").exists():
        print(f"{SHARED}/rsna-100px or the stage-1 model {args.base} missing (scripts/train_default_model.sh makes it); "
              "nothing to benchmark", file=sys.stderr)
        return 2
    started = time.time()
    configs = train_arms(args)
    if args.train_only:
        return 0
    cache_path = Path(args.out) / "measured.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    try:
        measured, arms = measure_all(args, PreparedImages(validation_samples(None)), cache)
    finally:
        cache_path.write_text(json.dumps(cache, indent=1))
    text = markdown(args, arms, configs, measured, time.time() - started)
    print(text)
    Path(args.table).write_text(text)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
