"""Calibrated intervals for a model's bone age: split conformal prediction on held-out residuals.

A model's interval should cover the reference bone age as often as it says. The spread across an
ensemble's members does not do that (it measures how much the members disagree, a fraction of a month,
against an error of about 8 months), so the interval is calibrated on validation images the model was
not trained on:

* the score of a calibration image is its absolute residual ``|y - y_hat|`` in months (or, with
  ``use_sd``, the residual divided by the member SD plus a floor: a normalised score, for a model whose
  spread is informative);
* for a level ``1 - alpha`` the half-width is the conformal quantile of the ``n`` scores: the
  ``ceil((n + 1)(1 - alpha))``-th smallest, i.e. the empirical quantile at ``ceil((n + 1)(1 - alpha)) / n``;
  for exchangeable data the interval ``y_hat +/- q`` then covers a new image's reference bone age with
  probability at least ``1 - alpha`` (split conformal prediction, Vovk et al. 2005; Lei et al. 2018);
* Mondrian: the quantile is taken per group of the *predicted* bone age (0-4, 4-8, 8-12, 12-16, 16-19
  years) crossed with sex, so that the guarantee holds within each group (errors differ by age). A group
  with fewer than ``min_group_n`` calibration images (:data:`MIN_GROUP_N`) falls back to its age group
  alone, then to all images.

:func:`fit_calibration` gives a JSON-able dict that travels with the model in its ``config.json``
(``"calibration"``, written by :func:`calibrate_model`, the job of ``boneage calibrate``);
:func:`calibrated_interval` turns a bone age, sex and member SD into ``(low, high)`` with it, clipped to
the model's label range.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import numpy as np

from ..data import Sample
from ..errors import DatasetError, InvalidInputError, ModelLoadError
from ..inference import Predictor
from .evaluate import predict_samples
from .metrics import AGE_GROUPS_YEARS, age_group

__all__ = [
    "BINS_YEARS",
    "DEFAULT_LEVEL",
    "GROUPINGS",
    "MIN_GROUP_N",
    "calibrate_model",
    "calibrated_interval",
    "calibration_of",
    "conformal_quantile",
    "coverage_table",
    "cross_fitted_intervals",
    "describe_calibration",
    "fit_calibration",
    "intervals",
    "min_points",
    "prediction_bin",
    "predict_with_spread",
    "spread_informativeness",
]

DEFAULT_LEVEL = 0.95
# groups of the predicted bone age, in years: [low, high), the last one open above
BINS_YEARS = (("0-4", 0, 4), ("4-8", 4, 8), ("8-12", 8, 12), ("12-16", 12, 16), ("16-19", 16, 19))
# fewest calibration images a group needs for a quantile of its own (at 95% a group needs 19 for a finite
# quantile at all; below 39 the 95% quantile is the group's largest residual, so 30 is a compromise between
# conditioning on the group and the noise of a quantile taken from few images)
MIN_GROUP_N = 30
GROUPINGS = {
    "age_sex": "predicted bone age group x sex",
    "age": "predicted bone age group",
    "none": "one quantile for all images",
}
SEXES = ("M", "F")
_EPS = 1e-9


# ------------------------------------------------------------------------------------------- fitting
def min_points(level: float) -> int:
    """The fewest scores whose conformal quantile at ``level`` is finite (19 at 0.95)."""
    n = 1
    while math.ceil((n + 1) * level - _EPS) > n:
        n += 1
    return n


def conformal_quantile(scores, level: float) -> float:
    """The split-conformal quantile of ``scores``: the ``ceil((n + 1) * level)``-th smallest (inf when that
    exceeds ``n``)."""
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    k = math.ceil((values.size + 1) * level - _EPS)
    return float(values[k - 1]) if 1 <= k <= values.size else math.inf


def prediction_bin(months: float, bins=BINS_YEARS) -> str:
    """The name of the group a (predicted) bone age falls in; below 0 the first, above the last the last."""
    years = float(months) / 12.0
    for name, _, high in bins[:-1]:
        if years < high:
            return name
    return bins[-1][0]


def _arrays(predicted, true, sexes, sd):
    p = np.asarray(predicted, dtype=np.float64).ravel()
    y = np.asarray(true, dtype=np.float64).ravel()
    s = np.asarray(sexes).astype(str).ravel()
    spread = None if sd is None else np.asarray(sd, dtype=np.float64).ravel()
    if not (p.size == y.size == s.size) or (spread is not None and spread.size != p.size):
        raise InvalidInputError("predicted, true, sexes (and sd) must have the same length")
    if not (np.isfinite(p).all() and np.isfinite(y).all()) or (spread is not None and not np.isfinite(spread).all()):
        raise InvalidInputError("calibration values must be finite numbers")
    return p, y, s, spread


def _entry(scores: np.ndarray, level: float) -> dict:
    return {"n": int(scores.size), "quantile": round(conformal_quantile(scores, level), 4)}


def fit_calibration(predicted, true, sexes, sd=None, *, level: float = DEFAULT_LEVEL, grouping: str = "age_sex",
                    use_sd: bool = False, min_group_n: int = MIN_GROUP_N, label_range=(0.0, 228.0),
                    bins=BINS_YEARS) -> dict:
    """Fit a conformal calibration on held-out (predicted, true, sex, member SD) -> a JSON-able dict.

    ``grouping``: ``'age_sex'`` (Mondrian by predicted bone age group x sex, the default), ``'age'`` or
    ``'none'`` (one global quantile). A (group, sex) with fewer than ``min_group_n`` images uses its age
    group's quantile, and an age group with fewer uses the quantile of all images (``groups[key]['pooled_from']``
    says which). ``use_sd`` normalises the scores by ``sd + floor`` (floor: the median SD). The dict holds
    method, level, bins, the per-group quantile and n, and the label range the intervals are clipped to.
    """
    if grouping not in GROUPINGS:
        raise InvalidInputError(f"grouping must be one of {sorted(GROUPINGS)}, got {grouping!r}")
    if not 0.0 < level < 1.0:
        raise InvalidInputError(f"level must be between 0 and 1, got {level!r}")
    p, y, s, spread = _arrays(predicted, true, sexes, sd)
    if p.size < min_points(level):
        raise InvalidInputError(f"{p.size} calibration images are too few for a {level:.0%} interval "
                                f"(at least {min_points(level)})")
    if use_sd and spread is None:
        raise InvalidInputError("use_sd needs the member SD of every calibration image (an ensemble model)")
    floor = max(float(np.median(spread)), 0.01) if use_sd else None
    scores = np.abs(y - p) / (spread + floor) if use_sd else np.abs(y - p)
    names = np.array([prediction_bin(v, bins) for v in p])
    min_n = max(int(min_group_n), min_points(level))
    pooled = {"all": _entry(scores, level)}
    pooled.update({name: _entry(scores[names == name], level) for name, _, _ in bins})
    groups = {}
    for name, _, _ in bins:
        for sex in SEXES:
            own = (names == name) & (s == sex)
            if grouping == "age_sex" and own.sum() >= min_n:
                groups[f"{name}/{sex}"] = {**_entry(scores[own], level), "pooled_from": f"{name}/{sex}"}
                continue
            source = name if grouping != "none" and pooled[name]["n"] >= min_n else "all"
            groups[f"{name}/{sex}"] = {**pooled[source], "n_own": int(own.sum()), "pooled_from": source}
    score = "|y - y_hat| / (member SD + floor)" if use_sd else "|y - y_hat| (months)"
    return {
        "method": f"split conformal prediction, Mondrian by {GROUPINGS[grouping]}",
        "grouping": grouping,
        "score": score,
        "level": float(level),
        "quantile_rank": "ceil((n + 1) * level)-th smallest score of the group",
        "bins_years": [[name, low, high] for name, low, high in bins],
        "min_group_n": min_n,
        "sd_floor_months": None if floor is None else round(floor, 4),
        "label_range_months": [float(label_range[0]), float(label_range[1])],
        "n": int(p.size),
        "groups": groups,
        "bins": {name: pooled[name] for name, _, _ in bins},
        "all": pooled["all"],
    }


# ------------------------------------------------------------------------------------------ using it
def calibration_of(config: dict, source: str = "model") -> dict | None:
    """The ``calibration`` of a model config, checked (None when the model has none); a malformed one is a
    one-line :class:`ModelLoadError`."""
    calibration = config.get("calibration") if isinstance(config, dict) else None
    if calibration is None:
        return None
    try:
        level = float(calibration["level"])
        low, high = (float(v) for v in calibration["label_range_months"])
        quantiles = [float(g["quantile"]) for g in calibration["groups"].values()]
        quantiles.append(float(calibration["all"]["quantile"]))
        edges = [float(hi) - float(lo) for _, lo, hi in calibration["bins_years"]]
        floor = calibration.get("sd_floor_months")
        ok = 0 < level < 1 and low < high and bool(edges) and all(q >= 0 and math.isfinite(q) for q in quantiles)
        ok = ok and (floor is None or float(floor) > 0)
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ModelLoadError(f"{source}: the model's calibration in config.json is malformed; run 'boneage calibrate' again")
    return calibration


def _half_width(calibration: dict, bone_age: float, sex: str | None, sd: float | None) -> float:
    bins = [tuple(b) for b in calibration["bins_years"]]
    name = prediction_bin(bone_age, bins)
    entry = calibration["groups"].get(f"{name}/{sex}") or calibration["bins"].get(name) or calibration["all"]
    quantile = float(entry["quantile"])
    floor = calibration.get("sd_floor_months")
    if floor is None:
        return quantile
    if sd is None or not math.isfinite(float(sd)):
        raise InvalidInputError("this calibration scales the interval by the ensemble SD, which the model did not give")
    return quantile * (float(sd) + float(floor))


def calibrated_interval(bone_age: float, sex: str | None, sd: float | None, calibration: dict) -> tuple[float, float]:
    """``(low, high)`` in months: the bone age +/- its group's calibrated half-width, clipped to the
    model's label range."""
    half = _half_width(calibration, bone_age, sex, sd)
    low, high = (float(v) for v in calibration["label_range_months"])
    return float(np.clip(bone_age - half, low, high)), float(np.clip(bone_age + half, low, high))


def intervals(calibration: dict, predicted, sexes, sd=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`calibrated_interval` for arrays -> ``(low, high)`` arrays."""
    p = np.asarray(predicted, dtype=np.float64).ravel()
    s = np.asarray(sexes).astype(str).ravel()
    pairs = [calibrated_interval(v, x, None if sd is None else float(sd[i]), calibration)
             for i, (v, x) in enumerate(zip(p, s))]
    bounds = np.array(pairs, dtype=np.float64).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


def describe_calibration(calibration: dict) -> str:
    """One sentence for a reader: what the interval is, the data it was fitted on, its measured coverage."""
    fitted = calibration.get("fitted_on") or {}
    held_out = ((calibration.get("coverage") or {}).get("held_out") or {})
    overall = (held_out.get("groups") or {}).get("all") or {}
    text = (f"The {calibration['level']:.0%} interval is calibrated on the model's errors against reference bone ages "
            f"({calibration['method']}), fitted on {calibration['n']} held-out validation images")
    if fitted.get("description"):
        text += f" ({fitted['description']})"
    if overall.get("coverage") is not None:
        text += (f"; on images not used for its calibration it covered {overall['coverage']:.1%} of reference bone "
                 f"ages ({held_out.get('folds')}-fold cross-fitting, mean width {overall['mean_width_months']:.1f} months)")
    return text + ". It holds for images like those, not for every image."


# ----------------------------------------------------------------------------------------- measuring
def cross_fitted_intervals(predicted, true, sexes, sd=None, *, folds: int = 5, seed: int = 0,
                           **fit_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Intervals for every image from a calibration fitted on the other folds (seeded random folds), so
    that coverage is measured on images not used for that calibration. ``fit_kwargs`` go to
    :func:`fit_calibration`."""
    p, y, s, spread = _arrays(predicted, true, sexes, sd)
    if folds < 2 or folds > p.size:
        raise InvalidInputError(f"folds must be between 2 and the number of images, got {folds}")
    fold_of = np.empty(p.size, dtype=int)
    fold_of[np.random.default_rng(seed).permutation(p.size)] = np.arange(p.size) % folds
    low, high = np.empty(p.size), np.empty(p.size)
    for k in range(folds):
        held, fit = fold_of == k, fold_of != k
        calibration = fit_calibration(p[fit], y[fit], s[fit], None if spread is None else spread[fit], **fit_kwargs)
        low[held], high[held] = intervals(calibration, p[held], s[held], None if spread is None else spread[held])
    return low, high


def _cell(covered: np.ndarray, width: np.ndarray) -> dict:
    if not covered.size:
        return {"n": 0, "coverage": None, "mean_width_months": None}
    return {"n": int(covered.size), "coverage": round(float(covered.mean()), 4),
            "mean_width_months": round(float(width.mean()), 2)}


def coverage_table(true, low, high, sexes) -> dict:
    """Coverage (share of reference bone ages inside ``[low, high]``) and mean width, for all images, per
    group of reference bone age (0-3, 4-7, 8-11, 12-15, 16-19 years) and per sex."""
    y = np.asarray(true, dtype=np.float64).ravel()
    low, high = np.asarray(low, dtype=np.float64).ravel(), np.asarray(high, dtype=np.float64).ravel()
    s = np.asarray(sexes).astype(str).ravel()
    covered, width = (low <= y) & (y <= high), high - low
    groups = np.array([age_group(v) for v in y])
    table = {"all": _cell(covered, width)}
    table.update({name: _cell(covered[groups == name], width[groups == name]) for name, _, _ in AGE_GROUPS_YEARS})
    table.update({sex: _cell(covered[s == sex], width[s == sex]) for sex in SEXES})
    return table


def spread_informativeness(predicted, true, sd) -> dict:
    """Whether the member SD says anything about the error: Spearman's rho between the SD and the absolute
    residual, over all images and within each predicted bone age group (the error depends on age)."""
    from scipy.stats import spearmanr

    p, y, _, spread = _arrays(predicted, true, np.full(np.size(predicted), "M"), sd)
    residual = np.abs(y - p)
    rho, p_value = spearmanr(spread, residual)
    names = np.array([prediction_bin(v) for v in p])
    within = {}
    for name, _, _ in BINS_YEARS:
        mask = names == name
        within[name] = round(float(spearmanr(spread[mask], residual[mask])[0]), 3) if mask.sum() >= 10 else None
    return {"spearman_rho": round(float(rho), 3), "p_value": float(f"{p_value:.2g}"), "rho_within_age_groups": within,
            "median_sd_months": round(float(np.median(spread)), 3), "mean_abs_error_months": round(float(residual.mean()), 3)}


# ------------------------------------------------------------------------------------ the model's job
def predict_with_spread(predictor: Predictor, samples: list[Sample], *, batch_size: int = 64,
                        progress: bool = False) -> tuple[list[Sample], np.ndarray, np.ndarray | None, list[dict]]:
    """Every sample through the model's own preprocessing -> ``(used samples, months, member SD or None,
    skipped)`` in float64 (:func:`~boneage.evaluation.evaluate.predict_samples`)."""
    used, months, sd, skipped = predict_samples(predictor, samples, batch_size=batch_size, progress=progress,
                                                what="assessed", desc="calibrating")
    return used, months.astype(np.float64), None if sd is None else sd.astype(np.float64), skipped


def _model_folder(model) -> Path:
    from ..models import default_model_path

    path = default_model_path() if model is None or str(model) == "default" else Path(model)
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").exists() or (path.is_file() and path.suffix != ".safetensors"):
        raise InvalidInputError(f"{model}: calibrate needs an exported model folder (model.safetensors + config.json)")
    return folder


def _validation_samples(images, labels, split_file, folder: Path) -> tuple[list[Sample], Path]:
    from ..data import apply_split, load_rsna, load_split

    split_path = Path(split_file) if split_file else folder / "split.json"
    if not split_path.exists():
        raise InvalidInputError(f"{split_path}: no split file; give --split-file with the model's held-out ids "
                                "(calibrating on training images would understate the error)")
    samples = load_rsna(images, labels)
    _, val = apply_split(samples, load_split(split_path))
    if not val:
        raise DatasetError(f"{split_path}: the split holds no validation ids")
    return val, split_path


def calibrate_model(model=None, images=None, labels=None, *, split_file=None, level: float = DEFAULT_LEVEL,
                    folds: int = 5, seed: int = 0, use_sd: bool = False, grouping: str = "age_sex",
                    batch_size: int = 64, threads: int | None = None, progress: bool = False,
                    write: bool = True) -> dict:
    """The job of ``boneage calibrate``: assess every held-out image of ``model`` (a folder; None: the
    shipped one) with its own preprocessing (no hand check), fit :func:`fit_calibration` on all of them,
    measure its coverage on images not used for it (``folds``-fold cross-fitting, ``seed``), and with
    ``write`` store it in the model's ``config.json`` under ``"calibration"``. Returns the calibration."""
    from ..models import write_model_config

    folder = _model_folder(model)
    samples, split_path = _validation_samples(images, labels, split_file, folder)
    predictor = Predictor(folder, threads=threads, check_hand=False)
    used, months, sd, skipped = predict_with_spread(predictor, samples, batch_size=batch_size, progress=progress)
    true, sexes = [s.bone_age_months for s in used], [s.sex for s in used]
    labels_range = predictor.loaded.config.get("labels") or {}
    fit = {"level": level, "grouping": grouping, "use_sd": use_sd,
           "label_range": (float(labels_range.get("min", 0.0)), float(labels_range.get("max", 228.0)))}
    calibration = fit_calibration(months, true, sexes, sd, **fit)
    low, high = cross_fitted_intervals(months, true, sexes, sd, folds=folds, seed=seed, **fit)
    in_low, in_high = intervals(calibration, months, sexes, sd)
    calibration["coverage"] = {
        "held_out": {"folds": folds, "seed": seed, "groups": coverage_table(true, low, high, sexes)},
        "in_sample": {"groups": coverage_table(true, in_low, in_high, sexes)},
    }
    calibration["ensemble_sd"] = {**spread_informativeness(months, true, sd), "used": bool(use_sd)} if sd is not None else None
    calibration["fitted_on"] = {
        "images": str(images), "labels": str(labels), "split": f"{split_path.name}: its {len(samples)} validation ids",
        "n": len(used), "n_skipped": len(skipped), "model_version": predictor.loaded.version,
        "preprocessing": "the model's own, every image assessed (no hand check)",
        "description": f"{Path(str(images)).parent.name or Path(str(images)).name}, the model's validation split",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if write:
        config = json.loads((folder / "config.json").read_text())
        for key in ("format", "format_version", "weights_dtype"):
            config.pop(key, None)
        config["calibration"] = calibration
        write_model_config(folder, config)
    return calibration
